"""Which held command runs next, and how many run at once: the one owner of that decision in a replica
(scheduling only: no broker, no DMS).

A replica holds the commands its shard subscriptions delivered and it has not settled: its read-ahead. Of
those it runs:

* per document one at a time, in delivery order: a command waits only for earlier commands of its own
  document (it is *held back* meanwhile); a command too broken to name its document waits for nobody;
* at most ``limit()`` at once; a command sleeping in retry backoff is *parked* and does not count, so it
  holds back its own document's later commands and nothing else;
* each free place to the tenant with the fewest running (weighted), and within a tenant to the command
  issued first (its ``issued`` time, then arrival: a tenant's documents arrive over up to 16 queues, whose
  deliveries come in bursts of one queue, so arrival order alone scrambles publish order; a parked command
  whose backoff is over keeps its place, so it goes before its tenant's newer commands). A producer's clock
  orders only its own tenant's commands: between tenants, ties go to the earlier arrival.

The limits, all in one table (the settings are ``DMS_WORKER_*``):

=============================  =================================  ======================================
what                           setting                            bounds
=============================  =================================  ======================================
commands running at once       IN_FLIGHT_LIMIT (adaptive between  the load this replica puts on DMS
                               CONCURRENCY_MIN and it)
unacked deliveries per held    READ_AHEAD (the subscription's     how far a replica reads past a parked
shard queue                    prefetch; the same on every        document or another tenant's backlog
                               replica, see shard_consumers)
bytes held by the read-ahead   READ_AHEAD_BYTES (shard_consumers  memory: past it no delivery is read
                               stops reading, amqp.read_gate)     until half of it
=============================  =================================  ======================================

A queue the replica gives up (released, or restarted after a failed settle) is *withdrawn*: its
waiting commands leave at once, a parked one is woken with ``Withdrawn``, a running one finishes its
attempt and does not retry here. Its channel is then closed, and RabbitMQ returns every unsettled delivery
of that channel to the head of the queue in delivery order (``shard_consumers`` says why that keeps order).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, TypeVar

T = TypeVar("T")


class State(Enum):
    WAITING = "waiting"  # delivered, never started
    RUNNING = "running"
    PARKED = "parked"  # in retry backoff
    RESUMING = "resuming"  # backoff over, waiting for its turn again
    DONE = "done"


class Withdrawn(Exception):
    """The command's queue is being given back: stop without settling (the broker returns the delivery)."""


@dataclass(eq=False)
class Held(Generic[T]):
    """One delivered command the replica holds (unacked)."""

    payload: T
    queue: int
    document: Hashable | None
    tenant: str
    size: int
    issued: float = 0.0  # when its producer issued it (epoch seconds, as far as known): orders its tenant's
    seq: int = 0  # arrival order in this replica
    state: State = State.WAITING
    withdrawn: bool = False
    _turn: asyncio.Future[None] | None = field(default=None, repr=False)
    _sleep: asyncio.Future[None] | None = field(default=None, repr=False)


class Dispatcher(Generic[T]):
    def __init__(
        self,
        start: Callable[[Held[T]], None],
        limit: Callable[[], int],
        weights: Mapping[str, float] | None = None,
        is_lost: Callable[[T], bool] = lambda _payload: False,
    ) -> None:
        """``start(held)`` is called when it is a command's turn (the caller runs it and then calls
        ``finished``); ``is_lost(payload)``: its delivery can no longer be settled (skip it: the broker has
        it back and delivers it again)."""
        self._start = start
        self._limit = limit
        self._weights = dict(weights or {})
        self._is_lost = is_lost
        self._seq = itertools.count()
        self._documents: dict[Hashable, deque[Held[T]]] = {}
        self._runnable: dict[str, list[tuple[float, int, Held[T]]]] = {}  # tenant -> heap by issue, arrival
        self._running_by_tenant: dict[str, int] = {}
        self._by_queue: dict[int, set[Held[T]]] = {}
        self.running = 0
        self.parked = 0
        self.held_bytes = 0

    # --- what the gauges show ---------------------------------------------------------------------

    @property
    def held(self) -> int:
        return sum(len(items) for items in self._by_queue.values())

    @property
    def runnable(self) -> int:
        """Commands whose document lets them run, waiting for a place under the limit (entries left behind
        by a withdrawal or a cancel stay in the heaps until ``wake`` pops them, and are not counted)."""
        return sum(1 for heap in self._runnable.values() for *_, held in heap if _waits_for_a_place(held))

    @property
    def held_back(self) -> int:
        """Commands waiting for an earlier command of their own document."""
        return sum(len(items) - 1 for items in self._documents.values())

    def running_by_tenant(self) -> dict[str, int]:
        """Commands running now, per tenant (the heartbeats carry it to the operator console)."""
        return dict(self._running_by_tenant)

    def started(self, queue: int) -> int:
        """The queue's commands running or parked (its channel must stay open for them)."""
        return sum(1 for h in self._by_queue.get(queue, ()) if h.state is not State.WAITING)

    def held_for(self, tenant: str) -> int:
        """The tenant's commands held here: running, parked in retry backoff, or waiting (the census)."""
        return sum(1 for items in self._by_queue.values() for h in items if h.tenant == tenant)

    def waiting_by_queue(self) -> dict[int, int]:
        """Per queue, its held commands never started (one pass over everything held)."""
        return {
            queue: waiting
            for queue, items in self._by_queue.items()
            if (waiting := sum(1 for h in items if h.state is State.WAITING))
        }

    def held_in(self, queue: int) -> int:
        return len(self._by_queue.get(queue, ()))

    # --- the life of a held command ---------------------------------------------------------------

    def offer(self, held: Held[T]) -> None:
        """A new delivery, in its queue's delivery order."""
        held.seq = next(self._seq)
        self._by_queue.setdefault(held.queue, set()).add(held)
        self.held_bytes += held.size
        if held.document is None:
            self._make_runnable(held)
        else:
            line = self._documents.setdefault(held.document, deque())
            line.append(held)
            if len(line) == 1:
                self._make_runnable(held)
        self.wake()

    async def park(self, held: Held[T], delay_s: float, sooner: asyncio.Event | None = None) -> None:
        """For a running command: sleep ``delay_s`` (or until ``sooner`` is set) without taking a place, then
        wait for its turn again. Raises ``Withdrawn`` if its queue is given back meanwhile (or already was)."""
        if held.withdrawn:
            raise Withdrawn
        self._stop_running(held)
        held.state = State.PARKED
        self.parked += 1
        self.wake()  # its place goes to the next runnable command
        held._sleep = asyncio.ensure_future(_backoff(delay_s, sooner))
        try:
            await held._sleep
        except asyncio.CancelledError:
            if held.withdrawn and not _cancelling():
                raise Withdrawn from None
            raise
        finally:
            held._sleep = None
            self.parked -= 1
        if held.withdrawn:
            raise Withdrawn
        held.state = State.RESUMING
        held._turn = asyncio.get_running_loop().create_future()
        self._make_runnable(held)
        self.wake()
        try:
            await held._turn
        except asyncio.CancelledError:
            if held.state is State.RESUMING:  # not granted: it holds no place
                held.state = State.PARKED
            if held.withdrawn and not _cancelling():
                raise Withdrawn from None
            raise
        finally:
            held._turn = None
        if held.withdrawn:  # granted as its queue was withdrawn: it holds a place, ``finished`` frees it
            raise Withdrawn

    def finished(self, held: Held[T]) -> None:
        """The command is settled, or left unsettled for the broker to return: either way it is no longer
        held. Its document's next command may run."""
        if held.state is State.DONE:
            return
        self._stop_running(held)
        self._forget(held)
        self.wake()

    def withdraw(self, queue: int) -> None:
        """The queue is being given back (see the module docstring)."""
        for held in list(self._by_queue.get(queue, ())):
            held.withdrawn = True
            if held.state is State.WAITING:
                self._forget(held)
            elif held._sleep is not None:
                held._sleep.cancel()
            elif held._turn is not None and not held._turn.done():
                held._turn.cancel()
        self.wake()

    # --- deciding ---------------------------------------------------------------------------------

    def wake(self) -> None:
        """Starts commands while places are free (call after the limit grew)."""
        while self.running < self._limit() and self._runnable:
            tenant = min(self._runnable, key=self._priority)
            heap = self._runnable[tenant]
            *_, held = heapq.heappop(heap)
            if not heap:
                del self._runnable[tenant]
            if not _waits_for_a_place(held):
                continue  # settled, withdrawn or cancelled since it was queued here
            if held._turn is not None:  # a parked command whose backoff is over
                self._begin_running(held)
                held._turn.set_result(None)
                continue
            if self._is_lost(held.payload):  # its channel died: the broker delivers it again
                self._forget(held)
                continue
            self._begin_running(held)
            self._start(held)

    def _priority(self, tenant: str) -> tuple[float, int]:
        running = self._running_by_tenant.get(tenant, 0) / max(self._weights.get(tenant, 1.0), 1e-9)
        return running, self._runnable[tenant][0][1]

    def _make_runnable(self, held: Held[T]) -> None:
        heapq.heappush(self._runnable.setdefault(held.tenant, []), (held.issued, held.seq, held))

    def _begin_running(self, held: Held[T]) -> None:
        held.state = State.RUNNING
        self.running += 1
        self._running_by_tenant[held.tenant] = self._running_by_tenant.get(held.tenant, 0) + 1

    def _stop_running(self, held: Held[T]) -> None:
        if held.state is not State.RUNNING:
            return
        self.running -= 1
        left = self._running_by_tenant[held.tenant] - 1
        if left:
            self._running_by_tenant[held.tenant] = left
        else:
            del self._running_by_tenant[held.tenant]

    def _forget(self, held: Held[T]) -> None:
        held.state = State.DONE
        items = self._by_queue.get(held.queue)
        if items is not None:
            items.discard(held)
            if not items:
                del self._by_queue[held.queue]
        self.held_bytes -= held.size
        if held.document is None:
            return
        line = self._documents[held.document]
        was_head = line[0] is held
        line.remove(held)
        if not line:
            del self._documents[held.document]
        elif was_head and line[0].state is State.WAITING:
            self._make_runnable(line[0])


async def _backoff(delay_s: float, sooner: asyncio.Event | None) -> None:
    if sooner is None:
        await asyncio.sleep(delay_s)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(sooner.wait(), delay_s)


def _waits_for_a_place(held: Held[T]) -> bool:
    if held.state is State.RESUMING:
        return held._turn is not None and not held._turn.done()
    return held.state is State.WAITING and not held.withdrawn


def _cancelling() -> bool:
    """Whether the current task itself is being cancelled (shutdown), not just the sleep we cancelled."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
