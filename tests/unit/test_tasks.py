"""``cancel_and_wait``: a shutdown that ends also when a task lost its first cancellation."""

from __future__ import annotations

import asyncio

import pytest

from worker.tasks import cancel_and_wait


async def test_a_task_that_lost_its_first_cancellation_is_cancelled_again() -> None:
    """As when ``asyncio.wait_for`` on 3.11 returns a result and drops the cancel: the task waits on."""
    went_on = asyncio.Event()

    async def swallows_one_cancel() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            went_on.set()
        await asyncio.sleep(3600)  # its next wait, as the console's index went back to its poll

    task = asyncio.create_task(swallows_one_cancel())
    await asyncio.sleep(0)
    async with asyncio.timeout(5):
        await cancel_and_wait([task], again_after_s=0.05)
    assert went_on.is_set() and task.cancelled()


async def test_ended_and_failing_tasks_are_waited_for_without_raising() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    failing = asyncio.create_task(fails())
    sleeping = asyncio.create_task(asyncio.sleep(3600))
    await asyncio.sleep(0)
    await cancel_and_wait([failing, sleeping])
    assert sleeping.cancelled()
    with pytest.raises(RuntimeError):
        failing.result()


async def test_nothing_to_cancel_returns_at_once() -> None:
    async with asyncio.timeout(1):
        await cancel_and_wait([])


async def test_with_a_bound_a_task_that_does_not_end_is_left_after_it() -> None:
    """A shutdown's last step (a replica's running commands past the drain grace) must end, whatever a task does."""
    let_go = asyncio.Event()

    async def ignores_cancels() -> None:
        while not let_go.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue

    stubborn = asyncio.create_task(ignores_cancels())
    obedient = asyncio.create_task(asyncio.sleep(3600))
    await asyncio.sleep(0)
    started = asyncio.get_running_loop().time()
    async with asyncio.timeout(5):
        await cancel_and_wait([stubborn, obedient], again_after_s=0.05, give_up_after_s=0.3)
    assert 0.25 <= asyncio.get_running_loop().time() - started < 2
    assert obedient.cancelled() and not stubborn.done()
    let_go.set()
    await cancel_and_wait([stubborn])
    assert stubborn.done()
