"""``python -m worker topology delete`` as an operator runs it: it says what goes, asks (or needs --yes), refuses
while workers are attached unless forced, and leaves nothing of the topology behind."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection

from tests.environment import as_environment
from worker.amqp import topology
from worker.settings import Settings

from .conftest import AMQP_URL, delete_topology, settings_for
from .test_cli import cli, environment

pytestmark = pytest.mark.integration


@pytest.fixture
async def declared() -> AsyncIterator[tuple[Settings, AbstractRobustConnection]]:
    """A topology of four shard queues with one message queued; removed afterwards whatever the test did."""
    settings = settings_for(f"test.{uuid.uuid4().hex[:10]}")
    connection = await aio_pika.connect_robust(AMQP_URL)
    try:
        channel = await connection.channel()
        await topology.declare(channel, settings)
        await channel.default_exchange.publish(aio_pika.Message(b"{}"), routing_key=settings.dead_letter_queue)
        yield settings, connection
    finally:
        await delete_topology(connection, settings)
        await connection.close()


async def left(settings: Settings, connection: AbstractRobustConnection) -> list[str]:
    return [q.name for q in await topology.existing_queues(connection, settings)]


async def test_without_a_terminal_it_needs_yes(
    declared: tuple[Settings, AbstractRobustConnection], tmp_path: Path
) -> None:
    settings, connection = declared
    outcome = await cli("topology", "delete", env=environment(**as_environment(settings)), cwd=tmp_path)
    lines = outcome.err.strip().splitlines()
    assert outcome.code == 2, outcome.err
    assert lines[0] == (
        f"topology {settings.command_queue}: 6 queues holding 1 messages, 0 consumers attached; exchanges "
        f"{settings.command_exchange}.upload, {settings.command_exchange}.delete, {settings.result_exchange}"
    )
    assert lines[1:] == ["error: not confirmed: nothing deleted (add --yes to delete without asking)"]
    assert len(await left(settings, connection)) == 6


async def test_refuses_while_a_worker_is_attached_unless_forced(
    declared: tuple[Settings, AbstractRobustConnection], tmp_path: Path
) -> None:
    settings, connection = declared
    channel = await connection.channel()
    shard = await channel.declare_queue(topology.shard_queue_names(settings)[0], passive=True)

    async def hold(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        await message.ack()

    await shard.consume(hold)
    env = environment(**as_environment(settings))

    outcome = await cli("topology", "delete", "--yes", env=env, cwd=tmp_path)
    assert outcome.code == 1, outcome.err
    assert outcome.err.strip().splitlines()[-1] == (
        "error: 1 consumers are attached to the topology's queues (workers running?): stop them, "
        "or add --force to delete it under them"
    )
    assert len(await left(settings, connection)) == 6

    outcome = await cli("topology", "delete", "--yes", "--force", env=env, cwd=tmp_path)
    assert outcome.code == 0, outcome.err
    assert outcome.rows() == [{"deleted_queues": 6, "dropped_messages": 1, "deleted_exchanges": 3}]
    assert await left(settings, connection) == []
    for name in topology.command_exchange_names(settings):
        with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
            await (await connection.channel()).get_exchange(name, ensure=True)
