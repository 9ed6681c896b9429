"""One of three replicas cut off from the broker (its packets dropped, nothing refused or reset) while it holds
shards and has DMS writes going; DMS stays reachable from it. Its shards go to the others, and the fence
(``worker.intake.lease``) keeps it from writing once it stops hearing the broker, so no document is written by
two replicas across the hand-over; after the heal it rejoins. Checked against the recorded history.

Everything is the test's own: a RabbitMQ node in a network namespace (``NamespacedCluster`` of one node), the
cut-off replica a process in another namespace on the same bridge (nftables drops what goes between it and
the node), the other two replicas and the DMS emulator in the test's process."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.routing_oracle import shards_of
from worker.amqp.routing import routing_key
from worker.producer import upload_command
from worker.runtime.app import Worker
from worker.settings import LEASE_HEARTBEATS
from worker.testing.emulator import EmulatorConfig, serve_emulator
from worker.testing.emulator.faults import FaultConfig

from .conftest import StackFactory
from .history import check_history
from .netns import NamespacedCluster, cluster_in_namespaces
from .replicas import environment

pytestmark = [pytest.mark.integration, pytest.mark.cluster, pytest.mark.network]

MARKED = "dms-upload-worker/cut-off"  # the cut-off replica's User-Agent: its DMS calls are told apart by it


@pytest.fixture
def one_node() -> Iterator[NamespacedCluster]:
    with cluster_in_namespaces(1, "fence") as cluster:
        yield cluster


@pytest.mark.timeout(240)
async def test_a_replica_cut_off_from_the_broker_stops_writing_before_its_shards_move(
    one_node: NamespacedCluster, make_stack: StackFactory, tmp_path: Path
) -> None:  # one_node first: the node outlives the stack, whose teardown deletes its topology there
    # One DMS call in ten fails: commands sit parked in retry backoff when the link goes, and wake during the
    # cut wanting to write: what the fence must stop.
    faults = FaultConfig(answer_ms=100, error_rate=0.1, error_statuses=[503], seed=11)
    async with serve_emulator(EmulatorConfig(faults=faults), host=one_node.bridge_ip) as emulator:
        stack = await make_stack(
            emulator=emulator,
            amqp_url=one_node.url(1),
            retry_delays_ms=[300, 600, 1_200, 2_400, 4_800, 9_600, 9_600, 9_600],
            membership_heartbeat_s=0.3,
            membership_listen_heartbeats=2,  # three replicas: they listen for each other as in production
            amqp_heartbeat_s=4,
            in_flight_limit=16,
        )
        await run_the_cut(stack, one_node, tmp_path)


async def documents_in_every_shard(url: str, count: int, shards: int) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """A tenant and ``count`` of its documents spread over all ``shards`` queues: whichever shard the replica to
    cut takes, it has documents to write (a tenant's 16 lanes leave a shard of 4 empty about 1 time in 25)."""
    for _ in range(50):
        tenant, candidates = uuid.uuid4(), [uuid.uuid4() for _ in range(count * 4)]
        where = await shards_of(url, shards, [routing_key(tenant, d) for d in candidates])
        per_shard = {n: [d for d in candidates if where[routing_key(tenant, d)] == n] for n in range(shards)}
        if all(len(found) >= count // shards for found in per_shard.values()):
            return tenant, [d for found in per_shard.values() for d in found[: count // shards]]
    raise RuntimeError(f"no tenant with documents in all {shards} shards in 50 tries")


async def run_the_cut(stack: Any, one_node: NamespacedCluster, tmp_path: Path) -> None:
    namespace, _ = one_node.add_peer()
    env = environment(stack.settings.model_copy(update={"user_agent": MARKED}))
    with (tmp_path / "cut-off.log").open("ab") as log:
        cut_off = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", namespace, sys.executable, "-m", "worker", "run", env=env, stdout=log, stderr=log
        )
    third = Worker(stack.settings)
    await third.start()
    try:
        tenant, docs = await documents_in_every_shard(
            stack.settings.amqp_url.get_secret_value(), 24, stack.settings.shard_count
        )
        before = [upload_command(tenant, d, "a.txt", "text/plain", f"{d}:{n}".encode()) for n in range(8) for d in docs]
        after = [upload_command(tenant, d, "a.txt", "text/plain", f"{d}:{n}".encode()) for n in (8, 9) for d in docs]
        events: list[dict[str, Any]] = []

        async def publish(commands: list[Any]) -> None:
            for command in commands:
                await stack.send(command)
                await asyncio.sleep(0.02)

        publishing = asyncio.create_task(publish(before))
        requests = stack.emulator.emulator.requests
        for _ in range(300):  # until the replica to cut is writing (its start-up takes a few seconds)
            if any(r[3] == MARKED for r in requests):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        one_node.cut(namespace, one_node.ip(1))
        cut_at = time.monotonic()
        await asyncio.sleep(12)  # past the broker's heartbeat timeout: it closes the connection, the shards move
        one_node.mend(namespace)
        healed_at = time.monotonic()
        await publishing
        await asyncio.sleep(8)  # the cut-off replica reconnects and takes its share again
        await publish(after)
        await stack.events_for({c.id for c in before + after}, events, within=90)
    finally:
        cut_off.terminate()
        await asyncio.wait_for(cut_off.wait(), 30)
        await third.stop(1.0)
    verdict = check_history(before + after, events, stack.emulator.emulator.state)
    requests = stack.emulator.emulator.requests
    fenced_from = cut_at + stack.settings.membership_heartbeat_s * LEASE_HEARTBEATS + 0.5  # the lease, one call
    theirs = [r for r in requests if r[3] == MARKED]
    written_before = [r for r in theirs if cut_at - 3 < r[0] < cut_at]
    written_while_fenced = [r for r in theirs if fenced_from < r[0] < healed_at]
    written_after = [r for r in theirs if r[0] > healed_at + 8]
    print(
        f"\ncut off for 12 s: {verdict}; the cut-off replica's DMS calls: {len(written_before)} in the 3 s before the "
        f"cut, {len(written_while_fenced)} after its lease ran out, {len(written_after)} after it rejoined"
    )
    assert written_before, "the replica to cut was not writing"
    assert not written_while_fenced, [(round(t - cut_at, 2), m, path) for t, m, path, _ in written_while_fenced[:8]]
    assert verdict.ok and not verdict.failed, verdict
    assert written_after, "the replica did not rejoin after the heal"
