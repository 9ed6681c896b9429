"""Per-document serialisation inside one replica: one command per document at a time, in arrival order.

``asyncio.Lock`` wakes waiters first-come first-served, so commands that reach ``hold`` in delivery order
run in delivery order. Locks are dropped when nobody holds or waits for them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class DocumentLocks:
    def __init__(self) -> None:
        self._locks: dict[uuid.UUID, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, document_id: uuid.UUID | None) -> AsyncIterator[None]:
        """``None`` (a command too broken to name its document) needs no lock."""
        if document_id is None:
            yield
            return
        lock, users = self._locks.get(document_id, (asyncio.Lock(), 0))
        self._locks[document_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[document_id]
            if users == 1:
                del self._locks[document_id]
            else:
                self._locks[document_id] = (lock, users - 1)
