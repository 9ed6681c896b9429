"""Stopping background tasks for sure: the one place the worker and the console cancel what they started.

A single ``task.cancel()`` is not always honoured on Python 3.11: ``asyncio.wait_for`` (which aiormq and
aio-pika use for every broker round trip) returns the inner result and drops the cancellation when both
happen in the same loop iteration (CPython gh-86296, fixed in 3.12). The task then goes on, typically into
its next wait, and a shutdown that awaited it hangs. ``cancel_and_wait`` cancels again until each task has
ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import structlog

log = structlog.get_logger(__name__)


async def cancel_and_wait(
    tasks: Iterable[asyncio.Future[Any]], again_after_s: float = 0.5, give_up_after_s: float | None = None
) -> None:
    """Cancels ``tasks`` and returns once every one has ended (whatever each raised), cancelling a task that
    went on again every ``again_after_s``; with ``give_up_after_s``, returns by then whatever is left (logged)."""
    tasks = list(tasks)
    running = {task for task in tasks if not task.done()}
    deadline = None if give_up_after_s is None else asyncio.get_running_loop().time() + give_up_after_s
    while running:
        for task in running:
            task.cancel()
        wait_s = again_after_s
        if deadline is not None:
            wait_s = min(wait_s, deadline - asyncio.get_running_loop().time())
            if wait_s <= 0:
                log.warning("tasks_left_running", tasks=sorted(_name(task) for task in running))
                break
        _, running = await asyncio.wait(running, timeout=wait_s)
        for task in running:
            log.warning("task_cancelled_again", task=_name(task))
    # Retrieve what they raised, so that nothing is reported as "exception never retrieved".
    await asyncio.gather(*(task for task in tasks if task.done()), return_exceptions=True)


def _name(task: asyncio.Future[Any]) -> str:
    return task.get_name() if isinstance(task, asyncio.Task) else repr(task)
