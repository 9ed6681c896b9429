"""End-to-end benchmark: worker replicas (real processes) against RabbitMQ and the DMS emulator.

Measures uploads/s and p50/p99 latency from publishing a command to receiving its result event, peak
resident memory per replica, token fetches and DMS calls per upload; and runs the same workload through a
deliberately plain baseline (one message at a time, blocking HTTP) for the ratio.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp

from tests.bench.emulator_bench import free_port, pin, wait_until_up
from tests.environment import as_environment
from worker.amqp import topology
from worker.dms.destinations import Destination
from worker.producer import publish_command, upload_command
from worker.settings import Settings

SIZES = {"10 KB": 10 * 1024, "1 MB": 1024 * 1024, "10 MB": 10 * 1024 * 1024}
COUNTS = {"10 KB": 1500, "1 MB": 200, "10 MB": 40}
BASELINE_COUNTS = {"10 KB": 150, "1 MB": 60, "10 MB": 12}
MIB = 1024 * 1024
SETTLE_S = {"10 KB": 2.0, "1 MB": 5.0, "10 MB": 10.0}


@dataclass
class Run:
    mode: str
    replicas: int
    size: str
    latency_ms: int
    uploads: int
    seconds: float
    latencies: list[float]
    peak_rss_mb: float | None
    concurrency: int | None
    cpu_percent: float | None = None  # per replica, average over the run

    @property
    def rate(self) -> float:
        return self.uploads / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000


class Emulator:
    def __init__(self) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/"
        self.process = subprocess.Popen(
            [
                *pin(0),
                sys.executable,
                "-m",
                "worker.testing.emulator",
                "--port",
                str(self.port),
                "--max-content-size",
                str(64 * MIB),
            ],
            stderr=subprocess.DEVNULL,
        )

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        async with aiohttp.ClientSession() as http, http.request(method, self.base + path, json=body) as r:
            return await r.json()

    def service_key(self) -> dict[str, Any]:
        return {
            "uri": self.base,
            "uaa": {"clientid": "emulator-client", "clientsecret": "emulator-secret", "url": self.base.rstrip("/")},
        }

    def close(self) -> None:
        self.process.terminate()
        self.process.wait()


def bench_settings(emulator: Emulator, prefix: str, prefetch: int) -> Settings:
    return Settings(
        _env_file=None,
        destination=Destination.model_validate(emulator.service_key()),
        command_exchange=f"{prefix}.commands",
        command_queue=f"{prefix}.commands",
        result_exchange=f"{prefix}.results",
        results_queue=None,
        dead_letter_queue=f"{prefix}.dlq",
        in_flight_limit=prefetch,
        membership_heartbeat_s=0.3,
    )


def replica_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DMS_WORKER_")}
    env.update(as_environment(settings))
    env.update(DMS_WORKER_HTTP_PORT="0", DMS_WORKER_LOG_LEVEL="WARNING")
    return env


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


async def open_driver(
    connection: aio_pika.abc.AbstractConnection, settings: Settings
) -> tuple[aio_pika.abc.AbstractQueue, aio_pika.abc.AbstractChannel]:
    """An exclusive queue receiving every result event, and the channel to publish commands on."""
    channel = await connection.channel(publisher_confirms=True)
    results_exchange = await channel.declare_exchange(
        settings.result_exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    results = await channel.declare_queue(exclusive=True)
    await results.bind(results_exchange, routing_key="#")
    return results, channel


async def drive(settings: Settings, size: int, count: int) -> tuple[float, list[float]]:
    """Publishes ``count`` uploads of distinct documents and waits for every result event."""
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    async with connection:
        results, commands = await open_driver(connection, settings)
        tenant = uuid.uuid4()
        content = os.urandom(size // 2).hex().encode()[:size]
        sent: dict[str, float] = {}
        latencies: list[float] = []
        done = asyncio.Event()

        async def on_result(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                event = json.loads(message.body)
                started = sent.get(event["data"]["command_id"])
                if started is not None:
                    latencies.append(time.perf_counter() - started)
                    if event["type"] != "dms.upload.succeeded":
                        print(f"  ! {event['data'].get('error')}", file=sys.stderr)
                    if len(latencies) == count:
                        done.set()

        await results.consume(on_result)
        warm = upload_command(tenant, uuid.uuid4(), "warm.txt", "text/plain", b"x")
        sent[warm.id] = time.perf_counter()
        await publish_command(commands, warm, settings.command_exchange)
        while not latencies:
            await asyncio.sleep(0.05)
        latencies.clear()
        started = time.perf_counter()
        for _ in range(count):
            command = upload_command(tenant, uuid.uuid4(), "bench.txt", "text/plain", content)
            sent[command.id] = time.perf_counter()
            await publish_command(commands, command, settings.command_exchange)
        await asyncio.wait_for(done.wait(), timeout=900)
        return time.perf_counter() - started, latencies


async def cleanup(settings: Settings) -> None:
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    async with connection:
        await topology.delete_all(await connection.channel(), settings)


async def run_worker(emulator: Emulator, replicas: int, size_name: str, latency_ms: int, prefetch: int) -> Run:
    settings = bench_settings(emulator, f"bench.{uuid.uuid4().hex[:8]}", prefetch)
    await emulator.call("POST", "_emulator/faults", {"latency_ms": latency_ms})
    processes = [
        subprocess.Popen(
            [*(pin(1) if replicas == 1 else []), sys.executable, "-m", "worker", "run"],
            env=replica_env(settings),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(replicas)
    ]
    try:
        await asyncio.sleep(1.5)  # replicas declare the topology and share the shards
        cpu_before = sum(cpu_seconds(p.pid) for p in processes)
        seconds, latencies = await drive(settings, SIZES[size_name], COUNTS[size_name])
        cpu = (sum(cpu_seconds(p.pid) for p in processes) - cpu_before) / seconds / replicas * 100
        rss = [peak_rss_mb(p.pid) for p in processes]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait()
        await cleanup(settings)
    peak = max((r for r in rss if r is not None), default=None)
    return Run(
        "worker",
        replicas,
        size_name,
        latency_ms,
        COUNTS[size_name],
        seconds,
        latencies,
        peak,
        settings.in_flight_limit,
        cpu,
    )


async def run_baseline(emulator: Emulator, size_name: str, latency_ms: int) -> Run:
    settings = bench_settings(emulator, f"bench.{uuid.uuid4().hex[:8]}", 1)
    await emulator.call("POST", "_emulator/faults", {"latency_ms": latency_ms})
    process = subprocess.Popen(
        [*pin(1), sys.executable, "-m", "tests.bench.baseline"],
        env=replica_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    count = BASELINE_COUNTS[size_name]
    try:
        await asyncio.sleep(1.0)
        cpu_before = cpu_seconds(process.pid)
        seconds, latencies = await drive(settings, SIZES[size_name], count)
        cpu = (cpu_seconds(process.pid) - cpu_before) / seconds * 100
        rss = peak_rss_mb(process.pid)
    finally:
        process.terminate()
        process.wait()
        await cleanup(settings)
    return Run("baseline", 1, size_name, latency_ms, count, seconds, latencies, rss, 1, cpu)


async def calls_per_upload(emulator: Emulator) -> list[tuple[str, float, float]]:
    """DMS calls and token fetches per upload: first versions, new versions of the same documents, and new
    versions again from a replica started afresh (it knows none of the documents yet)."""
    settings = bench_settings(emulator, f"bench.{uuid.uuid4().hex[:8]}", 16)
    await emulator.call("POST", "_emulator/faults", {"latency_ms": 0})

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "worker", "run"],
            env=replica_env(settings),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    process = start()
    rows = []
    try:
        await asyncio.sleep(1.5)
        connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
        async with connection:
            results, commands = await open_driver(connection, settings)
            tenant, docs = uuid.uuid4(), [uuid.uuid4() for _ in range(50)]

            async def phase(batch: list[uuid.UUID]) -> tuple[float, float]:
                before = await emulator.call("GET", "_emulator/stats")
                for doc in batch:
                    await publish_command(
                        commands, upload_command(tenant, doc, "f.txt", "text/plain", b"x"), settings.command_exchange
                    )
                async with results.iterator() as iterator:
                    received = 0
                    async for message in iterator:
                        await message.ack()
                        received += 1
                        if received == len(batch):
                            break
                after = await emulator.call("GET", "_emulator/stats")
                calls = sum(after["calls"].values()) - sum(before["calls"].values())
                calls -= after["calls"].get("token", 0) - before["calls"].get("token", 0)
                tokens = after["tokens_issued"] - before["tokens_issued"]
                return calls / len(batch), tokens / len(batch)

            await phase([uuid.uuid4()])  # repository lookup and creation, once per tenant
            rows.append(("first version (repository known)", *await phase(docs)))
            rows.append(("later version (replica knows the document)", *await phase(docs)))
            process.terminate()
            process.wait()
            process = start()
            await asyncio.sleep(3)
            rows.append(("later version (replica restarted, 1 byte)", *await phase(docs)))
    finally:
        process.terminate()
        process.wait()
        await cleanup(settings)
    return rows


def print_tables(runs: list[Run], calls: list[tuple[str, float, float]]) -> None:
    baseline = {(r.size, r.latency_ms): r.rate for r in runs if r.mode == "baseline"}
    print(
        "| mode | replicas | file | DMS latency | uploads | uploads/s | p50 ms | p99 ms | peak RSS MB | "
        "concurrency | CPU % per replica | x baseline |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        ratio = r.rate / baseline[(r.size, r.latency_ms)] if (r.size, r.latency_ms) in baseline else None
        print(
            f"| {r.mode} | {r.replicas} | {r.size} | {r.latency_ms} ms | {r.uploads} | {r.rate:.1f} | "
            f"{r.percentile(0.5):.0f} | {r.percentile(0.99):.0f} | "
            f"{'-' if r.peak_rss_mb is None else f'{r.peak_rss_mb:.0f}'} | {r.concurrency} | "
            f"{'-' if r.cpu_percent is None else f'{r.cpu_percent:.0f}'} | "
            f"{'-' if ratio is None else f'{ratio:.1f}'} |"
        )
    print()
    print("| upload kind | DMS calls per upload | token fetches per upload |")
    print("|---|---|---|")
    for name, per_upload, tokens in calls:
        print(f"| {name} | {per_upload:.2f} | {tokens:.3f} |")


async def main(sizes: list[str], latencies: list[int], replica_counts: list[int], prefetch: int) -> None:
    emulator = Emulator()
    try:
        await wait_until_up(emulator.base)
        runs: list[Run] = []
        # Small files first, and a pause after each run: RabbitMQ is still writing out and compacting
        # after a burst of 13 MB messages, and that would be charged to whichever run comes next.
        for size in sizes:
            for latency in latencies:
                runs.append(await run_baseline(emulator, size, latency))
                print(f"baseline {size} {latency} ms: {runs[-1].rate:.1f}/s", file=sys.stderr)
                for replicas in replica_counts:
                    await asyncio.sleep(SETTLE_S[size])
                    runs.append(await run_worker(emulator, replicas, size, latency, prefetch))
                    print(f"worker x{replicas} {size} {latency} ms: {runs[-1].rate:.1f}/s", file=sys.stderr)
        calls = await calls_per_upload(emulator)
    finally:
        emulator.close()
    print_tables(runs, calls)
