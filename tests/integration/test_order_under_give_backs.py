"""Per-document order when a replica stops or dies holding a document's earlier command in retry backoff and a
later one behind it, and a document waits only for its own earlier commands: other documents of the same
queue pass one in backoff. Replicas are real processes; what is checked is the history DMS recorded."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from worker.producer import upload_command

from .conftest import Stack, StackFactory
from .replicas import Replicas

pytestmark = pytest.mark.integration


def contents(stack: Stack, tenant: uuid.UUID, document: uuid.UUID) -> list[bytes | None]:
    series = stack.repository(tenant).series_by_name.get(str(document))
    versions = series.versions if series else []
    assert [v.label for v in versions] == [f"{n}.0" for n in range(1, len(versions) + 1)]
    return [stack.emulator.emulator.state.content.get(v.content_id) for v in versions]


def count_in(path: Path, event: str) -> int:
    return path.read_text().count(f'"event": "{event}"') if path.exists() else 0


async def log_lines(path: Path, event: str, count: int, timeout: float = 30) -> None:
    """Waits until the replica's JSON log has ``count`` lines of ``event`` (polled: it is another process)."""
    async with asyncio.timeout(timeout):
        while await asyncio.to_thread(count_in, path, event) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


def outcomes(events: list[dict[str, Any]]) -> dict[str, set[str]]:
    seen: dict[str, set[str]] = {}
    for event in events:
        seen.setdefault(event["data"]["command_id"], set()).add(json.dumps(event["data"].get("object_id")))
    return seen


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm-past-grace", "sigkill"])
async def test_a_replica_ending_while_documents_retry_gives_their_commands_back_in_order(
    make_stack: StackFactory, tmp_path: Path, how: signal.Signals
) -> None:
    """Six documents, two uploads each; the first of each is in retry backoff (DMS answers 503) and the second
    waits behind it when the replica ends: past its 1 s drain grace (SIGTERM) or at once (SIGKILL)."""
    stack = await make_stack(shard_count=1, retry_delays_ms=[3_000, 3_000, 3_000], shutdown_grace_s=1)
    await stack.worker.stop()
    tenant = uuid.uuid4()
    replicas = Replicas(stack.settings, tmp_path)
    replicas.start(1)
    events: list[dict[str, Any]] = []
    try:
        events += [await stack.run(upload_command(tenant, uuid.uuid4(), "w.txt", "text/plain", b"w"), timeout=30)]
        documents = [uuid.uuid4() for _ in range(6)]
        await stack.set_faults(error_rate=1.0, error_statuses=[503])
        commands = [
            upload_command(tenant, doc, "a.txt", "text/plain", f"{doc}:{n}".encode())
            for n in (1, 2)
            for doc in documents
        ]
        for command in commands:
            await stack.send(command)
        await log_lines(tmp_path / "replica-0.log", "command_retry_scheduled", len(documents))
        replicas.signal(0, how)
        replicas.processes[0].wait(timeout=15)
        await stack.set_faults(error_rate=0.0)
        replicas.restart(0)
        await stack.events_for({c.id for c in commands}, events, within=60)
    finally:
        replicas.stop_all()
    assert all(len(o) == 1 for o in outcomes(events).values()), "a command was written twice"
    assert {e["data"]["command_id"] for e in events} >= {c.id for c in commands}
    for doc in documents:
        assert contents(stack, tenant, doc) == [f"{doc}:1".encode(), f"{doc}:2".encode()]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("replica_count", [1, 3])
async def test_a_document_in_retry_backoff_holds_back_only_its_own_later_commands(
    make_stack: StackFactory, tmp_path: Path, replica_count: int
) -> None:
    """X's second upload meets three 503s on checkOut (retries 4 s apart); Y, published after it into the
    same queue, is stored at once; X's third upload lands after X's second. With 3 replicas the holder of
    the queue is then killed while X is parked: the next holder finishes X in order."""
    stack = await make_stack(shard_count=1, retry_delays_ms=[4_000, 4_000, 4_000])
    await stack.worker.stop()
    tenant, x, y = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    replicas = Replicas(stack.settings, tmp_path)
    replicas.start(replica_count)
    events: list[dict[str, Any]] = []
    try:
        events += [await stack.run(upload_command(tenant, x, "x.txt", "text/plain", b"x1"), timeout=30)]
        await stack.set_faults(
            scripted=[{"kind": "status", "status": 503, "times": 3, "path_prefix": "/browser", "action": "checkOut"}]
        )
        x2 = upload_command(tenant, x, "x.txt", "text/plain", b"x2")
        y1 = upload_command(tenant, y, "y.txt", "text/plain", b"y1")
        x3 = upload_command(tenant, x, "x.txt", "text/plain", b"x3")
        await stack.send(x2)
        await asyncio.sleep(0.5)  # x2 has met its first 503 and is parked
        published = time.monotonic()
        await stack.send(y1)
        await stack.send(x3)
        (event,) = await stack.next_events(1, timeout=10)
        waited = time.monotonic() - published
        events.append(event)
        assert event["data"]["command_id"] == y1.id and event["type"] == "dms.upload.succeeded"
        assert waited < 1.0, f"Y waited {waited:.2f} s behind X's retries"
        if replica_count > 1:  # kill whoever holds the queue: the one whose log shows X's retry
            (holder,) = [
                i
                for i in range(replica_count)
                if "command_retry_scheduled" in (tmp_path / f"replica-{i}.log").read_text()
            ]
            replicas.signal(holder, signal.SIGKILL)
            replicas.processes[holder].wait(timeout=15)
        await stack.events_for({x2.id, x3.id}, events, within=60)
    finally:
        replicas.stop_all()
    assert all(len(o) == 1 for o in outcomes(events).values()), "a command was written twice"
    assert contents(stack, tenant, x) == [b"x1", b"x2", b"x3"]
    assert contents(stack, tenant, y) == [b"y1"]
