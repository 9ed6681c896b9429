"""Losing a RabbitMQ node mid-run, on a real 3-node cluster with quorum queues on all three nodes.

Each test runs two worker replicas (OS processes) connected to different nodes, publishes 300 uploads over
10 documents through the producer helper (itself on a multi-address connection), does its damage, and then
checks: every command has exactly one terminal outcome (a repeated success event names the same object id
and version label), versions are contiguous and in publish order per document, the DLQ is empty and no
queue holds a message.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel

from worker.amqp import topology
from worker.amqp.connection import connect_robust
from worker.amqp.names import shard_queue_name
from worker.contracts import UploadCommand
from worker.dms.destinations import Destination
from worker.producer import publish_command, upload_command
from worker.settings import Settings
from worker.testing.emulator import EmulatorConfig, RunningEmulator, serve_emulator

from ..integration.replicas import Replicas
from .nodes import Cluster

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

COMMANDS = 300
DOCUMENTS = 10
SHARDS = 8


@dataclass
class Run:
    cluster: Cluster
    settings: Settings
    emulator: RunningEmulator
    channel: AbstractChannel
    commands: list[UploadCommand]
    documents: list[tuple[uuid.UUID, uuid.UUID]]
    log_dir: Path
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    replicas: list[Replicas] = field(default_factory=list)
    fault_at: float | None = None
    started: float = field(default_factory=time.monotonic)
    figures: dict[str, Any] = field(default_factory=dict)

    def done(self) -> set[str]:
        return {event["data"]["command_id"] for _, event in self.events}

    async def wait_for(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while len(self.done()) < count:
            assert time.monotonic() < deadline, f"only {len(self.done())} of {count} commands done"
            await asyncio.sleep(0.05)

    def replica_log(self, index: int) -> str:
        return (self.log_dir / f"replica{index}" / "replica-0.log").read_text()


def settings_for(prefix: str, emulator: RunningEmulator, urls: list[str]) -> Settings:
    return Settings(
        _env_file=None,
        amqp_urls=urls,
        command_exchange=f"{prefix}.commands",
        command_queue=f"{prefix}.commands",
        result_exchange=f"{prefix}.results",
        results_queue=f"{prefix}.results.all",
        dead_letter_queue=f"{prefix}.dlq",
        shard_count=SHARDS,
        in_flight_limit=8,
        membership_heartbeat_s=1.0,
        retry_delays_ms=[200, 400, 800, 1600, 3200],
        destination=Destination.model_validate(emulator.service_key()),
        log_json=True,
        http_port=0,
    )


@asynccontextmanager
async def running(cluster: Cluster, log_dir: Path, pace_s: float = 0.025) -> AsyncIterator[Run]:
    """Topology declared through node 1 (so node 1 leads the queues), two replicas on nodes 2 and 3, a
    results collector, and 300 uploads being published; everything removed afterwards."""
    prefix = f"cluster.{uuid.uuid4().hex[:8]}"
    async with serve_emulator(EmulatorConfig()) as emulator:
        settings = settings_for(prefix, emulator, cluster.urls(1))
        connection = await connect_robust(settings.broker_urls())
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await topology.declare(channel, settings)
        for name, (_leader, members, _online) in cluster.quorum_queues(1, prefix).items():
            assert members == {1, 2, 3}, f"{name} is not replicated on all three nodes: {members}"
        tenants = [uuid.uuid4(), uuid.uuid4()]
        documents = [(tenants[i % 2], uuid.uuid4()) for i in range(DOCUMENTS)]
        commands = []
        for n in range(COMMANDS):
            tenant, doc = documents[n % DOCUMENTS]
            commands.append(upload_command(tenant, doc, f"rev-{n}.txt", "text/plain", f"upload {n}".encode()))
        run = Run(cluster, settings, emulator, channel, commands, documents, log_dir)
        emulator.emulator.faults.config.update({"latency_ms": 40})  # a run long enough to be hit mid-way

        results = await channel.declare_queue(settings.results_queue, passive=True)

        async def collect(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                run.events.append((time.monotonic(), json.loads(message.body)))

        await results.consume(collect)
        for index, first_node in enumerate((2, 3)):
            replica_dir = log_dir / f"replica{index}"
            replica_dir.mkdir()
            replicas = Replicas(settings_for(prefix, emulator, cluster.urls(first_node)), replica_dir)
            replicas.start(1)
            run.replicas.append(replicas)

        async def publish_all() -> None:
            for command in commands:
                await publish_command(channel, command, settings.command_exchange)
                await asyncio.sleep(pace_s)  # spread out, so publishing goes on through the fault

        publishing = asyncio.create_task(publish_all())
        try:
            yield run
            await publishing
        finally:
            publishing.cancel()
            for replicas in run.replicas:
                replicas.stop_all()
            await asyncio.gather(publishing, return_exceptions=True)
            # The topology stays: deleting a quorum queue waits for its member on a dead node, and the
            # whole cluster is removed after the session anyway.
            await connection.close()


async def finish_and_check(run: Run) -> dict[str, Any]:
    await run.wait_for(COMMANDS, timeout=180)
    for replicas in run.replicas:
        replicas.stop_all()  # SIGTERM: drained; anything unacked goes back to its queue
    for index, replicas in enumerate(run.replicas):
        assert replicas.processes[0].returncode == 0, f"replica {index} exited with {replicas.processes[0].returncode}"
    await asyncio.sleep(1)  # a last repeated event may still be on its way

    # Exactly one terminal outcome per command; a repeat names the same object and version.
    outcomes: dict[str, set[tuple[str, str, str]]] = defaultdict(set)
    for _, event in run.events:
        data = event["data"]
        outcomes[data["command_id"]].add((event["type"], data.get("object_id", ""), data.get("version_label", "")))
    assert set(outcomes) == {c.id for c in run.commands}
    differing = {c: o for c, o in outcomes.items() if len(o) != 1}
    assert not differing, f"commands with different outcomes: {differing}"
    assert {next(iter(o))[0] for o in outcomes.values()} == {"dms.upload.succeeded"}

    # Versions contiguous and in publish order per document.
    published: dict[uuid.UUID, list[bytes]] = defaultdict(list)
    for n, command in enumerate(run.commands):
        published[command.data.document_id].append(f"upload {n}".encode())
    state = run.emulator.emulator.state
    for tenant, doc in run.documents:
        (repo,) = [r for r in state.zone_repositories("default-zone") if r.external_id == str(tenant)]
        series = repo.series_by_name[str(doc)]
        assert [v.label for v in series.versions] == [f"{i}.0" for i in range(1, COMMANDS // DOCUMENTS + 1)]
        assert [state.content.get(v.content_id) for v in series.versions] == published[doc]

    # The DLQ is empty and no queue holds a message (counts can lag a moment after a node came back).
    names = [run.settings.dead_letter_queue, *(shard_queue_name(run.settings.command_queue, i) for i in range(SHARDS))]
    deadline = time.monotonic() + 15
    while True:
        counts = {}
        for name in names:
            declared = await (await run.channel.get_underlay_channel()).queue_declare(name, passive=True)
            counts[name] = declared.message_count
        if not any(counts.values()) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert not any(counts.values()), counts

    logs = [run.replica_log(i) for i in range(len(run.replicas))]
    figures = {
        "commands": COMMANDS,
        "result_events": len(run.events),
        "repeated_result_events": len(run.events) - COMMANDS,
        "duplicates_absorbed_by_marker": sum(log.count('"version_already_written"') for log in logs),
        "deliveries_left_to_redelivery": sum(log.count('"delivery_lost_before_start"') for log in logs),
        "reconnects": sum(log.count('"broker_reconnected"') for log in logs),
        **run.figures,
    }
    reconnect_times = [t for log in logs for t in reconnect_durations(log)]
    if reconnect_times:
        figures["replica_reconnect_s"] = round(max(reconnect_times), 2)
    times = sorted(t for t, _ in run.events)
    figures["first_result_at_s"] = round(times[0] - run.started, 2)
    figures["last_result_at_s"] = round(times[-1] - run.started, 2)
    figures["checked_at_s"] = round(time.monotonic() - run.started, 2)
    if run.fault_at is not None:
        figures["kill_at_s"] = round(run.fault_at - run.started, 2)
        after = sorted(t for t, _ in run.events if t > run.fault_at)
        print(figures)
        before = max(t for t, _ in run.events if t <= run.fault_at)
        gaps = [b - a for a, b in zip([before, *after], after, strict=False)]
        figures["first_result_after_kill_s"] = round(after[0] - run.fault_at, 2)
        figures["longest_pause_in_results_s"] = round(max(gaps), 2)
    print(f"\ncluster figures: {json.dumps(figures)}")
    return figures


def reconnect_durations(log: str) -> list[float]:
    """Seconds from each lost connection to the next established one, from a replica's JSON log."""
    lost_at: float | None = None
    durations = []
    for line in log.splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        if entry.get("event") == "broker_connection_lost" and lost_at is None:
            lost_at = dt.datetime.fromisoformat(entry["timestamp"]).timestamp()
        elif entry.get("event") == "broker_reconnected" and lost_at is not None:
            durations.append(dt.datetime.fromisoformat(entry["timestamp"]).timestamp() - lost_at)
            lost_at = None
    return durations


def leaders(run: Run, asked: int) -> dict[int, int]:
    """node -> how many shard queues it leads."""
    counts: dict[int, int] = defaultdict(int)
    for name, (leader, _members, _online) in run.cluster.quorum_queues(asked, run.settings.command_queue).items():
        if ".shard." in name:
            counts[leader] += 1
    return dict(counts)


async def kill(run: Run, node: int) -> None:
    """kill -9 mid-run: at least a sixth of the commands are still to do."""
    run.fault_at = time.monotonic()
    run.figures["undone_at_kill"] = COMMANDS - len(run.done())
    assert run.figures["undone_at_kill"] >= COMMANDS // 6, "the run was nearly over before the kill"
    await asyncio.to_thread(run.cluster.kill, node)


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


async def test_killing_the_node_a_replica_is_connected_to(all_nodes_up: Cluster, tmp_path: Path, record_property):
    async with running(all_nodes_up, tmp_path) as run:
        await run.wait_for(COMMANDS // 3)
        await kill(run, 2)  # replica 0 is connected to node 2
        figures = await finish_and_check(run)
    log = run.replica_log(0)
    assert '"broker_connection_lost"' in log and '"broker_reconnected"' in log, "replica 0 never moved"
    for key, value in figures.items():
        record_property(key, value)


async def test_killing_the_node_that_leads_the_shard_queues(all_nodes_up: Cluster, tmp_path: Path, record_property):
    async with running(all_nodes_up, tmp_path) as run:
        before = await in_thread(leaders, run, 2)
        await run.wait_for(COMMANDS // 3)
        leader = max(before, key=lambda n: before[n])
        run.figures["shard_queues_led_by_killed_node"] = before[leader]
        await kill(run, leader)
        figures = await finish_and_check(run)
        survivor = next(n for n in (1, 2, 3) if n != leader)
        after = await in_thread(leaders, run, survivor)
        assert leader not in after and sum(after.values()) == SHARDS, after
    for key, value in figures.items():
        record_property(key, value)


async def test_a_killed_node_rejoins_while_work_goes_on(all_nodes_up: Cluster, tmp_path: Path, record_property):
    async with running(all_nodes_up, tmp_path, pace_s=0.06) as run:
        await run.wait_for(COMMANDS // 4)
        await kill(run, 2)
        done_at_kill = len(run.done())
        await run.wait_for(done_at_kill + 30)  # work goes on without it
        started = time.monotonic()
        await in_thread(run.cluster.restart, 2)
        deadline = time.monotonic() + 60
        while await in_thread(run.cluster.running_nodes, 1) != {1, 2, 3}:
            assert time.monotonic() < deadline, "node 2 did not rejoin"
            await asyncio.sleep(0.5)
        run.figures["rejoin_s"] = round(time.monotonic() - started, 2)
        run.figures["undone_at_rejoin"] = COMMANDS - len(run.done())
        assert run.figures["undone_at_rejoin"] >= 30, "the run was over before the node was back"
        figures = await finish_and_check(run)
        deadline = time.monotonic() + 60
        while True:
            queues = await in_thread(run.cluster.quorum_queues, 1, run.settings.command_queue)
            lagging = {name: online for name, (_l, _m, online) in queues.items() if online != {1, 2, 3}}
            if not lagging or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        assert not lagging, f"quorum queue members not back online: {lagging}"
    for key, value in figures.items():
        record_property(key, value)
