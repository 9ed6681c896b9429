"""This worker against an idiomatic FastStream worker (``faststream_worker.py``) on the same box, one replica each.

    .venv/bin/pip install -e '.[dev,bench]'     # FastStream is in the bench extra only
    .venv/bin/python -m tests.bench faststream  # --uploads 1000 --latencies 0 50 --repetitions 2

Per DMS latency (the emulator's ``latency_ms`` fault), the two systems take turns, ``--repetitions`` times each
(worker, FastStream, worker, FastStream, ...), each on a topology of its own that is deleted after its run:
this worker's (128 shard quorum queues behind two ``x-modulus-hash`` exchanges), and FastStream's own topic
exchange with one durable quorum queue (``#``) that its subscriber declares. Both get the same kind of
commands, built and published by the project's producer (``upload_command`` + ``publish_command``: CloudEvents
JSON with ``content_base64``): a warm-up upload (token, the tenant's repository), then ``--uploads`` uploads of
10 KB to distinct documents of that tenant, published at once (256 publisher confirms outstanding, so the
driver publishes faster than either system consumes). Each system runs as its own process pinned to CPU 1
(the emulator to CPU 0) with 64 uploads in flight (the worker's in-flight limit, FastStream's prefetch).

Columns:

- uploads/s: steady rate, results per second between the 10th and the 90th percentile of completion
  (``Driver.steady_rate``), so start-up and the last round trip do not count.
- p50 ms, p99 ms: publish-to-result time of each upload (from just before its publish to the arrival of its
  result event at the driver). All uploads are published at once, so these mostly show how fast the backlog
  drains, not the latency of one upload on an idle system.
- worker CPU ms/upload: user + system CPU of the worker process (``/proc/<pid>/stat``) from the first publish
  to the last result, divided by the uploads.
- RabbitMQ CPU ms/upload: the same for the broker's ``beam.smp`` (the one listening on the AMQP port). It counts
  everything the broker did meanwhile, the driver's publishes and any other client's work on a shared broker
  included; the line under the table gives the broker's CPU per second while idle before the runs, to judge
  how much of it is background.
- ratio rows: worker / FastStream, medians over the repetitions (above 1 is the worker's more, so better for
  uploads/s and worse for the others).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import aio_pika
import aiormq

from tests.bench.emulator_bench import pin, wait_until_up
from tests.bench.fleet_bench import Driver, settle_fleet
from tests.bench.worker_bench import Emulator, bench_settings, cleanup, cpu_seconds, peak_rss_mb, replica_env
from worker.amqp.names import command_exchange_name
from worker.contracts import Command
from worker.producer import upload_command
from worker.settings import Settings

SYSTEMS = ("worker", "FastStream")
SIZE = 10 * 1024
IN_FLIGHT = 64  # the worker's default in-flight limit; FastStream's prefetch
SETTLE_S = 2.0  # between runs: the broker finishes with the last topology before the next one starts
IDLE_SAMPLE_S = 1.0
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Run:
    system: str
    latency_ms: int
    repetition: int
    uploads: int
    rate: float
    latencies: list[float]
    worker_cpu_s: float
    broker_cpu_s: float | None
    broker_idle_ms_per_s: float | None
    failed: int
    peak_rss_mb: float | None

    def percentile_ms(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000

    @property
    def p50(self) -> float:
        return self.percentile_ms(0.5)

    @property
    def p99(self) -> float:
        return self.percentile_ms(0.99)

    @property
    def worker_cpu_ms(self) -> float:
        return self.worker_cpu_s * 1000 / self.uploads

    @property
    def broker_cpu_ms(self) -> float | None:
        return None if self.broker_cpu_s is None else self.broker_cpu_s * 1000 / self.uploads


# -- the broker's process --------------------------------------------------------------------------------


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(fields[9])
    return inodes


def rabbitmq_pid(amqp_url: str) -> int | None:
    """The ``beam.smp`` that listens on the AMQP URL's port (this box may run test clusters' nodes too), or
    the default node's pid file; None if the broker is not local or cannot be told apart."""
    parts = urllib.parse.urlsplit(amqp_url)
    if parts.hostname not in {"127.0.0.1", "localhost", "::1"}:
        return None
    sockets = {f"socket:[{inode}]" for inode in _listening_inodes(parts.port or 5672)}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().strip() != "beam.smp":
                continue
            if any(os.readlink(fd) in sockets for fd in (proc / "fd").iterdir()):
                return int(proc.name)
        except OSError:  # gone, or not ours to look into
            continue
    pid_file = Path("/var/lib/rabbitmq/mnesia/rabbit@localhost.pid")
    try:
        pid = int(pid_file.read_text().strip())
        return pid if Path(f"/proc/{pid}/comm").read_text().strip() == "beam.smp" else None
    except (OSError, ValueError):
        return None


# -- the two systems -------------------------------------------------------------------------------------


def faststream_env(settings: Settings, emulator: Emulator) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DMS_WORKER_", "FASTSTREAM_WORKER_"))}
    env.update(
        FASTSTREAM_WORKER_AMQP_URL=settings.amqp_url.get_secret_value(),
        FASTSTREAM_WORKER_COMMAND_EXCHANGE=command_exchange_name(settings.command_exchange, "upload"),
        FASTSTREAM_WORKER_COMMAND_QUEUE=settings.command_queue,
        FASTSTREAM_WORKER_RESULT_EXCHANGE=settings.result_exchange,
        FASTSTREAM_WORKER_QUEUE_TYPE="quorum",
        FASTSTREAM_WORKER_PREFETCH=str(settings.in_flight_limit),
        FASTSTREAM_WORKER_SERVICE_KEY=json.dumps(emulator.service_key()),
        FASTSTREAM_WORKER_LOG_LEVEL="WARNING",
    )
    return env


def start(system: str, settings: Settings, emulator: Emulator, log: IO[bytes]) -> subprocess.Popen[bytes]:
    if system == "worker":
        command, env = ["-m", "worker", "run"], replica_env(settings)
    else:
        command, env = ["-m", "tests.bench.faststream_worker"], faststream_env(settings, emulator)
    return subprocess.Popen(
        [*pin(1), sys.executable, *command], env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=log
    )


async def consuming(settings: Settings, queue: str, timeout_s: float = 30) -> None:
    """Until ``queue`` exists and has a consumer (FastStream declares and binds it before it consumes)."""
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    async with connection:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            channel = await connection.channel()
            try:
                declared = await channel.declare_queue(queue, passive=True)
                if declared.declaration_result.consumer_count:
                    return
            except aiormq.exceptions.ChannelNotFoundEntity:
                pass
            finally:
                if not channel.is_closed:
                    await channel.close()
            await asyncio.sleep(0.2)
    raise TimeoutError(f"nothing consumes {queue} after {timeout_s:.0f} s")


async def delete_faststream_topology(settings: Settings) -> None:
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(settings.command_queue)
        await channel.exchange_delete(command_exchange_name(settings.command_exchange, "upload"))
        await channel.exchange_delete(settings.result_exchange)


# -- one run ---------------------------------------------------------------------------------------------


async def publish_all(driver: Driver, commands: Sequence[Command], confirms_in_flight: int = 256) -> None:
    """Publishes with many confirms outstanding: one at a time (~500/s here) would cap what is measured."""
    turns = asyncio.Semaphore(confirms_in_flight)

    async def send(command: Command) -> None:
        async with turns:
            await driver.send(command)

    await asyncio.gather(*(send(c) for c in commands))


async def wait_for_results(driver: Driver, ids: list[str], process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while any(i not in driver.done for i in ids):
        if process.poll() is not None:
            raise RuntimeError(f"the process exited ({process.returncode}) before every result came")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{sum(i not in driver.done for i in ids)} uploads without a result")
        await asyncio.sleep(0.05)


async def run_one(
    system: str, emulator: Emulator, latency_ms: int, repetition: int, uploads: int, broker: int | None
) -> Run:
    settings = bench_settings(emulator, f"bench.{uuid.uuid4().hex[:8]}", IN_FLIGHT)
    with tempfile.TemporaryFile() as log:
        process = start(system, settings, emulator, log)
        try:
            if system == "worker":
                await settle_fleet(settings=settings, replicas=1)  # it holds all its shards
            else:
                await consuming(settings, settings.command_queue)
            async with Driver(settings) as driver:
                tenant = uuid.uuid4()
                warm = upload_command(tenant, uuid.uuid4(), "warm.txt", "text/plain", b"x")
                await driver.send(warm)
                await wait_for_results(driver, [warm.id], process, 60)
                content = os.urandom(SIZE // 2).hex().encode()[:SIZE]
                commands = [
                    upload_command(tenant, uuid.uuid4(), "bench.txt", "text/plain", content) for _ in range(uploads)
                ]
                idle_before = cpu_seconds(broker) if broker else 0.0
                await asyncio.sleep(IDLE_SAMPLE_S)
                worker_before = cpu_seconds(process.pid)
                broker_before = cpu_seconds(broker) if broker else 0.0
                await publish_all(driver, commands)
                ids = [c.id for c in commands]
                await wait_for_results(driver, ids, process, 120 + uploads * 0.5)
                worker_cpu = cpu_seconds(process.pid) - worker_before
                broker_cpu = cpu_seconds(broker) - broker_before if broker else None
                rss = peak_rss_mb(process.pid)
                failed = sum(1 for event in driver.events if event["type"].endswith(".failed"))
        except BaseException:
            log.seek(0)
            tail = log.read()[-3000:].decode(errors="replace")
            print(f"{system} failed; its last output:\n{tail}", file=sys.stderr)
            raise
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if system == "worker":
                await cleanup(settings)
            else:
                await delete_faststream_topology(settings)
    return Run(
        system,
        latency_ms,
        repetition,
        uploads,
        driver.steady_rate(ids),
        [driver.latency(i) for i in ids],
        worker_cpu,
        broker_cpu,
        None if not broker else (broker_before - idle_before) * 1000 / IDLE_SAMPLE_S,
        failed,
        rss,
    )


# -- the table -------------------------------------------------------------------------------------------


def _number(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _ratio(runs: list[Run], measure: str) -> str:
    def median(system: str) -> float | None:
        values = [getattr(r, measure) for r in runs if r.system == system]
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    ours, theirs = median("worker"), median("FastStream")
    return "n/a" if ours is None or theirs is None or theirs == 0 else f"{ours / theirs:.2f}x"


def print_table(runs: list[Run], broker: int | None) -> None:
    print(
        f"{runs[0].uploads} uploads of {SIZE // 1024} KB to distinct documents per run, one replica each "
        f"(CPU 1), {IN_FLIGHT} in flight; FastStream: one durable quorum queue"
    )
    print("| DMS latency | system | uploads/s | p50 ms | p99 ms | worker CPU ms/upload | RabbitMQ CPU ms/upload |")
    print("|---|---|---|---|---|---|---|")
    for latency in dict.fromkeys(r.latency_ms for r in runs):
        at = [r for r in runs if r.latency_ms == latency]
        for r in at:
            print(
                f"| {latency} ms | {r.system}, run {r.repetition} | {r.rate:.1f} | {r.p50:.0f} | {r.p99:.0f} | "
                f"{r.worker_cpu_ms:.2f} | {_number(r.broker_cpu_ms, 2)} |"
            )
        repetitions = len({r.repetition for r in at})
        print(
            f"| {latency} ms | **worker / FastStream** (median of {repetitions}) | {_ratio(at, 'rate')} | "
            f"{_ratio(at, 'p50')} | {_ratio(at, 'p99')} | {_ratio(at, 'worker_cpu_ms')} | "
            f"{_ratio(at, 'broker_cpu_ms')} |"
        )
    print()
    idle = [r.broker_idle_ms_per_s for r in runs if r.broker_idle_ms_per_s is not None]
    if broker is None:
        print("RabbitMQ CPU: not measured (no local beam.smp found listening on the AMQP port)")
    elif idle:
        print(
            f"RabbitMQ (pid {broker}) CPU while idle for {IDLE_SAMPLE_S:.0f} s before each run: "
            f"{min(idle):.0f}-{max(idle):.0f} ms/s (other clients, the idle topology)"
        )
    rss = ", ".join(f"{r.system} {_number(r.peak_rss_mb, 0)}" for r in runs)
    print(f"peak RSS MB per run: {rss}")
    failed = sum(r.failed for r in runs)
    if failed:
        print(f"failed uploads (result events dms.upload.failed): {failed}")


async def main(uploads: int, latencies: list[int], repetitions: int) -> None:
    if importlib.util.find_spec("faststream") is None:
        raise SystemExit("FastStream is not installed: .venv/bin/pip install -e '.[dev,bench]'")
    emulator = Emulator()
    broker = rabbitmq_pid(Settings(_env_file=None).amqp_url.get_secret_value())
    runs: list[Run] = []
    try:
        await wait_until_up(emulator.base)
        for latency in latencies:
            await emulator.call("POST", "_emulator/faults", {"latency_ms": latency})
            for repetition in range(1, repetitions + 1):
                for system in SYSTEMS:
                    await asyncio.sleep(SETTLE_S)
                    run = await run_one(system, emulator, latency, repetition, uploads, broker)
                    runs.append(run)
                    print(
                        f"{latency} ms {system} run {repetition}: {run.rate:.1f}/s, "
                        f"{run.worker_cpu_ms:.2f} CPU ms/upload",
                        file=sys.stderr,
                    )
    finally:
        emulator.close()
    print_table(runs, broker)
