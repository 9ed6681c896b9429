"""Several worker processes on one queue: shared load, per-document order, nothing lost on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections import defaultdict
from pathlib import Path

import aio_pika
import pytest

from worker.amqp.names import members_exchange_name
from worker.contracts import UploadCommand
from worker.producer import upload_command

from .conftest import Stack, StackFactory
from .replicas import Replicas

pytestmark = pytest.mark.integration


@pytest.mark.timeout(240)
async def test_three_replicas_share_300_uploads_in_order_and_survive_a_sigterm(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    # The in-process worker of the fixture is stopped: only the three OS processes work here.
    stack = await make_stack(shard_count=6, in_flight_limit=8)
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
        await replicas.started(0)
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
    stack = await make_stack(shard_count=4, in_flight_limit=8)
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
        await stack.events_for({c.id for c in commands}, events, within=120)
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


async def holdings(stack: Stack, seconds: float) -> dict[str, set[int]]:
    """What each live replica announces it holds, from their heartbeats (the last one each sent)."""
    exchange = await stack.channel.declare_exchange(
        members_exchange_name(stack.settings.command_queue), aio_pika.ExchangeType.FANOUT, auto_delete=True
    )
    inbox = await stack.channel.declare_queue(exclusive=True, auto_delete=True)
    await inbox.bind(exchange)
    await asyncio.sleep(seconds)
    held: dict[str, set[int]] = {}
    while (message := await inbox.get(no_ack=True, fail=False)) is not None:
        beat = json.loads(message.body)
        if beat.get("leaving"):
            held.pop(beat["member"], None)
        else:
            held[beat["member"]] = set(beat["holds"])
    await inbox.delete(if_unused=False, if_empty=False)  # heartbeats keep arriving
    return held


async def settled(stack: Stack, replicas: int, timeout: float = 30) -> dict[str, set[int]]:
    """Waits until ``replicas`` members hold every shard once between them and nobody holds more than one
    shard more than another."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        held = await holdings(stack, 3 * stack.settings.membership_heartbeat_s)  # one missed: the next try
        counts = sorted(len(h) for h in held.values())
        every_shard_once = sorted(s for h in held.values() for s in h) == list(range(stack.settings.shard_count))
        if len(held) == replicas and every_shard_once and counts[-1] - counts[0] <= 1:
            return held
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not settled: {held}")


@pytest.mark.timeout(180)
async def test_replicas_settle_on_even_shares_and_split_a_leavers_shards_evenly(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    stack = await make_stack(shard_count=8, in_flight_limit=8)
    await stack.worker.stop()
    replicas = Replicas(stack.settings, tmp_path)
    replicas.start(3)
    tenant = uuid.uuid4()
    documents = [uuid.uuid4() for _ in range(8)]
    commands = [upload_command(tenant, documents[n % 8], "f.txt", "text/plain", f"{n}".encode()) for n in range(160)]
    try:
        # Membership moves, with no work queued (a backlog may also swap busy shards for idle ones).
        three = await settled(stack, 3)
        assert sorted(len(h) for h in three.values()) == [2, 3, 3]  # floor or ceil of 8/3
        replicas.signal(0, signal.SIGTERM)
        two = await settled(stack, 2)
        assert sorted(len(h) for h in two.values()) == [4, 4]
        for member, after in two.items():
            assert three[member] <= after  # nobody gave up a shard: only the leaver's moved
        replicas.start(1)
        three = await settled(stack, 3)
        assert sorted(len(h) for h in three.values()) == [2, 3, 3]
        for member, before in two.items():
            assert three[member] <= before  # the joiner took only its share from the others
        assert sum(len(two[m] - three[m]) for m in two) == min(len(h) for h in three.values())

        # A leave under load: order and exactly-once hold throughout.
        await stack.set_faults(latency_ms=10)
        for command in commands[:80]:
            await stack.send(command)
        events = await stack.next_events(20, timeout=60)
        replicas.signal(1, signal.SIGTERM)
        for command in commands[80:]:
            await stack.send(command)
        events += await stack.next_events(len(commands) - len(events), timeout=120)
        assert sorted(len(h) for h in (await settled(stack, 2)).values()) == [4, 4]
    finally:
        replicas.stop_all()
    by_command: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for event in events:
        assert event["type"] == "dms.upload.succeeded", event
        by_command[event["data"]["command_id"]].add((event["data"]["object_id"], event["data"]["version_label"]))
    assert set(by_command) == {c.id for c in commands} and all(len(v) == 1 for v in by_command.values())
    for doc in documents:
        series = stack.repository(tenant).series_by_name[str(doc)]
        assert [v.label for v in series.versions] == [f"{i}.0" for i in range(1, 21)]
        stored = [stack.emulator.emulator.state.content.get(v.content_id) for v in series.versions]
        assert stored == [f"{n}".encode() for n in range(160) if n % 8 == documents.index(doc)]
