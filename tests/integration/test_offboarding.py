"""Offboarding from the operator's side: ``python -m worker tenant offboard`` in a subprocess against the real
broker, an in-process worker and the DMS emulator over HTTP. Two tenants with documents and versions; one is
offboarded, the other's documents, versions and repository stay exactly as they were (read in the emulator)."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import pytest

from worker.amqp.tombstones import BrokerTombstones
from worker.contracts import UploadCommand
from worker.dms.tokens import basic_auth_header
from worker.producer import upload_command

from .conftest import AMQP_URL, Stack, StackFactory
from .test_cli import Outcome, cli, environment, stack_env, start_cli

pytestmark = pytest.mark.integration

A, B = uuid.uuid4(), uuid.uuid4()
ZONE = "default-zone"


@pytest.fixture
async def offboarding_stack(make_stack: StackFactory) -> AsyncIterator[Stack]:
    """A stack whose tenants' tombstones (durable exchanges) are removed afterwards, like its topology. A
    command whose DMS call fails waits 6 s before its next attempt (held by the replica meanwhile)."""
    stack = await make_stack(retry_delays_ms=[6000])
    yield stack
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        for tenant in (A, B):
            await BrokerTombstones(connection, stack.settings.command_exchange).remove(tenant)


async def fill(stack: Stack, tenant: uuid.UUID, documents: int, versions: int = 1) -> None:
    """``documents`` documents of ``versions`` versions each, written by the worker."""
    commands: list[UploadCommand] = []
    for _ in range(documents):
        document = uuid.uuid4()
        commands += [
            upload_command(tenant, document, f"v{n}.txt", "text/plain", f"{document} {n}".encode())
            for n in range(versions)
        ]
    for command in commands:
        await stack.send(command)
    events = await stack.next_events(len(commands), timeout=60)
    assert {e["type"] for e in events} == {"dms.upload.succeeded"}


def contents(stack: Stack, tenant: uuid.UUID) -> dict[str, Any] | None:
    """Everything the emulator holds for the tenant: its repository and each document's versions."""
    repos = [r for r in stack.emulator.emulator.state.zone_repositories(ZONE) if r.external_id == str(tenant)]
    if not repos:
        return None
    (repo,) = repos
    documents = {
        name: [(v.object_id, v.label, v.content_id) for v in series.versions]
        for name, series in repo.series_by_name.items()
    }
    return {"id": repo.id, "name": repo.name, "documents": documents}


async def holds_tombstone(stack: Stack, tenant: uuid.UUID) -> bool:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        return await BrokerTombstones(connection, stack.settings.command_exchange).holds(tenant)


async def offboard(stack: Stack, tmp_path: Path, *options: str, tenant: uuid.UUID = A) -> Outcome:
    return await cli("tenant", "offboard", "--tenant", str(tenant), *options, env=stack_env(stack), cwd=tmp_path)


async def test_offboarding_one_tenant_leaves_the_other_untouched(offboarding_stack: Stack, tmp_path: Path) -> None:
    stack = offboarding_stack
    await fill(stack, A, documents=6, versions=2)
    await fill(stack, A, documents=3, versions=1)
    await fill(stack, B, documents=4, versions=3)
    a_before, b_before = contents(stack, A), contents(stack, B)
    assert a_before is not None and b_before is not None

    dry = await offboard(stack, tmp_path)
    assert dry.code == 0, dry.err
    (plan,) = dry.rows()
    assert plan["repository"]["id"] == a_before["id"]
    assert plan["repository"]["name"] == "SAP Cloud ALM for Implementation"
    assert (plan["documents"], plan["versions"], plan["tombstone"], plan["would_refuse"]) == (9, 15, False, None)
    assert "dry run: --yes would lay" in dry.err
    assert contents(stack, A) == a_before and not await holds_tombstone(stack, A)  # the dry run changed nothing

    done = await offboard(stack, tmp_path, "--yes", "--rate", "0")
    assert done.code == 0, done.err
    (event,) = done.rows()
    assert event["type"] == "dms.tenant.offboarded"
    data = event["data"]
    assert (data["tenant_id"], data["repository_id"]) == (str(A), a_before["id"])
    assert (data["documents_deleted"], data["versions_deleted"], data["resumed"], data["forced"]) == (
        9,
        15,
        False,
        False,
    )
    assert "disconnect its DMS destination" in done.err
    assert contents(stack, A) is None and contents(stack, B) == b_before
    assert await holds_tombstone(stack, A) and not await holds_tombstone(stack, B)
    (kept,) = await stack.next_events(1)  # the catch-all results queue has the event too
    assert kept["id"] == event["id"]

    refused = await stack.run(upload_command(A, uuid.uuid4(), "late.txt", "text/plain", b"too late"))
    assert refused["type"] == "dms.upload.failed"
    assert refused["data"]["error"]["code"] == "tenant_offboarded"
    assert (refused["data"]["dead_lettered"], refused["data"]["retried"]) == (False, False)
    assert contents(stack, A) is None  # no repository created for it
    assert (await stack.run(upload_command(B, uuid.uuid4(), "b.txt", "text/plain", b"B goes on")))["type"] == (
        "dms.upload.succeeded"
    )

    reenabled = await cli("tenant", "reenable", "--tenant", str(A), env=stack_env(stack), cwd=tmp_path)
    assert reenabled.rows() == [{"tenant_id": str(A), "reenabled": True}]
    back = await stack.run(upload_command(A, uuid.uuid4(), "again.txt", "text/plain", b"back"))
    assert back["data"]["version_label"] == "1.0"
    fresh = contents(stack, A)
    assert fresh is not None and fresh["id"] != a_before["id"] and len(fresh["documents"]) == 1


async def test_a_killed_run_is_finished_by_the_next_one(offboarding_stack: Stack, tmp_path: Path) -> None:
    stack = offboarding_stack
    await fill(stack, A, documents=80)
    await fill(stack, B, documents=5, versions=2)
    b_before = contents(stack, B)

    process = await start_cli(
        "tenant", "offboard", "--tenant", str(A), "--yes", "--rate", "20", env=stack_env(stack), cwd=tmp_path
    )
    assert process.stderr is not None
    while True:  # JSON progress lines on stderr (no terminal): kill it once some documents are gone
        line = await asyncio.wait_for(process.stderr.readline(), 30)
        assert line, "the run ended before it could be killed"
        progress = json.loads(line)
        if progress.get("stage") == "deleting" and progress["done"] >= 5:
            break
    process.send_signal(signal.SIGKILL)
    await process.wait()
    left = contents(stack, A)
    assert left is not None and 0 < len(left["documents"]) < 80
    assert await holds_tombstone(stack, A)

    finished = await offboard(stack, tmp_path, "--yes", "--rate", "0")
    assert finished.code == 0, finished.err
    (event,) = finished.rows()
    assert event["data"]["resumed"] is True
    assert event["data"]["documents_deleted"] == len(left["documents"])
    assert contents(stack, A) is None and contents(stack, B) == b_before


async def create_foreign_repository(stack: Stack, tenant: uuid.UUID) -> str:
    """Another application's repository that claims the tenant's externalId, with a document in it."""
    base = stack.emulator.base_url
    async with aiohttp.ClientSession() as http:
        token = await http.post(
            base + "oauth/token",
            data={"grant_type": "client_credentials"},
            headers={"Authorization": basic_auth_header("emulator-client", "emulator-secret")},
        )
        auth = {"Authorization": f"Bearer {(await token.json())['access_token']}"}
        spec = {"displayName": "Project files", "repositoryType": "internal", "externalId": str(tenant)}
        created = await http.post(base + "rest/v2/repositories", json={"repository": spec}, headers=auth)
        repo_id = str((await created.json())["id"])
        form = aiohttp.FormData()
        for key, value in {
            "cmisaction": "createDocument",
            "propertyId[0]": "cmis:name",
            "propertyValue[0]": "x",
        }.items():
            form.add_field(key, value)
        form.add_field("content", b"theirs", filename="x.txt", content_type="text/plain")
        assert (await http.post(f"{base}browser/{repo_id}/root", data=form, headers=auth)).status == 201
    return repo_id


async def test_a_foreign_repository_with_the_tenants_external_id_is_refused_untouched(
    offboarding_stack: Stack, tmp_path: Path
) -> None:
    stack = offboarding_stack
    repo_id = await create_foreign_repository(stack, A)
    before = contents(stack, A)
    for options in ((), ("--yes",), ("--yes", "--force")):
        outcome = await offboard(stack, tmp_path, *options)
        outcome.assert_one_line_mistake(1, repo_id, "'Project files'", "not ours to delete; nothing was touched")
    assert contents(stack, A) == before and not await holds_tombstone(stack, A)


async def test_it_refuses_while_the_tenants_commands_are_in_flight_or_queued(
    offboarding_stack: Stack, tmp_path: Path
) -> None:
    stack = offboarding_stack
    await fill(stack, A, documents=2)
    before = contents(stack, A)

    # Three uploads whose first createDocument fails: held by the replica, parked for their retry.
    await stack.set_faults(scripted=[{"kind": "status", "status": 503, "times": 3, "action": "createDocument"}])
    for _ in range(3):
        await stack.send(upload_command(A, uuid.uuid4(), "later.txt", "text/plain", b"later"))
    await asyncio.sleep(0.5)
    busy = await offboard(stack, tmp_path, "--yes")
    busy.assert_one_line_mistake(1, "3 held by the replicas", "add --force")
    assert {e["type"] for e in await stack.next_events(3, timeout=20)} == {"dms.upload.succeeded"}

    await stack.worker.stop()  # no replica: commands wait in the shard queues
    for _ in range(2):
        await stack.send(upload_command(A, uuid.uuid4(), "queued.txt", "text/plain", b"queued"))
    queued = await offboard(stack, tmp_path, "--yes")
    queued.assert_one_line_mistake(1, "up to 2 queued unread in the", "shard queues its commands use")
    after_refusals = contents(stack, A)
    assert after_refusals is not None and len(after_refusals["documents"]) == 5
    assert before is not None and after_refusals["id"] == before["id"] and not await holds_tombstone(stack, A)

    forced = await offboard(stack, tmp_path, "--yes", "--force", "--rate", "0")
    assert forced.code == 0, forced.err
    (event,) = forced.rows()
    assert (event["data"]["forced"], event["data"]["documents_deleted"]) == (True, 5)
    assert contents(stack, A) is None


async def test_without_the_tenants_destination_it_says_the_order(tmp_path: Path) -> None:
    outcome = await cli("tenant", "offboard", "--tenant", str(A), "--yes", env=environment(), cwd=tmp_path)
    outcome.assert_one_line_mistake(1, "no DMS destination", "before the destination is disconnected")
