"""Several worker processes on one queue: shared load, per-document order, nothing lost on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections import defaultdict
from pathlib import Path

import pytest

from worker.command_publishing import upload_command
from worker.contracts import UploadCommand

from .conftest import StackFactory
from .replicas import Replicas


@pytest.mark.timeout(240)
async def test_three_replicas_share_300_uploads_in_order_and_survive_a_sigterm(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    # The in-process worker of the fixture is stopped: only the three OS processes work here.
    stack = await make_stack(shard_count=6, prefetch=8)
    await stack.worker.stop()
    tenants = [uuid.uuid4() for _ in range(3)]
    documents = [(tenants[i % 3], uuid.uuid4()) for i in range(10)]
    commands: list[UploadCommand] = []
    for n in range(300):
        tenant, doc = documents[n % 10]
        commands.append(upload_command(tenant, doc, f"rev-{n}.txt", "text/plain", f"upload {n}".encode()))

    replicas = Replicas(stack.settings, tmp_path)
    replicas.start(3)
    try:
        await stack.set_faults(latency_ms=5)
        for command in commands:
            await stack.send(command)
        first = await stack.next_events(60, timeout=60)
        replicas.signal(0, signal.SIGTERM)  # mid-run: it drains and leaves; its shards fail over
        rest = await stack.next_events(240, timeout=120)
        await asyncio.sleep(1)
        assert stack.events.empty(), "a command produced a second result event"
    finally:
        replicas.stop_all()
    assert replicas.processes[0].returncode == 0
    written = [(tmp_path / f"replica-{i}.log").read_text().count('"document_written"') for i in range(3)]
    assert sum(written) >= 300 and sum(1 for n in written if n) >= 2, written  # the load was shared

    events = first + rest
    assert sorted(e["data"]["command_id"] for e in events) == sorted(c.id for c in commands)
    assert {e["type"] for e in events} == {"dms.upload.succeeded"}

    published: dict[uuid.UUID, list[bytes]] = defaultdict(list)
    for command in commands:
        published[command.data.document_id].append(f"upload {commands.index(command)}".encode())
    for tenant, doc in documents:
        series = stack.repository(tenant).series_by_name[str(doc)]
        labels = [v.label for v in series.versions]
        assert labels == [f"{i}.0" for i in range(1, 31)]  # contiguous, none duplicated
        stored = [stack.emulator.emulator.state.content.get(v.content_id) for v in series.versions]
        assert stored == published[doc]  # versions in publish order


@pytest.mark.timeout(240)
async def test_a_replica_killed_mid_upload_loses_nothing_and_duplicates_no_version(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    stack = await make_stack(shard_count=4, prefetch=8)
    await stack.worker.stop()
    tenant = uuid.uuid4()
    documents = [uuid.uuid4() for _ in range(6)]
    commands = [upload_command(tenant, documents[n % 6], "f.txt", "text/plain", f"{n}".encode()) for n in range(120)]
    replicas = Replicas(stack.settings, tmp_path)
    replicas.start(2)
    try:
        await stack.set_faults(latency_ms=20)
        for command in commands:
            await stack.send(command)
        events = await stack.next_events(30, timeout=60)
        replicas.signal(0, signal.SIGKILL)
        wanted = {c.id for c in commands}
        deadline = asyncio.get_running_loop().time() + 120
        while {e["data"]["command_id"] for e in events} != wanted and asyncio.get_running_loop().time() < deadline:
            try:
                events += await stack.next_events(1, timeout=2)
            except TimeoutError:
                continue
        await asyncio.sleep(1)
        while not stack.events.empty():
            events.append(stack.events.get_nowait())
    finally:
        replicas.stop_all()

    by_command: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for event in events:
        assert event["type"] == "dms.upload.succeeded", event
        by_command[event["data"]["command_id"]].add((event["data"]["object_id"], event["data"]["version_label"]))
    assert set(by_command) == {c.id for c in commands}
    assert all(len(results) == 1 for results in by_command.values())  # a repeat names the same version
    for doc in documents:
        series = stack.repository(tenant).series_by_name[str(doc)]
        assert [v.label for v in series.versions] == [f"{i}.0" for i in range(1, 21)]
        contents = [stack.emulator.emulator.state.content.get(v.content_id) for v in series.versions]
        assert contents == [f"{n}".encode() for n in range(120) if n % 6 == documents.index(doc)]
