"""The gate hands a free slot to the tenant with the fewest running commands."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from worker.intake.fair_gate import FairGate


def holder(gate: FairGate, go: asyncio.Event, order: list[str]) -> Callable[[str], Coroutine[Any, Any, None]]:
    """A command of tenant A that notes when it starts and keeps its slot until ``go`` is set."""

    async def command(name: str) -> None:
        async with gate.slot("A"):
            order.append(name)
            await go.wait()

    return command


async def test_a_tenant_arriving_behind_a_backlog_runs_next() -> None:
    limit = 2
    gate = FairGate(lambda: limit)
    started: list[str] = []
    release = asyncio.Event()

    async def command(tenant: str, name: str) -> None:
        async with gate.slot(tenant):
            started.append(name)
            await release.wait()

    tasks = [asyncio.create_task(command("A", f"a{i}")) for i in range(6)]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(command("B", "b0")))
    await asyncio.sleep(0)
    assert started == ["a0", "a1"] and gate.running == 2 and gate.waiting == 5
    release.set()
    await asyncio.gather(*tasks)
    assert started[2] == "b0"  # before A's four waiting ones
    assert started[3:] == ["a2", "a3", "a4", "a5"]  # a tenant's own commands in arrival order
    assert gate.running == 0 and gate.waiting == 0


async def test_weights_give_a_tenant_more_slots() -> None:
    gate = FairGate(lambda: 4, {"A": 3.0})
    running = {"A": 0, "B": 0, "X": 0}
    x_done, go = asyncio.Event(), asyncio.Event()

    async def command(tenant: str, until: asyncio.Event) -> None:
        async with gate.slot(tenant):
            running[tenant] += 1
            await until.wait()
            running[tenant] -= 1

    holders = [asyncio.create_task(command("X", x_done)) for _ in range(4)]  # every slot taken
    await asyncio.sleep(0)
    waiters = [asyncio.create_task(command(t, go)) for t in "ABABABAB"]
    await asyncio.sleep(0)
    x_done.set()  # four slots come free at once
    await asyncio.sleep(0.01)
    assert running == {"A": 3, "B": 1, "X": 0}
    go.set()
    await asyncio.gather(*holders, *waiters)


async def test_a_larger_limit_wakes_waiters_and_a_cancelled_waiter_gives_its_place_up() -> None:
    limit = 1
    gate = FairGate(lambda: limit)
    go = asyncio.Event()
    order: list[str] = []
    command = holder(gate, go, order)

    first = asyncio.create_task(command("first"))
    await asyncio.sleep(0)
    doomed = asyncio.create_task(command("doomed"))
    later = asyncio.create_task(command("later"))
    await asyncio.sleep(0)
    doomed.cancel()
    await asyncio.sleep(0)
    limit = 2
    gate.wake()
    await asyncio.sleep(0)
    assert order == ["first", "later"]
    go.set()
    await asyncio.gather(first, later)
    assert gate.running == 0 and gate.waiting == 0


async def test_a_slot_granted_to_a_task_cancelled_in_the_same_turn_is_handed_on() -> None:
    gate = FairGate(lambda: 1)
    go = asyncio.Event()
    order: list[str] = []
    command = holder(gate, go, order)

    first = asyncio.create_task(command("first"))
    await asyncio.sleep(0)
    granted_then_cancelled = asyncio.create_task(command("cancelled"))
    last = asyncio.create_task(command("last"))
    await asyncio.sleep(0)
    go.set()
    await asyncio.sleep(0)  # first leaves; its slot goes to the next waiter
    granted_then_cancelled.cancel()
    await asyncio.gather(first, last, granted_then_cancelled, return_exceptions=True)
    assert "last" in order and gate.running == 0 and gate.waiting == 0
