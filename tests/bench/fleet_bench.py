"""Benchmarks for the broker-routed fleet: scaling with replicas, fairness between tenants, same-document
chains and memory under a backlog of large files. Each prints a table; none is a timed test.

    python -m tests.bench scaling    # 1, 2, 3 replicas at DMS latency 1,000 ms, default settings
    python -m tests.bench fairness   # tenant A's 10,000 uploads, then 5 of tenant B's, 1 and 3 replicas
    python -m tests.bench chains     # 10 documents x 20 versions at DMS latency 50 ms
    python -m tests.bench backlog    # 64 x 9.5 MB uploads queued before one replica starts (k8s settings)
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aio_pika
import yaml

from tests.bench.emulator_bench import wait_until_up
from tests.bench.worker_bench import Emulator, bench_settings, cleanup, open_driver, peak_rss_mb, replica_env
from tests.routing_oracle import shards_of
from worker.amqp.names import members_exchange_name, shard_queue_name
from worker.amqp.routing import LANES, routing_key
from worker.contracts import Command
from worker.producer import publish_command, upload_command
from worker.results.following import is_outcome
from worker.settings import Settings

T = TypeVar("T")
K8S_DEPLOYMENT = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "deployment.yaml"
MANAGEMENT = "http://127.0.0.1:15672/api"


@dataclass
class Driver:
    """Publishes commands and records, per command id, when it was sent and when its result came."""

    settings: Settings
    sent: dict[str, float] = field(default_factory=dict)
    done: dict[str, float] = field(default_factory=dict)
    failed: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    notices: list[dict[str, Any]] = field(default_factory=list)

    async def __aenter__(self) -> Driver:
        self._connection = await aio_pika.connect(self.settings.amqp_url.get_secret_value())
        results, self.channel = await open_driver(self._connection, self.settings)
        await results.consume(self._on_result, no_ack=True)
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._connection.close()

    async def _on_result(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        event = json.loads(message.body)
        if not is_outcome(event):  # a retry notice
            self.notices.append(event)
            return
        self.events.append(event)
        command_id = event["data"]["command_id"]
        self.done.setdefault(command_id, time.perf_counter())
        if event["type"].endswith(".failed"):
            self.failed.append(event["data"])

    async def send(self, command: Command) -> None:
        self.sent[command.id] = time.perf_counter()
        await publish_command(self.channel, command, self.settings.command_exchange)

    async def wait_for(self, ids: list[str], timeout: float = 1800) -> None:
        deadline = time.perf_counter() + timeout
        while any(i not in self.done for i in ids):
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{sum(i not in self.done for i in ids)} commands without a result")
            await asyncio.sleep(0.05)

    async def settled(self, command: Command) -> None:
        """Sends one command and waits for its result (a warm-up: token, repository)."""
        await self.send(command)
        await self.wait_for([command.id])

    async def steady_rate_of(self, commands: Sequence[Command]) -> float:
        """Sends ``commands`` at once, waits for all their results, and returns their steady rate."""
        for command in commands:
            await self.send(command)
        ids = [c.id for c in commands]
        await self.wait_for(ids)
        return self.steady_rate(ids)

    def latency(self, command_id: str) -> float:
        return self.done[command_id] - self.sent[command_id]

    def steady_rate(self, ids: list[str]) -> float:
        """Results per second between the 10th and the 90th percentile of completion: start-up and the
        last round trip do not count."""
        finished = sorted(self.done[i] for i in ids)
        low, high = finished[len(finished) // 10], finished[(len(finished) * 9) // 10]
        return ((len(finished) * 9) // 10 - len(finished) // 10) / (high - low)


class Fleet:
    """Worker replicas as processes (``python -m worker run``) with the given settings."""

    def __init__(self, settings: Settings, replicas: int, extra_env: dict[str, str] | None = None) -> None:
        env = replica_env(settings) | (extra_env or {})
        self.processes = [
            subprocess.Popen([sys.executable, "-m", "worker", "run"], env=env, stdout=subprocess.DEVNULL)
            for _ in range(replicas)
        ]

    def peak_rss_mb(self) -> list[float]:
        return [rss for p in self.processes if (rss := peak_rss_mb(p.pid)) is not None]

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait()


def settings_for_run(emulator: Emulator, **overrides: Any) -> Settings:
    settings = bench_settings(emulator, f"bench.{uuid.uuid4().hex[:8]}", Settings(_env_file=None).in_flight_limit)
    return settings.model_copy(update=overrides)


async def settle_fleet(seconds: float = 3.0, settings: Settings | None = None, replicas: int = 0) -> None:
    """Replicas declare the topology, learn of each other and take their shards: with ``settings``, until
    their heartbeats show ``replicas`` members holding every shard once, evenly (at most 60 s)."""
    await asyncio.sleep(seconds)
    if settings is None:
        return
    for _ in range(60):
        held = await holdings(settings)
        counts = sorted(len(h) for h in held.values())
        shards = sorted(s for h in held.values() for s in h)
        if len(held) == replicas and shards == list(range(settings.shard_count)) and counts[-1] - counts[0] <= 1:
            return


async def holdings(settings: Settings, listen_s: float = 1.0) -> dict[str, list[int]]:
    """The shards each replica announced holding in its heartbeats over ``listen_s``."""
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            members_exchange_name(settings.command_queue), aio_pika.ExchangeType.FANOUT, auto_delete=True
        )
        inbox = await channel.declare_queue(exclusive=True, auto_delete=True)
        await inbox.bind(exchange)
        await asyncio.sleep(listen_s)
        held: dict[str, list[int]] = {}
        while (message := await inbox.get(no_ack=True, fail=False)) is not None:
            beat = json.loads(message.body)
            held[beat["member"]] = beat["holds"]
        return held


async def lanes_per_replica(settings: Settings, tenant: uuid.UUID) -> list[int]:
    """How many of the tenant's lanes each replica's shards take (a lone tenant's work splits so), most first."""
    keys = [f"{tenant}.{lane}" for lane in range(LANES)]
    where, held = await asyncio.gather(
        shards_of(settings.amqp_url.get_secret_value(), settings.shard_count, keys), holdings(settings)
    )
    return sorted((sum(where[k] in set(shards) for k in keys) for shards in held.values()), reverse=True)


def management_get(path: str) -> Any:
    """A management API resource of the local broker (raises OSError if the API does not answer)."""
    request = urllib.request.Request(f"{MANAGEMENT}/{path}")
    request.add_header("Authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")  # guest:guest, the local broker
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def ensure_management_api() -> bool:
    """The publish counters come from the management API: enables its plugin on a local node if need be
    (as dev.sh does for the sharding plugin). False if it cannot be had."""

    def up() -> bool:
        try:
            management_get("overview")
        except OSError:
            return False
        return True

    if up():
        return True
    print("enabling the rabbitmq_management plugin for publish counters", file=sys.stderr)
    try:
        subprocess.run(
            ["rabbitmq-plugins", "enable", "--quiet", "rabbitmq_management"],
            check=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"management plugin not enabled ({exc!r}): writes per command not measured", file=sys.stderr)
        return False
    for _ in range(30):
        if up():
            return True
        time.sleep(1)
    return False


def publishes_into(settings: Settings) -> int | None:
    """Messages published into the shard queues, from the management API (None if it is not enabled)."""
    total = 0
    try:
        for n in range(settings.shard_count):
            name = urllib.parse.quote(shard_queue_name(settings.command_queue, n), safe="")
            stats = management_get(f"queues/%2F/{name}").get("message_stats", {})
            total += int(stats.get("publish", 0))
    except OSError:
        return None
    return total


# -- scaling ---------------------------------------------------------------------------------------


async def per_fleet_size(
    replica_counts: list[int],
    latency_ms: int,
    run: Callable[[Settings, Fleet, int], Awaitable[T]],
    delay: str = "latency_ms",
) -> list[T]:
    """``run`` once for each fleet size, each against a fresh topology, the emulator answering after
    ``latency_ms`` (``delay``: the emulator's fault setting that plays it, see the README)."""
    emulator = Emulator()
    rows = []
    try:
        await wait_until_up(emulator.base)
        await emulator.call("POST", "_emulator/faults", {delay: latency_ms})
        for replicas in replica_counts:
            settings = settings_for_run(emulator)
            fleet = Fleet(settings, replicas)
            try:
                await settle_fleet(settings=settings, replicas=replicas)
                rows.append(await run(settings, fleet, replicas))
            finally:
                fleet.stop()
                await cleanup(settings)
    finally:
        emulator.close()
    return rows


async def scaling(uploads: int, replica_counts: list[int], latency_ms: int, delay: str = "answer_ms") -> None:
    async def run(settings: Settings, fleet: Fleet, replicas: int) -> tuple[Any, ...]:
        async with Driver(settings) as driver:
            tenant = uuid.uuid4()
            split = await lanes_per_replica(settings, tenant)
            commands = [upload_command(tenant, uuid.uuid4(), "s.txt", "text/plain", b"scale") for _ in range(uploads)]
            for command in commands:
                await driver.send(command)
            ids = [c.id for c in commands]
            await driver.wait_for(ids)
            await asyncio.sleep(6)  # the management API's counters are refreshed every 5 s
            rate = driver.steady_rate(ids)
        print(f"scaling x{replicas}: {rate:.1f}/s", file=sys.stderr)
        peak = max(fleet.peak_rss_mb())
        lanes = "/".join(map(str, split))
        return replicas, uploads, rate, lanes, publishes_into(settings), len(driver.events), len(driver.failed), peak

    ensure_management_api()
    rows = await per_fleet_size(replica_counts, latency_ms, run, delay)
    one = rows[0][2]
    defaults = Settings(_env_file=None)
    print(
        f"DMS latency {latency_ms} ms (emulator {delay}), in-flight limit {defaults.in_flight_limit} "
        f"per replica, {defaults.shard_count} shards, one tenant"
    )
    print(
        "| replicas | uploads | steady uploads/s | x one replica | tenant's lanes per replica at start "
        "| writes into shard queues | result events | failed | peak RSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for replicas, count, rate, lanes, publishes, events, failed, rss in rows:
        writes = (
            "n/a (management plugin off)" if publishes is None else f"{publishes} ({publishes / count:.2f} per command)"
        )
        print(
            f"| {replicas} | {count} | {rate:.1f} | {rate / one:.2f} | {lanes} | {writes} | {events} | {failed} "
            f"| {rss:.0f} |"
        )


# -- fairness --------------------------------------------------------------------------------------


async def fairness(bulk: int, alone: int, replica_counts: list[int], latency_ms: int) -> None:
    async def run(settings: Settings, _fleet: Fleet, replicas: int) -> tuple[Any, ...]:
        return (replicas, *await fairness_run(settings, bulk, alone))

    rows = await per_fleet_size(replica_counts, latency_ms, run)
    print(
        f"DMS latency {latency_ms} ms, default settings; tenant A: {bulk} uploads, then tenant B: 5 uploads 0.5 s apart"
    )
    print(
        "| replicas | B publish-to-result s (each) | B median s | B idle s | B shards shared with A "
        "| A alone uploads/s | A with B uploads/s | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for replicas, b_latencies, idle, shared, rate_alone, rate_with in rows:
        each = ", ".join(f"{x:.2f}" for x in b_latencies)
        print(
            f"| {replicas} | {each} | {statistics.median(b_latencies):.2f} | {idle:.2f} | {shared} of 5 | "
            f"{rate_alone:.1f} | {rate_with:.1f} | {rate_with / rate_alone:.2f} |"
        )


async def behind_a_backlog(
    driver: Driver, tenant_a: uuid.UUID, alone: int, bulk: int, b_commands: Sequence[Command], spacing_s: float
) -> tuple[float, float]:
    """Tenant A's ``alone`` uploads measured alone, then A's ``bulk`` at once with ``b_commands`` published
    ``spacing_s`` apart right behind them; A's steady rate alone and with B (B's latencies are the driver's)."""
    solo = [upload_command(tenant_a, uuid.uuid4(), "a.txt", "text/plain", b"A") for _ in range(alone)]
    rate_alone = await driver.steady_rate_of(solo)
    backlog = [upload_command(tenant_a, uuid.uuid4(), "a.txt", "text/plain", b"A") for _ in range(bulk)]
    for command in backlog:
        await driver.send(command)
    for b_command in b_commands:
        await driver.send(b_command)
        await asyncio.sleep(spacing_s)
    await driver.wait_for([c.id for c in b_commands] + [c.id for c in backlog])
    return rate_alone, driver.steady_rate([c.id for c in backlog])


async def fairness_run(settings: Settings, bulk: int, alone: int) -> tuple[list[float], float, int, float, float]:
    tenant_a, tenant_b = uuid.uuid4(), uuid.uuid4()
    async with Driver(settings) as driver:
        idle = upload_command(tenant_b, uuid.uuid4(), "b.txt", "text/plain", b"B idle")
        await driver.send(idle)
        await driver.wait_for([idle.id])
        idle_latency = driver.latency(idle.id)

        b_commands = [upload_command(tenant_b, uuid.uuid4(), "b.txt", "text/plain", b"B") for _ in range(5)]
        rate_alone, rate_with = await behind_a_backlog(driver, tenant_a, alone, bulk, b_commands, spacing_s=0.5)
        b_latencies = [driver.latency(c.id) for c in b_commands]
    a_keys = [f"{tenant_a}.{lane}" for lane in range(LANES)]
    b_keys = [routing_key(tenant_b, c.data.document_id) for c in b_commands]
    where = await shards_of(settings.amqp_url.get_secret_value(), settings.shard_count, a_keys + b_keys)
    a_shards = {where[k] for k in a_keys}
    shared = sum(1 for k in b_keys if where[k] in a_shards)
    return b_latencies, idle_latency, shared, rate_alone, rate_with


# -- chains ----------------------------------------------------------------------------------------


@asynccontextmanager
async def one_replica(faults: dict[str, Any]) -> AsyncIterator[Settings]:
    """An emulator with ``faults`` and one replica holding every shard; all removed afterwards."""
    emulator = Emulator()
    try:
        await wait_until_up(emulator.base)
        await emulator.call("POST", "_emulator/faults", faults)
        settings = settings_for_run(emulator)
        fleet = Fleet(settings, 1)
        try:
            await settle_fleet(settings=settings, replicas=1)
            yield settings
        finally:
            fleet.stop()
            await cleanup(settings)
    finally:
        emulator.close()


async def chains(documents: int, versions: int, latency_ms: int) -> None:
    async with one_replica({"latency_ms": latency_ms}) as settings, Driver(settings) as driver:
        tenant, docs = uuid.uuid4(), [uuid.uuid4() for _ in range(documents)]
        await driver.settled(upload_command(tenant, uuid.uuid4(), "w.txt", "text/plain", b"w"))
        commands = [
            upload_command(tenant, doc, "c.txt", "text/plain", f"{doc} v{v}".encode())
            for v in range(1, versions + 1)
            for doc in docs
        ]
        started = time.perf_counter()
        for command in commands:
            await driver.send(command)
        await driver.wait_for([c.id for c in commands])
        seconds = max(driver.done[c.id] for c in commands) - started
        labels = {e["data"]["command_id"]: e["data"].get("version_label") for e in driver.events}
    in_order = all(
        labels[c.id] == f"{v}.0" for v in range(1, versions + 1) for c in commands[(v - 1) * documents : v * documents]
    )
    rate = len(commands) / seconds
    print(f"{documents} documents x {versions} versions, DMS latency {latency_ms} ms, one replica")
    print("| uploads | seconds | uploads/s | versions in publish order | failed |")
    print("|---|---|---|---|---|")
    print(f"| {len(commands)} | {seconds:.1f} | {rate:.1f} | {'yes' if in_order else 'NO'} | {len(driver.failed)} |")


# -- backlog of large files ------------------------------------------------------------------------


def k8s_environment() -> dict[str, str]:
    """The DMS_WORKER_* settings the Kubernetes Deployment gives the worker container."""
    for document in yaml.safe_load_all(K8S_DEPLOYMENT.read_text()):
        if document and document.get("kind") == "Deployment":
            (container,) = [c for c in document["spec"]["template"]["spec"]["containers"] if c["name"] == "worker"]
            return {e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e}
    return {}


async def backlog(count: int, size: int) -> None:
    emulator = Emulator()
    try:
        await wait_until_up(emulator.base)
        await emulator.call("POST", "_emulator/faults", {"latency_ms": 0})
        k8s = k8s_environment()
        settings = settings_for_run(emulator, max_file_size=size + 1024)
        async with Driver(settings) as driver:
            # The topology exists before the worker: declare it by running a replica once, briefly.
            first = Fleet(settings, 1, k8s)
            await settle_fleet(2)
            first.stop()
            tenant = uuid.uuid4()
            content = os.urandom(size // 2).hex().encode()[:size]
            commands = [upload_command(tenant, uuid.uuid4(), "big.txt", "text/plain", content) for _ in range(count)]
            for command in commands:
                await driver.send(command)
            fleet = Fleet(settings, 1, k8s)
            try:
                started = time.perf_counter()
                await driver.wait_for([c.id for c in commands])
                seconds = time.perf_counter() - started
                rss = fleet.peak_rss_mb()[0]
            finally:
                fleet.stop()
                await cleanup(settings)
    finally:
        emulator.close()
    limit = k8s.get("DMS_WORKER_IN_FLIGHT_LIMIT", "64 (default)")
    print(
        f"{count} uploads of {size / 1e6:.1f} MB queued before one replica starts; "
        f"k8s settings: in-flight limit {limit}"
    )
    print("| uploads | seconds | failed | peak RSS MB |")
    print("|---|---|---|---|")
    print(f"| {count} | {seconds:.1f} | {len(driver.failed)} | {rss:.0f} |")
