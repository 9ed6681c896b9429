"""The dispatcher decides what runs next (no broker): per-document order, a place per running command that a
retry backoff gives up, tenants served fairly, and a withdrawn queue leaving without a trace."""

from __future__ import annotations

import asyncio

import pytest

from worker.intake.dispatcher import Dispatcher, Held, State, Withdrawn


class Rig:
    def __init__(self, limit: int = 10, lost: set[str] | None = None) -> None:
        self.limit = limit
        self.started: list[str] = []
        self.held: dict[str, Held[str]] = {}
        self.lost = lost or set()
        self.dispatcher: Dispatcher[str] = Dispatcher(
            lambda held: self.started.append(held.payload), lambda: self.limit, is_lost=lambda p: p in self.lost
        )

    def offer(
        self,
        name: str,
        document: str | None = None,
        tenant: str = "t",
        queue: int = 0,
        size: int = 1,
        issued: float = 0,
    ) -> None:
        """``name`` like "X1": document X unless given."""
        doc = name[0] if document is None else document
        held = self.held[name] = Held(name, queue, doc or None, tenant, size, issued)
        self.dispatcher.offer(held)

    def finish(self, name: str) -> None:
        self.dispatcher.finished(self.held[name])


class TestOrder:
    """A command waits only for earlier commands of its own document."""

    def test_a_document_runs_one_command_at_a_time_in_delivery_order(self) -> None:
        r = Rig()
        for name in ("X1", "X2", "Y1", "X3"):
            r.offer(name)
        assert r.started == ["X1", "Y1"]
        assert r.dispatcher.held_back == 2
        r.finish("X1")
        assert r.started == ["X1", "Y1", "X2"]
        r.finish("X2")
        assert r.started[-1] == "X3"

    def test_a_command_naming_no_document_waits_for_nobody(self) -> None:
        r = Rig()
        r.offer("X1")
        r.offer("?1", document="")
        r.offer("?2", document="")
        assert r.started == ["X1", "?1", "?2"]


class TestIssueOrder:
    """Within a tenant the command issued first runs first, whichever queue delivered it first."""

    def test_a_tenants_commands_run_in_the_order_they_were_issued(self) -> None:
        r = Rig(limit=0)
        r.offer("A1", issued=3, queue=1)  # queue 1's burst arrives before queue 2's
        r.offer("B1", issued=4, queue=1)
        r.offer("C1", issued=1, queue=2)
        r.offer("D1", issued=2, queue=2)
        r.limit = 4
        r.dispatcher.wake()
        assert r.started == ["C1", "D1", "A1", "B1"]

    def test_a_document_keeps_its_delivery_order_whatever_its_times(self) -> None:
        r = Rig(limit=1)
        r.offer("X1", issued=5)
        r.offer("X2", issued=1)  # a producer's clock does not reorder one document
        r.finish("X1")
        assert r.started == ["X1", "X2"]

    def test_between_tenants_a_clock_far_in_the_past_wins_nothing(self) -> None:
        r = Rig(limit=0)
        r.offer("A1", document="a1", tenant="A")
        r.offer("B1", document="b1", tenant="B", issued=-1e12)
        r.limit = 1
        r.dispatcher.wake()
        assert r.started == ["A1"]  # A's arrived first; B's old time orders only B's own commands


class TestLimit:
    def test_no_more_run_than_the_limit_and_a_finished_one_makes_room(self) -> None:
        r = Rig(limit=2)
        for name in ("A1", "B1", "C1"):
            r.offer(name)
        assert r.started == ["A1", "B1"] and r.dispatcher.runnable == 1
        r.finish("B1")
        assert r.started == ["A1", "B1", "C1"] and r.dispatcher.running == 2

    async def test_a_parked_command_gives_up_its_place_and_holds_back_only_its_document(self) -> None:
        r = Rig(limit=1)
        r.offer("X1")
        r.offer("X2")
        r.offer("Y1")
        assert r.started == ["X1"]
        parked = asyncio.create_task(r.dispatcher.park(r.held["X1"], 0.05))
        await asyncio.sleep(0)
        assert r.started == ["X1", "Y1"]  # X1's backoff holds no place; X2 stays behind X1
        assert (r.dispatcher.parked, r.dispatcher.held_back) == (1, 1)
        r.offer("Z1")  # newer than X1: X1 goes first once its backoff is over
        await asyncio.sleep(0.1)
        assert not parked.done()  # Y1 still runs: X1 waits for the place
        r.finish("Y1")
        await parked
        assert r.held["X1"].state is State.RUNNING and r.started == ["X1", "Y1"]
        r.finish("X1")
        assert r.started == ["X1", "Y1", "X2"]  # X2 before Z1: it arrived first

    async def test_a_backoff_ends_early_when_its_event_is_set(self) -> None:
        """A transient error may carry an event (DMS answering again): the backoff ends there, not later."""
        r = Rig(limit=1)
        r.offer("X1")
        back = asyncio.Event()
        parked = asyncio.create_task(r.dispatcher.park(r.held["X1"], 3600, back))
        await asyncio.sleep(0.01)
        assert not parked.done() and r.dispatcher.parked == 1
        back.set()
        await asyncio.wait_for(parked, 1)
        assert r.held["X1"].state is State.RUNNING

    def test_a_lost_delivery_is_dropped_without_taking_a_place(self) -> None:
        r = Rig(limit=1, lost={"X1"})
        r.offer("X1")
        r.offer("X2")
        assert r.started == ["X2"] and r.dispatcher.held == 1


class TestFairness:
    def test_the_next_place_goes_to_the_tenant_with_fewest_running(self) -> None:
        r = Rig(limit=2)
        for n in range(1, 6):
            r.offer(f"A{n}", document=f"a{n}", tenant="A")
        r.offer("B1", document="b1", tenant="B")
        assert r.started == ["A1", "A2"]
        r.finish("A1")
        assert r.started[-1] == "B1"  # A has one running, B none: B's one command goes before A3

    def test_weights_share_the_places(self) -> None:
        r = Rig(limit=0)  # everything is held before the places open
        r.dispatcher = Dispatcher(lambda held: r.started.append(held.payload), lambda: r.limit, {"A": 3.0})
        for n in range(1, 6):
            r.offer(f"A{n}", document=f"a{n}", tenant="A")
            r.offer(f"B{n}", document=f"b{n}", tenant="B")
        r.limit = 4
        r.dispatcher.wake()
        assert sorted(name[0] for name in r.started) == ["A", "A", "A", "B"]


class TestWithdraw:
    async def test_a_withdrawn_queue_leaves_its_waiting_commands_and_wakes_its_parked_one(self) -> None:
        r = Rig(limit=5)
        r.offer("X1", queue=1, size=10)
        r.offer("X2", queue=1, size=20)
        r.offer("Y1", queue=2, size=5)
        parked = asyncio.create_task(r.dispatcher.park(r.held["X1"], 30))
        await asyncio.sleep(0)
        r.dispatcher.withdraw(1)
        with pytest.raises(Withdrawn):
            await parked
        assert r.dispatcher.started(1) == 1  # X1 is still held until the runner says it is finished
        r.finish("X1")
        assert r.dispatcher.held == 1 and r.dispatcher.held_bytes == 5 and r.dispatcher.started(1) == 0
        assert r.started == ["X1", "Y1"]  # X2 never ran

    async def test_a_running_command_of_a_withdrawn_queue_may_not_park(self) -> None:
        r = Rig()
        r.offer("X1")
        r.dispatcher.withdraw(0)
        with pytest.raises(Withdrawn):
            await r.dispatcher.park(r.held["X1"], 1)
        r.finish("X1")
        assert r.dispatcher.running == 0 and r.dispatcher.held == 0

    async def test_shutdown_cancelling_a_parked_command_is_a_cancel_not_a_withdrawal(self) -> None:
        r = Rig()
        r.offer("X1")
        parked = asyncio.create_task(r.dispatcher.park(r.held["X1"], 30))
        await asyncio.sleep(0)
        parked.cancel()
        with pytest.raises(asyncio.CancelledError):
            await parked
        r.finish("X1")
        assert (r.dispatcher.running, r.dispatcher.parked, r.dispatcher.held) == (0, 0, 0)

    def test_the_gauge_of_runnable_commands_leaves_withdrawn_ones_out(self) -> None:
        r = Rig(limit=1)
        r.offer("X1", queue=0)
        r.offer("Y1", queue=1)
        assert r.dispatcher.runnable == 1
        r.dispatcher.withdraw(1)
        assert r.dispatcher.runnable == 0 and r.dispatcher.held == 1


class TestCensus:
    def test_a_tenants_held_commands_count_until_they_finish_or_their_queue_is_withdrawn(self) -> None:
        """Running, waiting behind its document, waiting for a place: all held (the offboarding census)."""
        r = Rig(limit=1)
        r.offer("X1", tenant="a", queue=0)
        r.offer("X2", tenant="a", queue=0)
        r.offer("Y1", tenant="a", queue=1)
        r.offer("Z1", tenant="b", queue=1)
        assert (r.dispatcher.held_for("a"), r.dispatcher.held_for("b"), r.dispatcher.held_for("c")) == (3, 1, 0)
        r.finish("X1")
        r.dispatcher.withdraw(1)
        assert (r.dispatcher.held_for("a"), r.dispatcher.held_for("b")) == (1, 0)


class TestBacklog:
    def test_commands_never_started_count_per_queue_for_balancing(self) -> None:
        """A deep read-ahead holds a queue's backlog in the replica: what waits there counts as its backlog."""
        r = Rig(limit=1)
        r.offer("X1", queue=0)  # runs
        r.offer("X2", queue=0)  # waits behind X1 (its document)
        r.offer("Y1", queue=0)  # waits for a place
        r.offer("Z1", queue=3)
        assert r.dispatcher.waiting_by_queue() == {0: 2, 3: 1}
        r.finish("X1")  # X2 or Y1 starts
        r.dispatcher.withdraw(3)
        assert r.dispatcher.waiting_by_queue() == {0: 1}


def test_an_issue_time_in_the_future_counts_as_now() -> None:
    from datetime import UTC, datetime, timedelta
    from types import SimpleNamespace
    from typing import Any, cast

    from worker.intake.shard_consumers import issue_order

    later = datetime.now(UTC) + timedelta(days=3650)
    incoming = cast(Any, SimpleNamespace(message=SimpleNamespace(timestamp=later), command=None))
    assert issue_order(incoming) <= datetime.now(UTC).timestamp()
    earlier = datetime(2026, 1, 1, tzinfo=UTC)
    incoming = cast(
        Any, SimpleNamespace(message=SimpleNamespace(timestamp=None), command=SimpleNamespace(time=earlier))
    )
    assert issue_order(incoming) == earlier.timestamp()
