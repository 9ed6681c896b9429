"""A network partition between RabbitMQ cluster nodes: a 3-node cluster whose nodes each run in a network
namespace of their own (tests/integration/netns.py), with ``pause_minority`` as deploy/rabbitmq sets. The
node the worker is connected to, which also declared (and so leads) the quorum queues, is cut off from the
other two for 30 s and healed, while uploads flow. Checked against the recorded history: no acknowledged
command lost, no version duplicated, order kept; the pause in results is printed."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from worker.producer import upload_command

from .conftest import StackFactory
from .history import check_history
from .netns import NamespacedCluster, cluster_in_namespaces

pytestmark = [pytest.mark.integration, pytest.mark.cluster, pytest.mark.network]


@pytest.fixture(scope="module")
def partitionable() -> Iterator[NamespacedCluster]:
    with cluster_in_namespaces(3, "partition") as cluster:
        yield cluster


@pytest.mark.timeout(300)
async def test_a_partitioned_node_loses_no_acknowledged_command(
    make_stack: StackFactory, partitionable: NamespacedCluster
) -> None:
    urls = [partitionable.url(n) for n in (1, 2, 3)]
    # The worker starts on node 1 (it declares the queues there, so node 1 leads them); the test publishes and
    # reads results through node 2, on the majority side.
    stack = await make_stack(
        amqp_url=urls[1], amqp_urls=urls, retry_delays_ms=[1_000, 5_000, 30_000, 120_000], shutdown_grace_s=2
    )
    tenant, docs = uuid.uuid4(), [uuid.uuid4() for _ in range(20)]
    commands = [
        upload_command(tenant, doc, "a.txt", "text/plain", f"{doc}:{n}".encode()) for n in range(10) for doc in docs
    ]
    arrivals: list[float] = []
    events: list[dict[str, Any]] = []
    wanted, all_in = {c.id for c in commands}, asyncio.Event()

    async def collect() -> None:
        while True:
            (event,) = await stack.next_events(1, timeout=3600)
            events.append(event)
            arrivals.append(time.monotonic())
            wanted.discard(event["data"]["command_id"])
            if not wanted:
                all_in.set()

    async def publish() -> None:
        for command in commands:
            await stack.send(command)
            await asyncio.sleep(0.1)

    collecting, publishing = asyncio.create_task(collect()), asyncio.create_task(publish())
    await asyncio.sleep(3)
    partitionable.partition(1)
    cut = time.monotonic()
    await asyncio.sleep(30)
    partitionable.heal(1)
    healed = time.monotonic()
    await publishing
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_in.wait(), 120)
    await asyncio.sleep(2)  # a repeat would come now
    collecting.cancel()
    verdict = check_history(commands, events, stack.emulator.emulator.state)
    gaps = [b - a for a, b in itertools.pairwise(arrivals) if a >= cut - 1]
    print(
        f"\nnode 1 cut off from nodes 2 and 3 for 30 s: {verdict}; longest pause in results "
        f"{max(gaps, default=0):.1f} s; last result {arrivals[-1] - healed:.1f} s after the heal"
    )
    assert verdict.ok and not verdict.failed, verdict
