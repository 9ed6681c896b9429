"""One of three replicas cut off from the broker (its link silent, not closed) while it holds shards and has
DMS writes going; DMS stays reachable from it. Its shards go to the others, and the fence
(``worker.intake.lease``) keeps it from writing once it stops hearing the broker, so no document is written
by two replicas across the hand-over; after the heal it rejoins. Checked against the recorded history.

The broker is a node of the test's own (``lone_broker``): the broker closes the silent connection, and the
machine's broker is not ours to have connections closed on. The cut is a relay the test controls
(tests/integration/relay.py) that stops passing bytes both ways, sockets open: to both ends the same as
packets dropped on the way."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

import pytest
from pydantic import SecretStr
from yarl import URL

from tests.cluster.nodes import Cluster
from worker.producer import upload_command
from worker.runtime.app import Worker
from worker.settings import LEASE_HEARTBEATS
from worker.testing.emulator import EmulatorConfig
from worker.testing.emulator.faults import FaultConfig

from .conftest import StackFactory
from .history import check_history
from .relay import Relay

pytestmark = [pytest.mark.integration, pytest.mark.cluster, pytest.mark.network]


@pytest.mark.timeout(240)
async def test_a_replica_cut_off_from_the_broker_stops_writing_before_its_shards_move(
    make_stack: StackFactory, lone_broker: Cluster
) -> None:
    timing = {"membership_heartbeat_s": 0.3, "amqp_heartbeat_s": 4, "in_flight_limit": 16}
    timing["membership_listen_heartbeats"] = 2  # three replicas: they listen for each other as in production
    # One DMS call in ten fails: commands sit parked in retry backoff when the link goes, and wake during the
    # cut wanting to write: what the fence must stop.
    stack = await make_stack(
        EmulatorConfig(faults=FaultConfig(answer_ms=100, error_rate=0.1, error_statuses=[503], seed=11)),
        amqp_url=lone_broker.url(1),
        retry_delays_ms=[300, 600, 1_200, 2_400, 4_800, 9_600, 9_600, 9_600],
        **timing,
    )
    target = URL(lone_broker.url(1))
    async with contextlib.AsyncExitStack() as exits:
        relay = await exits.enter_async_context(Relay(target.host or "127.0.0.1", target.port or 5691).serving())
        through_relay = SecretStr(str(target.with_port(relay.port)))
        marked = "dms-upload-worker/cut-off"  # its DMS calls are told apart by User-Agent in the emulator's log
        cut_off = Worker(stack.settings.model_copy(update={"amqp_url": through_relay, "user_agent": marked}))
        third = Worker(stack.settings)
        for worker in (cut_off, third):
            await worker.start()
            exits.push_async_callback(worker.stop, 1.0)
        await asyncio.sleep(3)  # the three share the shards
        assert cut_off.parts.intake.loads(), "the replica to cut holds no shard"

        tenant = uuid.uuid4()
        docs = [uuid.uuid4() for _ in range(24)]
        commands = [
            upload_command(tenant, doc, "a.txt", "text/plain", f"{doc}:{n}".encode()) for n in range(8) for doc in docs
        ]
        events: list[dict[str, Any]] = []

        async def publish() -> None:
            for command in commands:
                await stack.send(command)
                await asyncio.sleep(0.02)

        publishing = asyncio.create_task(publish())
        await asyncio.sleep(1.5)
        running = cut_off.parts.intake.dispatcher.running
        relay.cut()
        cut_at = time.monotonic()
        await asyncio.sleep(12)  # past the broker's heartbeat timeout: it closes the connection, the shards move
        relay.heal()
        healed_at = time.monotonic()
        await publishing
        await stack.events_for({c.id for c in commands}, events, within=90)
        verdict = check_history(commands, events, stack.emulator.emulator.state)
        fenced_from = cut_at + stack.settings.membership_heartbeat_s * LEASE_HEARTBEATS + 0.5  # lease, a call's length
        requests = stack.emulator.emulator.requests
        written_while_fenced = [r for r in requests if r[3] == marked and fenced_from < r[0] < healed_at]
        written_before = [r for r in requests if r[3] == marked and cut_at - 3 < r[0] < cut_at]
        print(
            f"\ncut off with {running} commands running, for 12 s: {verdict}; "
            f"{time.monotonic() - cut_at:.1f} s from the cut to the last outcome; its DMS calls in the 3 s before the "
            f"cut: {len(written_before)}, after its lease ran out: {len(written_while_fenced)}"
        )
        assert written_before, "the replica to cut was not writing"
        assert not written_while_fenced, [(round(t - cut_at, 2), m, path) for t, m, path, _ in written_while_fenced[:8]]
        assert verdict.ok and not verdict.failed, verdict
        await asyncio.sleep(3)
        assert cut_off.parts.intake.loads(), "the replica did not rejoin after the heal"
