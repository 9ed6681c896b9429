"""RabbitMQ's consumer timeout firing on a shard channel while a document is parked in retry backoff: the
broker closes the channel and returns its deliveries; the worker's channel comes back, and every document
still ends with its versions in publish order, one outcome per command. The broker is a node of the test's
own (``lone_broker``) with a 3 s consumer timeout checked every 0.5 s (3.10 takes it node-wide only)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from tests.cluster.nodes import Cluster
from worker.producer import upload_command

from .conftest import StackFactory
from .test_order_under_give_backs import contents, outcomes

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

SHORT_TIMEOUT = (
    "application:set_env(rabbit, consumer_timeout, 3000), application:set_env(rabbit, channel_tick_interval, 500)."
)
DEFAULTS = (
    "application:set_env(rabbit, consumer_timeout, 1800000), application:set_env(rabbit, channel_tick_interval, 60000)."
)


@pytest.mark.timeout(120)
async def test_the_consumer_timeout_firing_on_a_parked_command_keeps_order(
    make_stack: StackFactory, lone_broker: Cluster
) -> None:
    await asyncio.to_thread(lone_broker.ctl, 1, "eval", SHORT_TIMEOUT)  # for channels opened from now on
    try:
        stack = await make_stack(amqp_url=lone_broker.url(1), shard_count=1, retry_delays_ms=[5_000, 5_000, 5_000])
        tenant, x, y = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        events: list[dict[str, Any]] = [await stack.run(upload_command(tenant, x, "x.txt", "text/plain", b"x1"))]
        await stack.set_faults(
            scripted=[{"kind": "status", "status": 503, "times": 2, "path_prefix": "/browser", "action": "checkOut"}]
        )
        x2, y1, x3 = (
            upload_command(tenant, x, "x.txt", "text/plain", b"x2"),
            upload_command(tenant, y, "y.txt", "text/plain", b"y1"),
            upload_command(tenant, x, "x.txt", "text/plain", b"x3"),
        )
        for command in (x2, y1, x3):
            await stack.send(command)
        await stack.events_for({x2.id, y1.id, x3.id}, events, within=60)
    finally:
        await asyncio.to_thread(lone_broker.ctl, 1, "eval", DEFAULTS)
    assert all(len(o) == 1 for o in outcomes(events).values()), "a command was written twice"
    assert {e["data"]["command_id"] for e in events} >= {x2.id, y1.id, x3.id}
    assert contents(stack, tenant, x) == [b"x1", b"x2", b"x3"]
    assert contents(stack, tenant, y) == [b"y1"]
