"""Replays and purges as jobs: one at a time, with progress, a rate limit and cancel, and a history that
follows what became of each replayed command through its result events.

A pass holds the messages it read until it ends, and RabbitMQ closes a channel whose oldest unacked delivery
is older than its ``consumer_timeout`` (30 minutes by default). So a long job (a slow rate over many dead
letters) works in passes of at most ``PASS_MAX_S``: each stops replaying then, reads to the end and hands
back, and the next starts again from the head, skipping what the job has done (a replayed command that
failed again is in the DLQ once more: it is not replayed twice by the same job).

A job runs ``DeadLetterQueue.replay`` or ``purge``, the code the CLI's ``dlq`` runs: a replayed command is
republished to the exchange and routing key it first came through (so it lands in its document's shard
queue, behind that document's earlier commands, and the worker's marker check keeps a repeat from writing
twice), confirmed, and only then acked from the DLQ. Cancel takes effect between two messages, so no
command is left half-replayed. Each job writes one audit line when it ends (``console_audit``: who, the
filter, how many were asked for and done). The history lives in memory: lost with the process, the audit
lines stay in the log.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from worker.console.auth import User
from worker.console.index import DeadLetterIndex
from worker.results.dead_letters import DeadLetter, DeadLetterQueue, Progress, Selection
from worker.results.following import is_outcome, succeeded
from worker.tasks import cancel_and_wait

log = structlog.get_logger(__name__)

HISTORY_KEPT = 100
PASS_MAX_S = 600.0  # well under RabbitMQ's default consumer_timeout of 30 minutes


@dataclass
class Job:
    id: int
    kind: str  # replay | purge
    user: User
    selection: Selection
    expected: int  # what the index counted when it was asked for
    rate_per_s: float | None = None
    state: str = "waiting"  # waiting | running | done | cancelled | failed
    scanned: int = 0
    total: int | None = None
    done: int = 0
    error: str | None = None
    asked_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    cancel_requested: bool = False
    cancelled_by: str | None = None
    passes: int = 0
    taken: set[str] = field(default_factory=set)  # message ids replayed or purged
    outcomes: dict[str, str] = field(default_factory=dict)  # replayed command id -> "" until its outcome
    failed_again: dict[str, str] = field(default_factory=dict)  # command id -> error code

    @property
    def finished(self) -> bool:
        return self.state in {"done", "cancelled", "failed"}

    @property
    def succeeded(self) -> int:
        return sum(1 for outcome in self.outcomes.values() if outcome == "succeeded")

    @property
    def awaiting_outcome(self) -> int:
        return sum(1 for outcome in self.outcomes.values() if not outcome)

    @property
    def percent(self) -> int:
        return round(100 * self.scanned / self.total) if self.total else (100 if self.finished else 0)


class _JobProgress:
    def __init__(self, job: Job, index: DeadLetterIndex) -> None:
        self._job = job
        self._index = index

    def start(self, stage: str, total: int | None) -> None:
        self._job.total = self._job.scanned + (total or 0)  # across passes

    def advance(self, letter: DeadLetter | None = None) -> None:
        self._job.scanned += 1
        if letter is not None:
            self._job.done += 1
            self._index.remove(letter)
            if letter.message_id:
                self._job.taken.add(letter.message_id)
            if self._job.kind == "replay" and letter.message_id:
                self._job.outcomes[letter.message_id] = ""


class Jobs:
    def __init__(
        self,
        queue: Callable[[Progress], DeadLetterQueue],
        index: DeadLetterIndex,
        scan_limit: int,
        pass_max_s: float = PASS_MAX_S,
    ) -> None:
        self._queue = queue
        self._index = index
        self._scan_limit = scan_limit
        self._pass_max_s = pass_max_s
        self._ids = itertools.count(1)
        self.history: deque[Job] = deque(maxlen=HISTORY_KEPT)  # newest first
        self._tasks: set[asyncio.Task[None]] = set()

    def get(self, job_id: int) -> Job | None:
        return next((job for job in self.history if job.id == job_id), None)

    def submit(
        self, kind: str, user: User, selection: Selection, expected: int, rate_per_s: float | None = None
    ) -> Job:
        job = Job(next(self._ids), kind, user, selection, expected, rate_per_s)
        self.history.appendleft(job)
        task = asyncio.get_running_loop().create_task(self._run(job), name=f"console-{kind}-{job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    def cancel(self, job: Job, user: User) -> None:
        if not job.finished and not job.cancel_requested:
            job.cancel_requested, job.cancelled_by = True, user.name

    async def _run(self, job: Job) -> None:
        async with self._index.turn:  # after any pass or job before it
            if job.cancel_requested:
                job.state = "cancelled"
                self._audit(job)
                return
            job.state, job.started_at = "running", dt.datetime.now(dt.UTC)
            try:
                while await self._pass(job):
                    pass
                job.state = "cancelled" if job.cancel_requested else "done"
            except Exception as exc:
                job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
                log.warning("console_job_failed", job=job.id, kind=job.kind, error=job.error)
            finally:
                if not job.finished:  # cancelled outright (shutdown)
                    job.state = "cancelled"
                job.finished_at = dt.datetime.now(dt.UTC)
                self._audit(job)
        self._index.check_soon()  # a check of the depth, and a pass if something else changed the DLQ

    async def _pass(self, job: Job) -> bool:
        """One pass of the job; whether another is needed (this one ran out of time)."""
        dlq = self._queue(_JobProgress(job, self._index))
        started = time.monotonic()
        job.passes += 1
        selection = dataclasses.replace(job.selection, except_ids=frozenset(job.taken) or None)

        def stop() -> bool:
            return job.cancel_requested or time.monotonic() - started > self._pass_max_s

        if job.kind == "replay":
            await dlq.replay(selection, rate_per_s=job.rate_per_s, scan_limit=self._scan_limit, stop=stop)
        else:  # never more than the operator confirmed
            await dlq.purge(selection, scan_limit=self._scan_limit, limit=job.expected - job.done, stop=stop)
        return not job.cancel_requested and time.monotonic() - started > self._pass_max_s

    @staticmethod
    def _audit(job: Job) -> None:
        log.info(
            "console_audit",
            action=job.kind,
            user=job.user.name,
            role=job.user.role,
            filter=job.selection.as_filter(),
            requested=job.expected,
            count=job.done,
            state=job.state,
            job=job.id,
            rate_per_s=job.rate_per_s,
            cancelled_by=job.cancelled_by,
        )

    def on_event(self, event: dict[str, Any]) -> None:
        """A result event: the outcome of a command some job replayed?"""
        if not is_outcome(event):
            return
        data = event.get("data")
        command_id = data.get("command_id") if isinstance(data, dict) else None
        if not isinstance(command_id, str):
            return
        for job in self.history:
            if job.kind == "replay" and job.outcomes.get(command_id) == "":
                if succeeded(event):
                    job.outcomes[command_id] = "succeeded"
                else:
                    job.outcomes[command_id] = "failed"
                    error = data.get("error") if isinstance(data, dict) else None
                    job.failed_again[command_id] = str(error.get("code")) if isinstance(error, dict) else "?"
                return

    async def stop(self, within_s: float = 10.0) -> None:
        """Cancels every job between two messages; one still waiting for a confirm after ``within_s`` (the
        broker away) is cancelled outright: its message stays in the DLQ, and if its copy did reach the
        command exchange, the worker's marker check absorbs the repeat when it is replayed again."""
        for job in self.history:
            if not job.finished:
                job.cancel_requested, job.cancelled_by = True, job.cancelled_by or "shutdown"
        if not self._tasks:
            return
        _, late = await asyncio.wait(set(self._tasks), timeout=within_s)
        await cancel_and_wait(late)
