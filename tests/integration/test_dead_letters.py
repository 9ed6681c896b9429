"""Dead-letter tooling: failures land in the DLQ, a filtered replay gets them processed, the rest stay."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid

import pytest

from worker.contracts import UploadCommand
from worker.producer import upload_command
from worker.results.dead_letters import DeadLetter, DeadLetterQueue, Selection

from .conftest import Stack

pytestmark = pytest.mark.integration


async def dead_letter_some(stack: Stack) -> tuple[uuid.UUID, uuid.UUID, list[UploadCommand], list[UploadCommand]]:
    tenant_a, tenant_b = uuid.uuid4(), uuid.uuid4()
    await stack.set_faults(scripted=[{"kind": "status", "status": 503, "times": 1000, "path_prefix": "/browser"}])
    a = [upload_command(tenant_a, uuid.uuid4(), f"a{i}.txt", "text/plain", b"a") for i in range(3)]
    b = [upload_command(tenant_b, uuid.uuid4(), f"b{i}.txt", "text/plain", b"b") for i in range(2)]
    for command in a + b:
        await stack.send(command)
    events = await stack.next_events(5)
    assert all(e["data"]["dead_lettered"] for e in events)
    await stack.set_faults(scripted=[])
    return tenant_a, tenant_b, a, b


async def test_filtered_replay_processes_the_selection_and_leaves_the_rest(stack: Stack) -> None:
    tenant_a, tenant_b, a, b = await dead_letter_some(stack)
    dlq = DeadLetterQueue(stack.connection, stack.settings)

    listed = await dlq.inspect(Selection())
    assert len(listed) == 5
    letter = next(d for d in listed if d.message_id == a[0].id)
    assert (letter.tenant_id, letter.error_code, letter.attempts) == (str(tenant_a), "dms_unavailable", 3)
    assert letter.first_death is not None and letter.last_death is not None and letter.replays == 0

    assert len(await dlq.replay(Selection(tenant_id=tenant_a), dry_run=True)) == 3
    assert len(await dlq.inspect(Selection())) == 5  # a dry run changes nothing

    replayed = await dlq.replay(Selection(tenant_id=tenant_a), limit=2)
    assert len(replayed) == 2
    events = await stack.next_events(2)
    assert {e["type"] for e in events} == {"dms.upload.succeeded"}
    assert {e["data"]["command_id"] for e in events} == {d.message_id for d in replayed}
    assert all(e["data"]["attempts"] == 1 for e in events)  # attempts reset on replay

    left = await dlq.inspect(Selection())
    assert sorted(str(d.message_id) for d in left) == sorted(
        [c.id for c in a if c.id not in {d.message_id for d in replayed}] + [c.id for c in b]
    )
    assert len(await dlq.purge(Selection(tenant_id=tenant_b))) == 2
    assert [d.tenant_id for d in await dlq.inspect(Selection())] == [str(tenant_a)]


async def test_cli_replays_by_message_id(stack: Stack) -> None:
    _, _, a, _ = await dead_letter_some(stack)
    env = {
        **os.environ,
        **{
            f"DMS_WORKER_{k.upper()}": str(v)
            for k, v in {
                "command_exchange": stack.settings.command_exchange,
                "dead_letter_queue": stack.settings.dead_letter_queue,
            }.items()
        },
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker",
        "dlq",
        "replay",
        "--message-id",
        a[1].id,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert json.loads(out.decode().splitlines()[0])["message_id"] == a[1].id
    (event,) = await stack.next_events(1)
    assert event["data"]["command_id"] == a[1].id and event["type"] == "dms.upload.succeeded"
    assert len(await DeadLetterQueue(stack.connection, stack.settings).inspect(Selection())) == 4


async def in_order(stack: Stack, dlq: DeadLetterQueue) -> list[str | None]:
    """The DLQ's message ids in queue order (the helper hands them back with nacks, which the broker takes
    after it answered: wait until it has)."""
    ids = [m.message_id for m in await stack.dead_letters()]
    for _ in range(500):
        if await dlq.depth() == len(ids):
            break
        await asyncio.sleep(0.01)
    return ids


async def test_a_pass_hands_back_what_it_holds_in_order_and_stops_where_told(stack: Stack) -> None:
    """Messages are read one at a time and held; the pass's channel closing returns them to the head of the
    DLQ in their order, also when a replay stops half-way or a find stops at its hit."""
    await dead_letter_some(stack)
    done: list[DeadLetter] = []

    class Done:
        def start(self, stage: str, total: int | None) -> None:
            pass

        def advance(self, letter: DeadLetter | None = None) -> None:
            done.extend([letter] if letter else [])

    dlq = DeadLetterQueue(stack.connection, stack.settings, Done())
    order = await in_order(stack, dlq)
    assert await dlq.depth() == 5

    found = await dlq.find(str(order[2]))
    assert found is not None and found.message_id == order[2] and found.body["data"]["file_name"]
    after = await in_order(stack, dlq)
    assert after == order, [order.index(m) for m in after]

    picked = frozenset(str(m) for m in order[1:4])
    (replayed,) = await dlq.replay(Selection(message_ids=picked), stop=lambda: len(done) >= 1)
    assert replayed.message_id == order[1]
    assert await in_order(stack, dlq) == [order[0], *order[2:]]
    text = Selection(text="ANSWERED 503", command_type="dms.upload")
    assert len(await dlq.inspect(text)) == 4 and await dlq.inspect(Selection(text="no such words")) == []
