"""A chaos run against a recorded history: replicas killed (SIGKILL) or stopped (SIGTERM) and started again
every few seconds while DMS fails a share of its requests, then every document's versions read back from
DMS and compared with publish order. Used by ``test_chaos.py`` (once) and ``python -m tests.bench chaos``.

What counts, per command: its result events (one outcome, however often a redelivery repeats it) and, per
document, whether the stored versions are exactly the successful uploads in publish order, each once.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.producer import upload_command
from worker.results.following import is_outcome

from .conftest import Stack
from .replicas import Replicas

# What the chaos settings change from the defaults (issue 26's run): short retries and drain grace.
CHAOS_SETTINGS: dict[str, Any] = {
    "shard_count": 128,
    "retry_delays_ms": [200, 400, 800, 1000],
    "shutdown_grace_s": 5.0,
    "membership_heartbeat_s": 1.0,
}
SIGNALS = {"mixed": None, "kill": signal.SIGKILL, "term": signal.SIGTERM}


@dataclass(frozen=True)
class ChaosPlan:
    seed: int
    signals: str = "mixed"  # mixed: SIGKILL, every fourth one SIGTERM; kill: SIGKILL only; term: SIGTERM only
    replicas: int = 3
    documents: int = 20
    uploads_per_document: int = 15
    round_s: float = 2.0  # one upload of every document per round, published in order on one channel
    chaos_s: float = 40.0
    kill_every_s: tuple[float, float] = (1.5, 4.5)
    error_rate: float = 0.2
    latency_ms: float = 30.0
    settle_s: float = 180.0  # how long results may take after the last round


@dataclass
class ChaosReport:
    seed: int
    signals: str
    kills: int = 0
    terms: int = 0
    commands: int = 0
    succeeded: int = 0
    failed: int = 0  # a failed or dead-lettered outcome (retries used up): an outcome, not a loss
    failed_codes: Counter[str] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)  # no result at all
    conflicting: list[str] = field(default_factory=list)  # results naming different outcomes or versions
    out_of_order: dict[str, list[int]] = field(default_factory=dict)  # document -> upload numbers as stored
    # document -> each upload's outcome as reported (type suffix, version label, attempts), for a post-mortem
    reported: dict[str, list[str]] = field(default_factory=dict)
    written_twice: list[str] = field(default_factory=list)  # documents with an upload stored more than once
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        return not (self.lost or self.conflicting or self.out_of_order or self.written_twice)

    def row(self) -> str:
        return (
            f"| {self.seed} | {self.signals} | {self.kills} | {self.terms} | {self.commands} | {self.succeeded} | "
            f"{self.failed} | {len(self.lost)} | {len(self.conflicting)} | {len(self.out_of_order)} | "
            f"{len(self.written_twice)} | {self.seconds:.0f} |"
        )


HEADER = (
    "| seed | signals | SIGKILL | SIGTERM | commands | succeeded | failed | lost | conflicting | documents out of "
    "order | documents with an upload twice | s |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
)


async def run_chaos(stack: Stack, plan: ChaosPlan, log_dir: Path) -> ChaosReport:
    """``stack`` is made with ``CHAOS_SETTINGS``; its in-process worker is stopped here (replicas do the work)."""
    rng = random.Random(plan.seed)
    report = ChaosReport(plan.seed, plan.signals)
    started = time.monotonic()
    await stack.worker.stop()
    tenant = uuid.uuid4()
    documents = [uuid.uuid4() for _ in range(plan.documents)]
    replicas = Replicas(stack.settings, log_dir)
    replicas.start(plan.replicas)
    events: list[dict[str, Any]] = []
    commands = []
    try:
        await stack.run(upload_command(tenant, uuid.uuid4(), "warm.txt", "text/plain", b"w"), timeout=60)
        await stack.set_faults(latency_ms=plan.latency_ms, error_rate=plan.error_rate, seed=plan.seed)
        stack.emulator.emulator.faults.reseed()

        async def publish() -> None:
            for n in range(plan.uploads_per_document):
                for doc in documents:
                    command = upload_command(tenant, doc, "c.txt", "text/plain", f"{doc}:{n}".encode())
                    commands.append(command)
                    await stack.send(command)
                await asyncio.sleep(plan.round_s)

        async def chaos() -> None:
            deadline = time.monotonic() + plan.chaos_s
            while time.monotonic() < deadline:
                await asyncio.sleep(rng.uniform(*plan.kill_every_s))
                victim = rng.randrange(plan.replicas)
                sig = SIGNALS[plan.signals] or (
                    signal.SIGTERM if (report.kills + report.terms) % 4 == 3 else signal.SIGKILL
                )
                replicas.signal(victim, sig)
                await asyncio.to_thread(replicas.processes[victim].wait, 30)
                report.kills += sig is signal.SIGKILL
                report.terms += sig is signal.SIGTERM
                replicas.restart(victim)

        await asyncio.gather(publish(), chaos())
        await stack.events_for({c.id for c in commands}, events, within=plan.settle_s)
    finally:
        replicas.stop_all()
    report.seconds = time.monotonic() - started
    judge(stack, tenant, documents, commands, events, report)
    return report


def describe(events: list[dict[str, Any]], command_id: str) -> str:
    said = [e for e in events if e["data"]["command_id"] == command_id and is_outcome(e)]
    return (
        "; ".join(
            f"{e['type'].rsplit('.', 1)[1]} {e['data'].get('version_label') or e['data'].get('error', {}).get('code')}"
            f" attempts={e['data'].get('attempts')}"
            for e in said
        )
        or "none"
    )


def failure_code(events: list[dict[str, Any]], command_id: str) -> str:
    for event in events:
        if event["data"]["command_id"] == command_id and event["type"].endswith(".failed"):
            return str(event["data"]["error"]["code"])
    return "?"


def judge(
    stack: Stack,
    tenant: uuid.UUID,
    documents: list[uuid.UUID],
    commands: list[Any],
    events: list[dict[str, Any]],
    report: ChaosReport,
) -> None:
    outcomes: dict[str, set[tuple[str, Any]]] = {}
    for event in (e for e in events if is_outcome(e)):  # retry notices are no outcome
        outcomes.setdefault(event["data"]["command_id"], set()).add((event["type"], event["data"].get("object_id")))
    report.commands = len(commands)
    succeeded: set[str] = set()
    for command in commands:
        seen = outcomes.get(command.id)
        if not seen:
            report.lost.append(command.id)
        elif len(seen) > 1:
            report.conflicting.append(command.id)
        elif next(iter(seen))[0] == "dms.upload.succeeded":
            succeeded.add(command.id)
        else:
            report.failed += 1
            report.failed_codes[failure_code(events, command.id)] += 1
    report.succeeded = len(succeeded)
    repo = stack.repository(tenant)
    content = stack.emulator.emulator.state.content
    for doc in documents:
        series = repo.series_by_name.get(str(doc))
        stored = [content.get(v.content_id) for v in (series.versions if series else [])]
        numbers = [int((body or b"-1:-1").decode().rsplit(":", 1)[1]) for body in stored]
        if len(set(numbers)) != len(numbers):
            report.written_twice.append(str(doc))
        want = [n for n, c in enumerate(c for c in commands if c.data.document_id == doc) if c.id in succeeded]
        if numbers != want:
            report.out_of_order[str(doc)] = numbers
            report.reported[str(doc)] = [describe(events, c.id) for c in commands if c.data.document_id == doc]
