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
from worker.results.dead_letters import DeadLetterQueue, Selection

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
    dlq = DeadLetterQueue(stack.channel, stack.settings)

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
    assert len(await DeadLetterQueue(stack.channel, stack.settings).inspect(Selection())) == 4
