"""Large files by ``content_url`` at flat memory (issue 14). Not a timed test: it prints a table.

    python -m tests.bench large     # 16 x 120 MiB published at once to one replica, then one 400 MiB file

One replica (``python -m worker run``, pinned to CPU 1) with default settings, except ``MAX_FILE_SIZE`` (400
MiB, DMS's limit with virus scanning) and the content host on the allowlist; the emulator (CPU 0) writes large
content to disk; a local HTTP server in this process serves the files from disk. Peak RSS is the replica's
``VmHWM``; MB/s counts content bytes from the first publish to the last result.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from aiohttp import web

from tests.bench.emulator_bench import free_port, pin, wait_until_up
from tests.bench.fleet_bench import Driver
from tests.bench.worker_bench import Emulator, bench_settings, cleanup, peak_rss_mb, replica_env
from tests.http_host import serving
from worker.producer import upload_command_by_url
from worker.settings import DMS_MAX_FILE_SIZE, MIB, Settings


class LargeContentEmulator(Emulator):
    """The bench emulator with DMS's own 400 MB content limit."""

    def __init__(self) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/"
        self.process = subprocess.Popen(
            [*pin(0), sys.executable, "-m", "worker.testing.emulator", "--port", str(self.port)],
            stderr=subprocess.DEVNULL,
        )


def write_text_file(path: Path, size: int) -> str:
    """``size`` bytes of random hex text, written 1 MiB at a time; returns the sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as file:
        for start in range(0, size, MIB):
            piece = os.urandom(MIB // 2).hex().encode()[: min(MIB, size - start)]
            digest.update(piece)
            file.write(piece)
    return digest.hexdigest()


async def send_file(directory: Path, request: web.Request) -> web.StreamResponse:
    return web.FileResponse(directory / request.match_info["name"])


async def publish_and_wait(driver: Driver, base: str, name: str, size: int, sha256: str, count: int) -> float:
    tenant = uuid.uuid4()
    commands = [
        upload_command_by_url(tenant, uuid.uuid4(), name, "text/plain", base + name, size=size, sha256=sha256)
        for _ in range(count)
    ]
    started = time.perf_counter()
    await asyncio.gather(*(driver.send(command) for command in commands))
    await driver.wait_for([c.id for c in commands], timeout=1800)
    return time.perf_counter() - started


async def main(count: int, size: int, huge: int) -> None:
    emulator = LargeContentEmulator()
    with tempfile.TemporaryDirectory(prefix="large-files-bench-") as tmp:
        files, spool = Path(tmp) / "files", Path(tmp) / "spool"
        files.mkdir()
        sha_large = write_text_file(files / "large.txt", size)
        sha_huge = write_text_file(files / "huge.txt", huge)
        try:
            async with serving(functools.partial(send_file, files)) as base:
                await wait_until_up(emulator.base)
                settings: Settings = bench_settings(emulator, f"bench.{uuid.uuid4().hex[:8]}", 64).model_copy(
                    update={
                        "in_flight_limit": Settings(_env_file=None).in_flight_limit,
                        "max_file_size": DMS_MAX_FILE_SIZE,
                        "content_url_allowed_hosts": ["127.0.0.1"],
                        "spool_dir": spool,
                    }
                )
                replica = subprocess.Popen(
                    [*pin(1), sys.executable, "-m", "worker", "run"],
                    env=replica_env(settings),
                    stdout=subprocess.DEVNULL,
                )
                try:
                    await asyncio.sleep(3)  # the replica declares the topology and takes its shards
                    async with Driver(settings) as driver:
                        seconds = await publish_and_wait(driver, base, "large.txt", size, sha_large, count)
                        rss_large = peak_rss_mb(replica.pid)
                        huge_seconds = await publish_and_wait(driver, base, "huge.txt", huge, sha_huge, 1)
                        rss_all = peak_rss_mb(replica.pid)
                        failed = driver.failed
                    left = [p for p in spool.rglob("*") if p.is_file() and p.name != ".lock"]
                finally:
                    replica.terminate()
                    replica.wait()
                    await cleanup(settings)
        finally:
            emulator.close()
    print(
        f"one replica, default settings (in-flight limit {settings.in_flight_limit}, content fetches at once "
        f"{settings.content_fetch_concurrency}), MAX_FILE_SIZE {settings.max_file_size}"
    )
    print("| case | uploads | MB each | seconds | MB/s | failed | peak RSS MB | spool files left |")
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {count} at once | {count} | {size / 1e6:.0f} | {seconds:.1f} | {count * size / 1e6 / seconds:.0f} | "
        f"{len(failed)} | {rss_large or 0:.0f} | - |"
    )
    print(
        f"| one large file | 1 | {huge / 1e6:.0f} | {huge_seconds:.1f} | {huge / 1e6 / huge_seconds:.0f} | - | "
        f"{rss_all or 0:.0f} (whole run) | {len(left)} |"
    )
    for event in failed:
        print(f"  ! {event.get('error')}", file=sys.stderr)
