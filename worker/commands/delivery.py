"""What a handler is told about the message that carried its command (the intake fills it in), and the gate
the intake puts before the command's DMS calls."""

from __future__ import annotations

from dataclasses import dataclass

from worker.dms.call_gate import CallGate, call_gate


@dataclass(frozen=True)
class Delivery:
    """What the handlers need to know about the message that carried the command."""

    command_id: str  # the CloudEvent id
    attempt: int  # 1 for the first try
    redelivered: bool  # the broker may already have seen us work on it
    source: str = ""  # the CloudEvent source: with the id, the command's identity
    shard: int | None = None  # the shard queue it came from

    @property
    def may_have_written(self) -> bool:
        return self.attempt > 1 or self.redelivered


def gate_dms_calls(gate: CallGate) -> None:
    """For the task running a command: ``gate`` is awaited before each of its DMS calls, and may stop them
    (``worker.dms.call_gate``; the intake's fence of a replica that no longer hears the broker)."""
    call_gate.set(gate)
