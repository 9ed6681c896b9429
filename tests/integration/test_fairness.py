"""Tenants share a replica fairly: one tenant's backlog does not hold up another tenant's upload."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from typing import Any

import pytest

from tests.routing_oracle import shards_of
from worker.amqp.routing import LANES, routing_key
from worker.producer import upload_command

from .conftest import AMQP_URL, StackFactory

pytestmark = pytest.mark.integration


async def test_another_tenants_upload_finishes_long_before_a_backlog_drains(make_stack: StackFactory) -> None:
    stack = await make_stack(shard_count=16, in_flight_limit=8)
    tenant_a = uuid.uuid4()
    a_shards = set((await shards_of(AMQP_URL, 16, [f"{tenant_a}.{lane}" for lane in range(LANES)])).values())
    # Tenant B's document in a queue tenant A does not use (with 16 lanes over 16 queues that takes a few
    # tries; in production, with 128 queues, most pairs of tenants share few queues).
    for _ in range(200):
        tenant_b, doc_b = uuid.uuid4(), uuid.uuid4()
        key = routing_key(tenant_b, doc_b)
        if (await shards_of(AMQP_URL, 16, [key]))[key] not in a_shards:
            break
    else:
        pytest.fail("no document of another tenant outside tenant A's queues")

    await stack.run(upload_command(tenant_a, uuid.uuid4(), "warm.txt", "text/plain", b"w"))
    await stack.run(upload_command(tenant_b, uuid.uuid4(), "warm.txt", "text/plain", b"w"))
    await stack.set_faults(latency_ms=100)
    a_docs = [uuid.uuid4() for _ in range(20)]
    backlog = [upload_command(tenant_a, a_docs[n % 20], "a.txt", "text/plain", f"{n}".encode()) for n in range(400)]
    for command in backlog:
        await stack.send(command)
    await asyncio.sleep(0.5)
    b_commands = [upload_command(tenant_b, doc_b, "b.txt", "text/plain", f"b{n}".encode()) for n in range(3)]
    started = time.perf_counter()
    for command in b_commands:
        await stack.send(command)

    wanted = {c.id for c in b_commands}
    events: list[dict[str, Any]] = []
    while wanted - {e["data"]["command_id"] for e in events}:
        events += await stack.next_events(1, timeout=60)
    b_seconds = time.perf_counter() - started
    a_done_then = sum(1 for e in events if e["data"]["tenant_id"] == str(tenant_a))
    events += await stack.next_events(len(backlog) + len(b_commands) - len(events), timeout=120)
    a_seconds = time.perf_counter() - started

    # 400 uploads at 8 in flight and 100 ms each take about 5 s; tenant B's three in a row about 0.3 s.
    assert a_done_then < len(backlog) / 2, (a_done_then, b_seconds)
    assert b_seconds < a_seconds / 4, (b_seconds, a_seconds)
    assert {e["type"] for e in events} == {"dms.upload.succeeded"}
    for tenant, doc, commands in [(tenant_b, doc_b, b_commands)] + [
        (tenant_a, d, [c for c in backlog if c.data.document_id == d]) for d in a_docs
    ]:
        series = stack.repository(tenant).series_by_name[str(doc)]
        stored = [stack.emulator.emulator.state.content.get(v.content_id) for v in series.versions]
        assert stored == [base64.b64decode(c.data.content_base64 or "") for c in commands]  # publish order


async def test_an_upload_delivered_behind_a_held_backlog_runs_before_it(make_stack: StackFactory) -> None:
    # Two queues: tenant A's 40 commands in one, tenant B's upload in the other. The replica holds all 40
    # (slots are spare) but runs only 2 at once, the adaptive limit pinned there (adaptation off). B's
    # upload, delivered after them, takes the next free slot rather than waiting for A's 38.
    stack = await make_stack(shard_count=2, in_flight_limit=64, adaptive_concurrency=False)
    stack.worker.parts.concurrency.limit = 2
    tenant_a, tenant_b = uuid.uuid4(), uuid.uuid4()
    a_docs: list[uuid.UUID] = []
    b_doc: uuid.UUID | None = None
    while len(a_docs) < 40 or b_doc is None:
        candidates = [(tenant_a, uuid.uuid4()) for _ in range(40)] + [(tenant_b, uuid.uuid4()) for _ in range(4)]
        where = await shards_of(AMQP_URL, 2, [routing_key(t, d) for t, d in candidates])
        a_docs += [d for t, d in candidates if t == tenant_a and where[routing_key(t, d)] == 0][: 40 - len(a_docs)]
        b_doc = b_doc or next((d for t, d in candidates if t == tenant_b and where[routing_key(t, d)] == 1), None)

    await stack.run(upload_command(tenant_a, uuid.uuid4(), "warm.txt", "text/plain", b"w"))
    await stack.run(upload_command(tenant_b, uuid.uuid4(), "warm.txt", "text/plain", b"w"))
    await stack.set_faults(latency_ms=100)
    backlog = [upload_command(tenant_a, d, "a.txt", "text/plain", b"a") for d in a_docs]
    for command in backlog:
        await stack.send(command)
    await asyncio.sleep(0.5)  # all 40 delivered; 2 at a time run, 100 ms each
    b_command = upload_command(tenant_b, b_doc, "b.txt", "text/plain", b"b")
    await stack.send(b_command)

    events: list[dict[str, Any]] = []
    while b_command.id not in {e["data"]["command_id"] for e in events}:
        events += await stack.next_events(1, timeout=30)
    a_before_b = sum(1 for e in events if e["data"]["tenant_id"] == str(tenant_a))
    events += await stack.next_events(len(backlog) + 1 - len(events), timeout=60)
    assert {e["type"] for e in events} == {"dms.upload.succeeded"}
    # In 0.5 s about 10 of A's finished; B then waits for one of the two running. First in, first out
    # among the held commands, it would have come after all 40.
    assert a_before_b <= 20, a_before_b
