"""Exactly once per CloudEvent, from the producer's side: plain aio-pika publishes of the same CloudEvent,
state read back from the emulator. Also the trust boundary (what a producer says in the envelope or in
worker-only headers) and hostile bodies that must not stall a queue."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import aio_pika
import pytest

from worker.amqp.names import ATTEMPT_HEADER
from worker.amqp.routing import routing_key
from worker.contracts import Command
from worker.producer import delete_command, upload_command
from worker.results.events import to_message

from .conftest import Stack, StackFactory

pytestmark = pytest.mark.integration


async def publish_again(
    stack: Stack, command: Command, message_id: str | None = None, headers: dict[str, Any] | None = None
) -> None:
    """The same CloudEvent published once more, as a producer retrying after a lost confirm would."""
    message = to_message(command, headers=headers)
    message.message_id = message_id or command.id
    await stack.send_raw(message.body, message.message_id, headers=message.headers, type=command.type)


def versions(stack: Stack, tenant: uuid.UUID, document: uuid.UUID) -> list[tuple[str, bytes]]:
    series = stack.repository(tenant).series_by_name.get(str(document))
    content = stack.emulator.emulator.state.content
    return [(v.label, content.get(v.content_id)) for v in series.versions] if series else []


def outcome(event: dict[str, Any]) -> tuple[str, str, str]:
    return event["type"], event["data"].get("object_id", ""), event["data"].get("version_label", "")


async def test_a_cloudevent_published_twice_writes_one_version_and_both_events_agree(stack: Stack) -> None:
    tenant, doc = uuid.uuid4(), uuid.uuid4()
    a = upload_command(tenant, doc, "a.txt", "text/plain", b"A")
    await stack.send(a)
    await publish_again(stack, a)  # back to back
    first, second = await stack.next_events(2)
    await publish_again(stack, a)  # after its result
    (third,) = await stack.next_events(1)
    assert {e["data"]["command_id"] for e in (first, second, third)} == {a.id}
    assert outcome(first) == outcome(second) == outcome(third) == ("dms.upload.succeeded", outcome(first)[1], "1.0")
    assert versions(stack, tenant, doc) == [("1.0", b"A")]


async def test_a_republished_command_never_lands_on_top_of_a_later_one(stack: Stack) -> None:
    tenant, doc = uuid.uuid4(), uuid.uuid4()
    a, b = (upload_command(tenant, doc, "a.txt", "text/plain", body) for body in (b"A", b"B"))
    event_a = await stack.run(a)
    await stack.run(b)
    await publish_again(stack, a)
    (again,) = await stack.next_events(1)
    assert outcome(again) == outcome(event_a)
    assert versions(stack, tenant, doc) == [("1.0", b"A"), ("2.0", b"B")]


async def test_a_republished_upload_does_not_bring_a_deleted_document_back(stack: Stack) -> None:
    tenant, doc = uuid.uuid4(), uuid.uuid4()
    a = upload_command(tenant, doc, "a.txt", "text/plain", b"A")
    event_a = await stack.run(a)
    assert (await stack.run(delete_command(tenant, doc)))["data"]["existed"] is True
    await publish_again(stack, a)
    (again,) = await stack.next_events(1)
    assert outcome(again) == outcome(event_a)
    assert versions(stack, tenant, doc) == []


async def test_the_cloudevent_id_not_the_amqp_message_id_is_the_command_identity(stack: Stack) -> None:
    tenant, doc = uuid.uuid4(), uuid.uuid4()
    a = upload_command(tenant, doc, "a.txt", "text/plain", b"A")
    await publish_again(stack, a, message_id="first-try")
    await publish_again(stack, a, message_id="second-try")
    events = await stack.next_events(2)
    assert outcome(events[0]) == outcome(events[1])
    assert versions(stack, tenant, doc) == [("1.0", b"A")]

    b, c = (upload_command(tenant, doc, "a.txt", "text/plain", body) for body in (b"B", b"C"))
    await publish_again(stack, b, message_id="shared")
    await publish_again(stack, c, message_id="shared")
    events = await stack.next_events(2)
    assert [e["data"]["command_id"] for e in events] == [b.id, c.id]
    assert versions(stack, tenant, doc) == [("1.0", b"A"), ("2.0", b"B"), ("3.0", b"C")]


async def test_a_delete_body_sent_through_the_upload_exchange_is_refused(stack: Stack) -> None:
    tenant, doc = uuid.uuid4(), uuid.uuid4()
    await stack.run(upload_command(tenant, doc, "a.txt", "text/plain", b"A"))
    sneaky = delete_command(tenant, doc)
    await stack.send_raw(sneaky.model_dump_json().encode(), sneaky.id, kind="upload")
    (event,) = await stack.next_events(1)
    assert event["type"] == "dms.delete.failed" and event["data"]["error"]["code"] == "invalid_command"
    assert "must come through exchange" in event["data"]["error"]["message"]
    wrong_key = delete_command(tenant, doc)
    await stack.send_raw(wrong_key.model_dump_json().encode(), wrong_key.id, routing_key=f"{tenant}.0x")
    (event,) = await stack.next_events(1)
    assert event["data"]["error"]["code"] == "invalid_command" and "routing key" in event["data"]["error"]["message"]
    assert versions(stack, tenant, doc) == [("1.0", b"A")]


async def test_a_producers_attempt_header_does_not_cut_the_retries_short(make_stack: StackFactory) -> None:
    stack = await make_stack(retry_delays_ms=[50, 50, 50])
    tenant = uuid.uuid4()
    await stack.run(upload_command(tenant, uuid.uuid4(), "warm.txt", "text/plain", b"w"))
    await stack.set_faults(scripted=[{"kind": "status", "status": 503, "times": 2, "action": "createDocument"}])
    command = upload_command(tenant, uuid.uuid4(), "a.txt", "text/plain", b"A")
    await publish_again(stack, command, headers={ATTEMPT_HEADER: 999})
    (event,) = await stack.next_events(1)
    assert event["type"] == "dms.upload.succeeded" and event["data"]["attempts"] == 3


async def test_sixty_four_poison_messages_do_not_stall_the_good_commands_behind_them(make_stack: StackFactory) -> None:
    stack = await make_stack(in_flight_limit=8)
    tenant = uuid.uuid4()
    good = [upload_command(tenant, uuid.uuid4(), "a.txt", "text/plain", b"good") for _ in range(5)]
    poison = b'{"specversion": "1.0", "data": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    assert len(poison) > 20_000
    for n in range(64):  # in the shard queues of the tenant's documents, ahead of the good commands
        await stack.send_raw(poison, f"poison-{n}", routing_key=routing_key(tenant, good[n % 5].data.document_id))
    for command in good:
        await stack.send(command)
    events = await stack.next_events(69, timeout=60)
    failed = [e for e in events if e["data"]["command_id"].startswith("poison-")]
    assert len(failed) == 64 and {e["data"]["error"]["code"] for e in failed} == {"invalid_command"}
    assert "nested too deeply" in failed[0]["data"]["error"]["message"]
    assert {e["data"]["command_id"] for e in events if e["type"] == "dms.upload.succeeded"} == {c.id for c in good}
    await asyncio.sleep(0.5)
    assert not await stack.dead_letters()


async def test_a_body_larger_than_any_command_is_refused_unread(make_stack: StackFactory) -> None:
    stack = await make_stack(max_file_size=64 * 1024)
    body = json.dumps({"specversion": "1.0", "pad": "x" * 2_000_000}).encode()
    await stack.send_raw(body, "huge", routing_key="")
    (event,) = await stack.next_events(1)
    assert event["data"]["error"]["code"] == "invalid_command"
    assert "send larger files by content_url" in event["data"]["error"]["message"]


async def test_a_message_without_properties_or_headers_still_gets_a_result(stack: Stack) -> None:
    exchange = await stack.channel.get_exchange(f"{stack.settings.command_exchange}.upload")
    await exchange.publish(aio_pika.Message(b"{}"), routing_key="nothing")
    (event,) = await stack.next_events(1)
    assert event["data"]["error"]["code"] == "invalid_command" and event["data"]["command_id"]
