"""A gate every DMS call passes first, set by whoever runs the calls for the task making them (the consumer,
per command). It may wait, or raise to stop the call before anything is sent. The DMS client knows nothing
of why: the consumer uses it to fence a replica that no longer hears the broker (``worker.intake.lease``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar

CallGate = Callable[[], Awaitable[None]]

call_gate: ContextVar[CallGate | None] = ContextVar("dms_call_gate", default=None)


async def pass_gate() -> None:
    gate = call_gate.get()
    if gate is not None:
        await gate()
