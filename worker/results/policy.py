"""The one place that decides what happens to a command after an attempt: no I/O, and pure but for the
backoff's jitter (``worker.backoff``; pass ``jitter`` to fix it)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from worker import backoff
from worker.errors import PermanentError, TransientError, UnknownTenant, WorkerError


class Outcome(Enum):
    SUCCEEDED = "succeeded"  # publish success event, then ack
    FAILED = "failed"  # permanent: publish failed event, then ack; no retry
    RETRY = "retry"  # transient with attempts left: wait delay_ms (message held, unacked), try again
    DEAD_LETTER = "dead_letter"  # transient, attempts used up (or no destination): to the DLQ + failed event, ack


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    delay_ms: int | None = None  # for RETRY: how long to wait before the next attempt


def decide(
    error: WorkerError | None, attempt: int, delays_ms: list[int], jitter: backoff.Jitter = backoff.jittered
) -> Decision:
    """``attempt`` counts from 1. There are ``len(delays_ms)`` retries, so ``len + 1`` attempts in all."""
    if error is None:
        return Decision(Outcome.SUCCEEDED)
    if isinstance(error, UnknownTenant):
        # Deliberate exception to "permanent errors are acked": retrying in place cannot help, but the
        # destination is a matter of configuration (a Secret, a binding, a BTP destination) and the command
        # must survive until it is fixed. The DLQ keeps it for `dlq replay`.
        return Decision(Outcome.DEAD_LETTER)
    if isinstance(error, PermanentError):
        return Decision(Outcome.FAILED)
    if isinstance(error, TransientError) and attempt <= len(delays_ms):
        return Decision(Outcome.RETRY, retry_delay_ms(error, attempt, delays_ms, jitter))
    if isinstance(error, TransientError):
        return Decision(Outcome.DEAD_LETTER)
    return Decision(Outcome.FAILED)  # an unclassified WorkerError is a bug: do not loop on it


def retry_delay_ms(
    error: TransientError, attempt: int, delays_ms: list[int], jitter: backoff.Jitter = backoff.jittered
) -> int:
    """The configured step for this attempt, raised to the smallest step that honours Retry-After, then
    jittered (at least half of it: replicas that failed together do not retry together) but never under the
    Retry-After the step honours."""
    step = delays_ms[attempt - 1]
    wanted = 0
    if error.retry_after is not None:
        wanted = int(error.retry_after * 1000)
        if wanted > step:
            step = min((d for d in delays_ms if d >= wanted), default=max(delays_ms))
    return max(round(jitter(step / 1000) * 1000), min(wanted, step))
