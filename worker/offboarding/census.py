"""Are commands for the tenant still on their way? Asked before anything is deleted.

Three places can hold them, and each is counted without disturbing the order of a shard queue:

* the replicas: each answers how many of the tenant's commands it holds (running, parked in retry backoff,
  waiting in its read-ahead; ``worker.intake.census``); the live replicas are those whose heartbeats come on
  the members exchange, so one that does not answer is seen;
* the shard queues the tenant's 16 lanes land in (asked of the broker's own routing, ``shard_probe``):
  commands there that no replica has read yet. A queue is shared with other tenants and is never read (a
  read would return its messages behind a replica's and count toward their delivery limit), so this is an
  upper bound;
* the dead-letter queue, whose messages are read (and given back) as ``dlq list`` does.

``refusal`` (pure) turns the counts into the one line that stops ``--yes`` without ``--force``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from worker.amqp.names import census_exchange_name, members_exchange_name, shard_queue_name
from worker.amqp.routing import LANES
from worker.amqp.shard_probe import shards_of
from worker.amqp.topology import exchange_exists
from worker.results.dead_letters import DeadLetterQueue, Selection
from worker.settings import TopologySettings

REPLY_GRACE_S = 2.0  # how long past the listening window a live replica may take to answer


@dataclass(frozen=True)
class Census:
    replicas: int  # live replicas (heartbeats heard, or answers)
    answered: int
    held: int  # the tenant's commands the replicas that answered hold
    queued: int  # commands nobody has read yet in the tenant's shard queues (any tenant's: an upper bound)
    queues: int  # how many shard queues the tenant's lanes land in
    dead_letters: int  # the tenant's commands in the DLQ

    def as_row(self) -> dict[str, int]:
        return dict(vars(self))


def refusal(census: Census, tenant_id: uuid.UUID) -> str | None:
    """The line that stops an offboarding while commands for the tenant are pending; None when none are."""
    parts = []
    if census.held:
        parts.append(f"{census.held} held by the replicas (running, retrying or read ahead)")
    if census.replicas > census.answered:
        parts.append(f"{census.replicas - census.answered} of {census.replicas} replicas did not say what they hold")
    if census.queued:
        parts.append(
            f"up to {census.queued} queued unread in the {census.queues} shard queues its commands use "
            "(shared with other tenants)"
        )
    if census.dead_letters:
        parts.append(f"{census.dead_letters} in the dead-letter queue")
    if not parts:
        return None
    return (
        f"commands for tenant {tenant_id} are pending: {'; '.join(parts)}. Wait until they are done (`python -m "
        f"worker results --tenant {tenant_id}` follows them), drop its dead letters (`python -m worker dlq purge "
        f"--tenant {tenant_id}`), or add --force to offboard anyway (its later uploads fail as tenant_offboarded)"
    )


async def take_census(
    connection: AbstractConnection,
    settings: TopologySettings,
    heartbeat_s: float,  # MEMBERSHIP_HEARTBEAT_S: how long the replicas are given to answer
    tenant_id: uuid.UUID,
    scan_limit: int = 10_000,
) -> Census:
    replicas, answered, held = await _ask_replicas(connection, settings, heartbeat_s, tenant_id)
    queued, queues = await _unread_in_tenant_queues(connection, settings, tenant_id)
    return Census(
        replicas, answered, held, queued, queues, await _dead_letters(connection, settings, tenant_id, scan_limit)
    )


async def _ask_replicas(
    connection: AbstractConnection, settings: TopologySettings, heartbeat_s: float, tenant_id: uuid.UUID
) -> tuple[int, int, int]:
    """(live replicas, how many answered, what they hold of the tenant's commands)."""
    members_exchange = members_exchange_name(settings.command_queue)
    if not await exchange_exists(connection, members_exchange):
        return 0, 0, 0  # the replicas declare it while they run (auto-delete): none runs
    census_exchange = census_exchange_name(settings.command_queue)
    live: set[str] = set()
    answers: dict[str, int] = {}
    heard = asyncio.Event()
    request_id = uuid.uuid4().hex

    async def on_beat(message: AbstractIncomingMessage) -> None:
        try:
            beat = json.loads(message.body)
            member, leaving = str(beat["member"]), bool(beat.get("leaving"))
        except (ValueError, KeyError, TypeError):
            return
        (live.discard if leaving else live.add)(member)
        heard.set()

    async def on_answer(message: AbstractIncomingMessage) -> None:
        if message.correlation_id != request_id:
            return
        try:
            answer = json.loads(message.body)
            answers[str(answer["member"])] = max(0, int(answer["held"]))
        except (ValueError, KeyError, TypeError):
            return
        heard.set()

    channel = await connection.channel()
    async with channel:
        beats = await channel.declare_queue(exclusive=True, auto_delete=True)
        await beats.bind(members_exchange)
        await beats.consume(on_beat, no_ack=True)
        replies = await channel.declare_queue(exclusive=True, auto_delete=True)
        await replies.consume(on_answer, no_ack=True)
        if await exchange_exists(connection, census_exchange):
            exchange = await channel.get_exchange(census_exchange, ensure=False)
            body = json.dumps({"tenant": str(tenant_id)}).encode()
            request = aio_pika.Message(body, reply_to=replies.name, correlation_id=request_id)
            await exchange.publish(request, routing_key="", mandatory=False)
        # Every live replica beats once per heartbeat: listen for 1.5 of them, then give the slow ones a moment.
        loop = asyncio.get_running_loop()
        await asyncio.sleep(heartbeat_s * 1.5)
        deadline = loop.time() + REPLY_GRACE_S
        while live - answers.keys() and loop.time() < deadline:
            heard.clear()
            try:
                await asyncio.wait_for(heard.wait(), deadline - loop.time())
            except TimeoutError:
                break
        await beats.delete(if_unused=False, if_empty=False)
        await replies.delete(if_unused=False, if_empty=False)
    return len(live | answers.keys()), len(answers), sum(answers.values())


async def _unread_in_tenant_queues(
    connection: AbstractConnection, settings: TopologySettings, tenant_id: uuid.UUID
) -> tuple[int, int]:
    """(ready commands in the shard queues the tenant's lanes land in, how many such queues)."""
    keys = [f"{tenant_id}.{lane}" for lane in range(LANES)]
    shards = sorted(set((await shards_of(connection, settings.shard_count, keys)).values()))
    ready = 0
    channel = await connection.channel()
    try:
        for shard in shards:
            try:
                queue = await channel.declare_queue(shard_queue_name(settings.command_queue, shard), passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                channel = await connection.channel()  # no topology declared: nothing queued there
                continue
            ready += queue.declaration_result.message_count or 0
    finally:
        if not channel.is_closed:
            await channel.close()
    return ready, len(shards)


async def _dead_letters(
    connection: AbstractConnection, settings: TopologySettings, tenant_id: uuid.UUID, scan_limit: int
) -> int:
    try:
        return len(await DeadLetterQueue(connection, settings).inspect(Selection(tenant_id=tenant_id), scan_limit))
    except aiormq.exceptions.ChannelNotFoundEntity:
        return 0  # no DLQ declared
