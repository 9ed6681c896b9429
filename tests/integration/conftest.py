"""A worker wired to the real RabbitMQ broker and the DMS emulator over real sockets, per test.

Every test gets its own exchange/queue names, so tests never see each other's messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from tests.reading import read
from worker.amqp import routing, topology
from worker.amqp.names import command_exchange_name
from worker.contracts import DELETE, Command
from worker.dms.destinations import Destination
from worker.producer import publish_command
from worker.runtime.app import Worker
from worker.settings import Settings
from worker.testing.emulator import EmulatorConfig, EmulatorTls, RunningEmulator, serve_emulator
from worker.testing.emulator.store import Repository

# The broker the integration tests use (each test declares and deletes names of its own on it).
AMQP_URL = os.environ.get("DMS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
LATE_REPEATS_S = 2.0  # how long ``Stack.events_for`` watches for repeats while it cannot tell none will come


def settings_for(prefix: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "amqp_url": AMQP_URL,
        "command_exchange": f"{prefix}.commands",
        "command_queue": f"{prefix}.commands",
        "result_exchange": f"{prefix}.results",
        "results_queue": f"{prefix}.results.all",
        "dead_letter_queue": f"{prefix}.dlq",
        "shard_count": 4,
        "membership_heartbeat_s": 0.2,
        # A lone replica claims its shards at once (nobody to hear first); several replicas in one test listen
        # as in production (``Replicas`` and the tests that start a second ``Worker`` set 2).
        "membership_listen_heartbeats": 0,
        "retry_delays_ms": [200, 400],
        "log_json": True,
        "http_port": 0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@dataclass
class Stack:
    settings: Settings
    emulator: RunningEmulator
    worker: Worker
    channel: AbstractChannel
    connection: AbstractRobustConnection
    events: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)

    async def send(self, command: Command) -> None:
        await publish_command(self.channel, command, self.settings.command_exchange)

    async def send_raw(
        self, body: bytes, message_id: str | None, routing_key: str | None = None, kind: str | None = None, **props: Any
    ) -> None:
        """Publishes any body the way a careless or hostile producer might. Unless told otherwise it uses
        the exchange and routing key a correct producer would use for what the body claims to be."""
        ids = read(body).ids  # what the worker will make of it
        if routing_key is None:
            tenant, document = ids.get("tenant_id"), ids.get("document_id")
            routing_key = routing.routing_key(tenant, document) if tenant and document else ""
        kind = kind or ("delete" if ids.get("command_type") == DELETE else "upload")
        message = aio_pika.Message(
            body=body, message_id=message_id, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, **props
        )
        exchange = await self.channel.get_exchange(command_exchange_name(self.settings.command_exchange, kind))
        await exchange.publish(message, routing_key=routing_key)

    async def next_events(self, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        return [await asyncio.wait_for(self.events.get(), timeout) for _ in range(count)]

    async def events_for(self, wanted: set[str], events: list[dict[str, Any]], within: float) -> float:
        """Adds result events to ``events`` until every command in ``wanted`` has one or ``within`` seconds
        pass, then watches for repeats that come late and adds them: for up to ``LATE_REPEATS_S``, less once no
        repeat can come any more (``idle``, twice in a row). Returns the monotonic time the watch began."""
        deadline = time.monotonic() + within
        while wanted - {e["data"]["command_id"] for e in events} and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                events += await self.next_events(1, timeout=2)
        began = time.monotonic()
        quiet = 0
        while quiet < 2 and time.monotonic() - began < LATE_REPEATS_S:
            await asyncio.sleep(0.25)
            quiet = quiet + 1 if await self.idle() else 0
        while not self.events.empty():
            events.append(self.events.get_nowait())
        return began

    async def idle(self) -> bool:
        """Whether no result event can still come: this stack's worker runs, holds no command (none running or
        parked for a retry), is the only consumer of the shard queues (no replica process or second worker
        anywhere), and every queue but the dead letters' is empty (the results queue too: what was published
        has reached ``events``)."""
        parts = self.worker.parts
        if parts.connection.is_closed or parts.intake.dispatcher.held:
            return False
        held = set(parts.intake.loads())
        for number, name in enumerate(topology.shard_queue_names(self.settings)):
            declared = (await self.channel.declare_queue(name, passive=True)).declaration_result
            if declared.message_count or declared.consumer_count != int(number in held):
                return False
        results = await self.channel.declare_queue(self.settings.results_queue, passive=True)
        return not results.declaration_result.message_count

    async def run(self, command: Command, timeout: float = 20.0) -> dict[str, Any]:
        """Sends a command and returns its result event."""
        await self.send(command)
        (event,) = await self.next_events(1, timeout)
        assert event["data"]["command_id"] == command.id
        return event

    def repository(self, tenant_id: uuid.UUID, zone: str = "default-zone") -> Repository:
        (repo,) = [r for r in self.emulator.emulator.state.zone_repositories(zone) if r.external_id == str(tenant_id)]
        return repo

    async def set_faults(self, **faults: Any) -> None:
        """Adds to the emulator's faults; a ``seed`` given reseeds the rates' RNG (as the emulator's own fault
        endpoint does), so a run is repeatable."""
        injector = self.emulator.emulator.faults
        injector.config.update(faults)
        if "seed" in faults:
            injector.reseed()

    async def dead_letters(self) -> list[aio_pika.abc.AbstractIncomingMessage]:
        queue = await self.channel.declare_queue(self.settings.dead_letter_queue, passive=True)
        found = []
        while (message := await queue.get(fail=False, no_ack=False)) is not None:
            found.append(message)
        for message in found:
            await message.nack(requeue=True)
        return found


StackFactory = Callable[..., Awaitable[Stack]]


async def delete_topology(connection: AbstractRobustConnection, settings: Settings) -> None:
    for _ in range(50):  # a fault test may have just cut the connection: wait for the robust reconnect
        try:
            channel = await connection.channel()
            break
        except Exception:
            await asyncio.sleep(0.2)
    else:
        return
    await topology.delete_all(channel, settings)
    await channel.close()


async def open_stack(
    exits: AsyncExitStack,
    emulator_config: EmulatorConfig | None = None,
    destination: bool = True,
    tls: EmulatorTls | None = None,
    settings_from: Callable[[RunningEmulator], dict[str, Any]] | None = None,
    emulator: RunningEmulator | None = None,
    **overrides: Any,
) -> Stack:
    """A running stack whose parts ``exits`` closes (the topology deleted): for the fixture and benchmarks.
    ``emulator``: one already running (behind a network namespace, say) instead of a fresh one."""
    if emulator is None:
        emulator = await exits.enter_async_context(serve_emulator(emulator_config or EmulatorConfig(), tls=tls))
    if settings_from is not None:
        overrides.update(settings_from(emulator))
    if destination:
        overrides.setdefault("destination", Destination.model_validate(emulator.service_key()))
    settings = settings_for(f"test.{uuid.uuid4().hex[:10]}", **overrides)
    connection = await aio_pika.connect_robust(settings.amqp_url.get_secret_value())
    exits.push_async_callback(connection.close)
    exits.push_async_callback(delete_topology, connection, settings)
    worker = Worker(settings)
    await worker.start()
    exits.push_async_callback(worker.stop)
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    stack = Stack(settings, emulator, worker, channel, connection)
    results = await channel.declare_queue(settings.results_queue, passive=True)

    async def collect(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            await stack.events.put(json.loads(message.body))

    await results.consume(collect)
    return stack


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Each phase's report on the test item (``item.rep_call``): a fixture can tell whether its test failed
    (the console's browser tests keep their screenshots then)."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
async def make_stack() -> AsyncIterator[StackFactory]:
    """``await make_stack(emulator_config=..., destination=False, **settings)`` builds a running stack.

    ``tls`` serves the emulator over HTTPS (plus its mTLS token socket); ``settings_from(emulator)`` gives
    settings that depend on the running emulator (its URLs in a binding, say)."""
    async with AsyncExitStack() as exits:

        async def factory(emulator_config: EmulatorConfig | None = None, **options: Any) -> Stack:
            return await open_stack(exits, emulator_config, **options)

        yield factory


@pytest.fixture
async def stack(make_stack: StackFactory) -> Stack:
    return await make_stack()
