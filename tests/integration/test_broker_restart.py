"""A RabbitMQ restart in the middle of a run loses no command and duplicates no version. The broker restarted
is a node of the test's own (``lone_broker``), never the machine's."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from tests.cluster.nodes import Cluster
from worker.producer import upload_command

from .conftest import StackFactory

pytestmark = [pytest.mark.integration, pytest.mark.cluster]


@pytest.mark.timeout(180)
async def test_broker_restart_mid_run_loses_nothing(make_stack: StackFactory, lone_broker: Cluster) -> None:
    stack = await make_stack(in_flight_limit=4, amqp_url=lone_broker.url(1))
    await stack.set_faults(latency_ms=300)  # keep commands in flight while the broker goes away
    tenant = uuid.uuid4()
    commands = [upload_command(tenant, uuid.uuid4(), f"f{i}.txt", "text/plain", b"x") for i in range(40)]
    for command in commands:
        await stack.send(command)
    seen: dict[str, dict[str, Any]] = {}
    for event in await stack.next_events(3, timeout=30):  # the run is under way
        seen[event["data"]["command_id"]] = event

    await asyncio.to_thread(lone_broker.ctl, 1, "stop_app")
    await asyncio.sleep(1)
    await asyncio.to_thread(lone_broker.ctl, 1, "start_app")
    await asyncio.to_thread(lone_broker.ctl, 1, "await_startup")

    wanted = {c.id for c in commands}
    deadline = asyncio.get_running_loop().time() + 120
    while set(seen) != wanted and asyncio.get_running_loop().time() < deadline:
        try:
            (event,) = await stack.next_events(1, timeout=5)
        except TimeoutError:
            continue
        seen.setdefault(event["data"]["command_id"], event)  # a redelivery may repeat a result

    assert set(seen) == wanted
    assert all(e["type"] == "dms.upload.succeeded" for e in seen.values())
    repo = stack.repository(tenant)
    assert len(repo.series_by_name) == len(commands)
    assert all([v.label for v in s.versions] == ["1.0"] for s in repo.series_by_name.values())
