"""Operating a replica: health and metrics endpoint, graceful shutdown."""

from __future__ import annotations

import asyncio
import re
import uuid

import aiohttp
import pytest

from worker.contracts import UploadCommand
from worker.producer import upload_command
from worker.runtime.app import Worker

from .conftest import Stack, StackFactory

pytestmark = pytest.mark.integration


def sample(metrics: str, name: str, **labels: str) -> float:
    label_text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(name) + (r"\{" + re.escape(label_text) + r"\}" if labels else "") + r" ([0-9.e+-]+)"
    match = re.search(pattern, metrics)
    return float(match.group(1)) if match else 0.0


async def scrape(stack: Stack, path: str = "/metrics") -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{stack.worker.parts.http_port}{path}") as r:
        return r.status, await r.text()


async def test_metrics_move_with_the_work(stack: Stack) -> None:
    tenant, doc = uuid.uuid4(), uuid.uuid4()
    _, before = await scrape(stack)
    assert sample(before, "dms_worker_commands_total", outcome="succeeded", type="dms.upload") == 0

    await stack.run(upload_command(tenant, doc, "a.txt", "text/plain", b"12345"))
    await stack.run(upload_command(tenant, doc, "a.txt", "text/plain", b"123"))
    await stack.run(upload_command(tenant, uuid.uuid4(), "x.exe", "application/octet-stream", b"MZ"))
    await stack.set_faults(scripted=[{"kind": "status", "status": 503, "times": 1, "path_prefix": "/browser"}])
    await stack.run(upload_command(tenant, uuid.uuid4(), "b.txt", "text/plain", b"x"))

    status, after = await scrape(stack)
    assert status == 200
    assert sample(after, "dms_worker_commands_total", outcome="succeeded", type="dms.upload") == 3
    assert sample(after, "dms_worker_commands_total", outcome="failed", type="dms.upload") == 1
    assert sample(after, "dms_worker_retries_total", error_code="dms_unavailable") == 1
    assert sample(after, "dms_worker_uploaded_bytes_total") == 9
    assert sample(after, "dms_worker_token_fetches_total") == 1
    assert sample(after, "dms_worker_in_flight") == 0
    assert sample(after, "dms_worker_dms_request_seconds_count", operation="checkIn", status="201") == 1
    assert sample(after, "dms_worker_dms_request_seconds_count", operation="createDocument", status="503") == 1
    assert sample(after, "dms_worker_end_to_end_seconds_count", type="dms.upload") == 4


async def test_liveness_and_readiness(stack: Stack) -> None:
    assert (await scrape(stack, "/livez"))[0] == 200
    status, body = await scrape(stack, "/readyz")
    assert status == 200, body
    await stack.set_faults(scripted=[{"kind": "status", "status": 503, "times": 5, "path_prefix": "/oauth"}])
    stack.worker.parts.tokens._tokens.clear()  # force a fetch: the token service is down
    status, body = await scrape(stack, "/readyz")
    assert status == 503 and "no DMS token" in body


async def slow_uploads_in_flight(stack: Stack, count: int, latency_ms: int) -> tuple[uuid.UUID, list[UploadCommand]]:
    """Repository made, DMS slowed down, ``count`` uploads sent and being worked on."""
    tenant = uuid.uuid4()
    await stack.run(upload_command(tenant, uuid.uuid4(), "warm.txt", "text/plain", b"x"))
    await stack.set_faults(latency_ms=latency_ms)
    commands = [upload_command(tenant, uuid.uuid4(), f"f{i}.txt", "text/plain", b"x") for i in range(count)]
    for command in commands:
        await stack.send(command)
    seen: list[int] = []
    for _ in range(200):
        seen.append(stack.worker.parts.intake.dispatcher.running)
        if seen[-1] == count:
            break
        await asyncio.sleep(0.05)
    assert seen[-1] == count, f"in flight, every 50 ms: {seen}; events: {stack.events.qsize()}"
    return tenant, commands


async def test_graceful_shutdown_finishes_in_flight_work(make_stack: StackFactory) -> None:
    # One shard: its share is the whole limit and never moves, so all five are delivered at once.
    stack = await make_stack(in_flight_limit=20, shard_count=1)
    _, commands = await slow_uploads_in_flight(stack, 5, latency_ms=2500)  # long enough to overlap
    await stack.worker.stop(grace_s=10)
    events = await stack.next_events(5)
    assert {e["data"]["command_id"] for e in events} == {c.id for c in commands}
    assert {e["type"] for e in events} == {"dms.upload.succeeded"}


async def test_shutdown_past_the_grace_period_gives_unfinished_work_back(make_stack: StackFactory) -> None:
    stack = await make_stack(in_flight_limit=12, shard_count=1)
    tenant, commands = await slow_uploads_in_flight(stack, 3, latency_ms=3000)
    await stack.worker.stop(grace_s=0.2)
    assert stack.events.empty()

    await stack.set_faults(latency_ms=0)
    successor = Worker(stack.settings)
    await successor.start()
    try:
        events = await stack.next_events(3)
    finally:
        await successor.stop()
    assert {e["data"]["command_id"] for e in events} == {c.id for c in commands}
    assert all(e["type"] == "dms.upload.succeeded" for e in events)
    repo = stack.repository(tenant)
    assert all([v.label for v in s.versions] == ["1.0"] for s in repo.series_by_name.values())
