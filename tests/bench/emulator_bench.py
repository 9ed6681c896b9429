"""How many small createDocument calls per second the emulator serves on one core.

The emulator runs in its own process pinned to CPU 0; the load generator runs here, pinned to CPU 1.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time

import aiohttp

from worker.dms.tokens import basic_auth_header


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pin(cpu: int) -> list[str]:
    if hasattr(os, "sched_setaffinity") and os.cpu_count() and os.cpu_count() > cpu:  # type: ignore[operator]
        return ["taskset", "-c", str(cpu)]
    return []


async def wait_until_up(base: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(100):
            try:
                async with http.get(base + "_emulator/stats"):
                    return
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
    raise RuntimeError("emulator did not start")


async def load(base: str, total: int, concurrency: int, size: int) -> tuple[float, int]:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.post(
            base + "oauth/token",
            data={"grant_type": "client_credentials"},
            headers={"Authorization": basic_auth_header("emulator-client", "emulator-secret")},
        ) as r:
            token = (await r.json())["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        spec = {"repository": {"displayName": "bench", "repositoryType": "internal", "isVersionEnabled": True}}
        async with http.post(base + "rest/v2/repositories", json=spec, headers=auth) as r:
            repo_id = (await r.json())["id"]
        url = f"{base}browser/{repo_id}/root"
        payload = b"x" * size
        counter = iter(range(total))
        failures = 0

        async def client() -> None:
            nonlocal failures
            for i in counter:
                form = aiohttp.FormData()
                for key, value in (
                    ("cmisaction", "createDocument"),
                    ("propertyId[0]", "cmis:name"),
                    ("propertyValue[0]", f"doc-{i}"),
                    ("propertyId[1]", "cmis:objectTypeId"),
                    ("propertyValue[1]", "cmis:document"),
                    ("succinct", "true"),
                ):
                    form.add_field(key, value)
                form.add_field("content", payload, filename=f"f{i}.txt", content_type="text/plain")
                async with http.post(url, data=form, headers=auth) as r:
                    await r.read()
                    failures += r.status != 201

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return time.perf_counter() - started, failures


def main(total: int = 5000, concurrency: int = 32, size: int = 1024) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}/"
    server = subprocess.Popen(
        [*pin(0), sys.executable, "-m", "worker.testing.emulator", "--port", str(port)],
        stderr=subprocess.DEVNULL,
    )
    try:
        if pin(1):
            os.sched_setaffinity(0, {1})
        asyncio.run(wait_until_up(base))
        asyncio.run(load(base, 500, concurrency, size))  # warm-up
        elapsed, failures = asyncio.run(load(base, total, concurrency, size))
    finally:
        server.terminate()
        server.wait()
    print("| benchmark | requests | payload | concurrency | seconds | createDocument/s | failures |")
    print("|---|---|---|---|---|---|---|")
    rate = total / elapsed
    print(f"| emulator, 1 core | {total} | {size} B | {concurrency} | {elapsed:.2f} | {rate:.0f} | {failures} |")
