"""Lets a replica's delivered commands make their DMS calls a limited number at a time, the next slot going
to the tenant with the fewest running (weighted), the longest-waiting tenant first on a tie, each tenant's
own commands in arrival order. The consumer hands the handlers a ``Delivery.dms_turn`` that takes a slot;
content fetches and checks come before it and do not count.

The slot splitter (``worker.intake.slots``) decides how many deliveries each queue may hold; this gate
decides which of the held ones runs when fewer may run than are held (the adaptive limit of
``worker.intake.concurrency``): a tenant whose one upload just arrived runs next, not after the commands
another tenant's backlog already put in the replica. Commands wait here holding their document's lock, so
per-document order is untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable, Mapping


class FairGate:
    def __init__(self, limit: Callable[[], int], weights: Mapping[str, float] | None = None) -> None:
        self._limit = limit
        self._weights = dict(weights or {})
        self._running: dict[str, int] = defaultdict(int)  # tenants with none running are left out
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}  # insertion order: who waits longest

    @property
    def running(self) -> int:
        return sum(self._running.values())  # at most the limit's worth of tenants: a short sum

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self._waiting.values())

    @contextlib.asynccontextmanager
    async def slot(self, tenant: str) -> AsyncIterator[None]:
        await self._acquire(tenant)
        try:
            yield
        finally:
            self._release(tenant)

    def wake(self) -> None:
        """Grants slots to waiting commands while the limit allows (call after the limit grew)."""
        while self._waiting and self.running < self._limit():
            tenant = min(self._waiting, key=self._load)  # min keeps the first of equals: the longest waiting
            queue = self._waiting[tenant]
            granted = queue.popleft()
            if not queue:
                del self._waiting[tenant]
            if granted.done():  # its task was cancelled while waiting and has not run since
                continue
            self._take(tenant)
            granted.set_result(None)

    def _load(self, tenant: str) -> float:
        return self._running.get(tenant, 0) / max(self._weights.get(tenant, 1.0), 1e-9)

    def _take(self, tenant: str) -> None:
        self._running[tenant] += 1

    async def _acquire(self, tenant: str) -> None:
        if not self._waiting and self.running < self._limit():
            self._take(tenant)
            return
        ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(tenant, deque()).append(ticket)
        try:
            await ticket
        except asyncio.CancelledError:
            if ticket.done() and not ticket.cancelled():  # granted as it was cancelled: hand the slot on
                self._release(tenant)
            else:
                queue = self._waiting.get(tenant)
                if queue is not None and ticket in queue:
                    queue.remove(ticket)
                    if not queue:
                        del self._waiting[tenant]
            raise

    def _release(self, tenant: str) -> None:
        self._running[tenant] -= 1
        if not self._running[tenant]:
            del self._running[tenant]
        self.wake()
