"""Never lose a document: per-document order under retries, and fault storms end in exactly one outcome."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Sequence

import pytest

from tests.cluster.nodes import Cluster
from worker.contracts import Command
from worker.producer import delete_command, upload_command
from worker.results.dead_letters import DeadLetterQueue, Selection
from worker.testing.emulator import EmulatorConfig

from .conftest import Stack, StackFactory

pytestmark = pytest.mark.integration


async def test_an_upload_retried_after_a_later_delete_does_not_bring_the_document_back(stack: Stack) -> None:
    tenant, doc = uuid.uuid4(), uuid.uuid4()
    await stack.run(upload_command(tenant, uuid.uuid4(), "warm.txt", "text/plain", b"x"))  # repository exists
    await stack.set_faults(
        scripted=[{"kind": "status", "status": 503, "times": 2, "path_prefix": "/browser", "action": "createDocument"}]
    )
    upload = upload_command(tenant, doc, "a.txt", "text/plain", b"late")
    delete = delete_command(tenant, doc)
    await stack.send(upload)
    await stack.send(delete)
    first, second = await stack.next_events(2)
    assert [first["data"]["command_id"], second["data"]["command_id"]] == [upload.id, delete.id]
    assert first["data"]["attempts"] == 3 and second["data"]["existed"] is True
    assert str(doc) not in stack.repository(tenant).series_by_name


async def test_uploads_keep_publish_order_through_retries(stack: Stack) -> None:
    tenant, doc = uuid.uuid4(), uuid.uuid4()
    await stack.run(upload_command(tenant, doc, "a.txt", "text/plain", b"v1"))
    await stack.set_faults(
        scripted=[{"kind": "status", "status": 502, "times": 1, "path_prefix": "/browser", "action": "checkIn"}]
    )
    commands = [upload_command(tenant, doc, "a.txt", "text/plain", f"v{n}".encode()) for n in range(2, 7)]
    for command in commands:
        await stack.send(command)
    events = await stack.next_events(5)
    assert [e["data"]["command_id"] for e in events] == [c.id for c in commands]
    series = stack.repository(tenant).series_by_name[str(doc)]
    contents = [stack.emulator.emulator.state.content.get(v.content_id) for v in series.versions]
    assert contents == [f"v{n}".encode() for n in range(1, 7)]
    assert [v.label for v in series.versions] == [f"{n}.0" for n in range(1, 7)]


async def outcomes(stack: Stack, commands: Sequence[Command], timeout: float = 90) -> Counter[str]:
    """Waits for one terminal event per command; returns how many each command got."""
    seen: Counter[str] = Counter()
    wanted = {c.id for c in commands}
    deadline = asyncio.get_running_loop().time() + timeout
    while set(seen) != wanted and asyncio.get_running_loop().time() < deadline:
        try:
            (event,) = await stack.next_events(1, timeout=2)
        except TimeoutError:
            continue
        seen[event["data"]["command_id"]] += 1
    await asyncio.sleep(0.5)
    while not stack.events.empty():
        seen[stack.events.get_nowait()["data"]["command_id"]] += 1
    return seen


def assert_versions_contiguous(stack: Stack, tenant: uuid.UUID) -> None:
    for series in stack.repository(tenant).series_by_name.values():
        assert [v.label for v in series.versions] == [f"{n}.0" for n in range(1, len(series.versions) + 1)]


@pytest.mark.timeout(180)
async def test_latency_5xx_and_429_storm(make_stack: StackFactory) -> None:
    stack = await make_stack(retry_delays_ms=[50, 100, 200, 400, 800], in_flight_limit=16)
    tenant = uuid.uuid4()
    await stack.run(upload_command(tenant, uuid.uuid4(), "warm.txt", "text/plain", b"x"))
    await stack.set_faults(latency_ms=20, error_rate=0.25, rate_limit_rate=0.1, retry_after=0, seed=7)
    documents = [uuid.uuid4() for _ in range(8)]
    commands: list[Command] = [
        upload_command(tenant, documents[n % 8], "f.txt", "text/plain", f"{n}".encode()) for n in range(60)
    ]
    for command in commands:
        await stack.send(command)
    seen = await outcomes(stack, commands)
    assert set(seen) == {c.id for c in commands} and set(seen.values()) == {1}
    await stack.set_faults(error_rate=0.0, rate_limit_rate=0.0, latency_ms=0)
    assert_versions_contiguous(stack, tenant)
    succeeded = sum(len(s.versions) for s in stack.repository(tenant).series_by_name.values()) - 1
    dead = await DeadLetterQueue(stack.connection, stack.settings).inspect(Selection())
    assert succeeded + len(dead) == len(commands)  # each either written once or in the DLQ


async def test_token_revoked_mid_run(make_stack: StackFactory) -> None:
    stack = await make_stack(emulator_config=EmulatorConfig(token_lifetime_s=3600))
    tenant = uuid.uuid4()
    commands = [upload_command(tenant, uuid.uuid4(), "f.txt", "text/plain", b"x") for _ in range(40)]
    await stack.set_faults(latency_ms=50)
    for command in commands[:10]:
        await stack.send(command)
    early = await stack.next_events(10)
    for command in commands[10:]:
        await stack.send(command)
    await asyncio.sleep(0.02)
    stack.emulator.emulator.tokens.revoke_all()  # calls already waiting in DMS meet a 401 too
    seen = await outcomes(stack, commands[10:])
    assert set(seen.values()) == {1} and len(seen) == 30
    assert all(e["type"] == "dms.upload.succeeded" for e in early)
    assert all(len(s.versions) == 1 for s in stack.repository(tenant).series_by_name.values())
    assert stack.emulator.emulator.tokens.issued == 2


@pytest.mark.cluster
async def test_broker_connections_dropped_mid_run(make_stack: StackFactory, lone_broker: Cluster) -> None:
    """On a node of the test's own: closing every connection on the machine's broker would cut other users'."""
    stack = await make_stack(amqp_url=lone_broker.url(1))
    tenant = uuid.uuid4()
    await stack.set_faults(latency_ms=100)
    commands = [upload_command(tenant, uuid.uuid4(), "f.txt", "text/plain", b"x") for _ in range(30)]
    for command in commands:
        await stack.send(command)
    await asyncio.sleep(0.5)
    await asyncio.to_thread(lone_broker.ctl, 1, "close_all_connections", "fault test")
    seen = await outcomes(stack, commands)
    assert set(seen) == {c.id for c in commands}  # redelivery may repeat an event, never lose one
    assert all(len(s.versions) == 1 for s in stack.repository(tenant).series_by_name.values())
