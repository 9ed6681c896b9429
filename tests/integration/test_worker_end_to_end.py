"""The worker end to end: real RabbitMQ, the DMS emulator over HTTP, result events on the broker."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web
from pydantic import HttpUrl

from worker.amqp.names import ATTEMPT_HEADER, ERROR_CODE_HEADER
from worker.contracts import UploadCommand
from worker.dms.destinations import Destination
from worker.producer import delete_command, upload_command
from worker.settings import MIB
from worker.testing.emulator import EmulatorConfig
from worker.testing.emulator.store import EICAR_SIGNATURE

from ..http_host import serving
from .conftest import Stack, StackFactory

pytestmark = pytest.mark.integration


PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj <<>> endobj\n"
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + EICAR_SIGNATURE + b"$H+H*"


async def test_uploads_make_major_versions_in_the_tenant_repository(stack: Stack) -> None:
    tenant, doc = uuid.uuid4(), uuid.uuid4()
    labels, object_ids = [], []
    for number, name in enumerate(["Plan v1.pdf", "Plan v2.pdf", "Plan – final.pdf"], start=1):
        event = await stack.run(upload_command(tenant, doc, name, "application/pdf", PDF + bytes([number])))
        assert event["type"] == "dms.upload.succeeded", event
        labels.append(event["data"]["version_label"])
        object_ids.append(event["data"]["object_id"])
        assert event["data"]["file_name"] == name and event["data"]["attempts"] == 1

    assert labels == ["1.0", "2.0", "3.0"]
    repo = stack.repository(tenant)
    assert (repo.name, repo.description) == (
        "SAP Cloud ALM for Implementation",
        "Internal Repository for SAP Cloud ALM for Implementation",
    )
    assert repo.params["isVersionEnabled"] and repo.params["isVirusScanEnabled"] and repo.params["isEncryptionEnabled"]
    assert repo.params["isThumbnailEnabled"] is False
    series = repo.series_by_name[str(doc)]  # cmis:name is the document UUID, in ROOT
    assert [v.label for v in series.versions] == labels and all(v.is_major for v in series.versions)
    assert [v.object_id for v in series.versions] == object_ids
    assert series.latest.file_name == "Plan – final.pdf"
    assert stack.emulator.emulator.state.content.get(series.versions[0].content_id) == PDF + b"\x01"


async def test_delete_removes_all_versions_and_is_idempotent(stack: Stack) -> None:
    tenant, doc = uuid.uuid4(), uuid.uuid4()
    await stack.run(upload_command(tenant, doc, "a.txt", "text/plain", b"one"))
    await stack.run(upload_command(tenant, doc, "a.txt", "text/plain", b"two"))
    gone = await stack.run(delete_command(tenant, doc))
    assert gone["type"] == "dms.delete.succeeded" and gone["data"]["existed"] is True
    assert str(doc) not in stack.repository(tenant).series_by_name
    again = await stack.run(delete_command(tenant, doc))
    assert again["type"] == "dms.delete.succeeded" and again["data"]["existed"] is False


async def test_two_tenants_get_two_repositories(stack: Stack) -> None:
    tenants = [uuid.uuid4(), uuid.uuid4()]
    doc = uuid.uuid4()
    events = [await stack.run(upload_command(t, doc, "a.txt", "text/plain", b"x")) for t in tenants]
    assert events[0]["data"]["repository_id"] != events[1]["data"]["repository_id"]
    assert {stack.repository(t).id for t in tenants} == {e["data"]["repository_id"] for e in events}
    assert all(e["data"]["version_label"] == "1.0" for e in events)


async def test_bad_inputs_each_fail_clearly_and_the_worker_keeps_going(make_stack: StackFactory) -> None:
    stack = await make_stack(max_file_size=1 * MIB)
    tenant = uuid.uuid4()
    good = upload_command(tenant, uuid.uuid4(), "ok.txt", "text/plain", b"fine")
    bad_hash = upload_command(tenant, uuid.uuid4(), "a.txt", "text/plain", b"abc")
    bad_hash.data.sha256 = "0" * 64
    cases = [
        (upload_command(tenant, uuid.uuid4(), "big.pdf", "application/pdf", PDF + b"x" * MIB), "file_too_large"),
        (
            upload_command(tenant, uuid.uuid4(), "tool.exe", "application/octet-stream", b"MZ\x90\x00"),
            "unsupported_file_type",
        ),
        (
            upload_command(tenant, uuid.uuid4(), "invoice.pdf", "application/pdf", b"MZ\x90\x00rest"),
            "unsupported_file_type",
        ),
        (bad_hash, "integrity_mismatch"),
        (upload_command(tenant, uuid.uuid4(), "eicar.txt", "text/plain", EICAR), "virus_detected"),
    ]
    for command, code in cases:
        event = await stack.run(command)
        assert event["type"] == "dms.upload.failed", event
        assert event["data"]["error"]["code"] == code and event["data"]["retried"] is False
        assert event["data"]["error"]["message"]

    await stack.send_raw(b'{"type": "dms.upload", "data": {', message_id="broken-1")
    (malformed,) = await stack.next_events(1)
    assert malformed["data"]["command_id"] == "broken-1"
    assert malformed["data"]["error"]["code"] == "invalid_command"

    assert (await stack.run(good))["type"] == "dms.upload.succeeded"
    assert len(await stack.dead_letters()) == 0


async def test_unknown_tenant_fails_without_touching_dms(make_stack: StackFactory) -> None:
    known = uuid.uuid4()
    stack = await make_stack(destination=False)
    stack.settings.tenant_destinations[known] = Destination.model_validate(stack.emulator.service_key())
    event = await stack.run(upload_command(uuid.uuid4(), uuid.uuid4(), "a.txt", "text/plain", b"x"))
    assert event["data"]["error"]["code"] == "unknown_tenant"
    assert event["data"]["dead_lettered"] is True  # kept for a replay once the destination exists
    assert len(await stack.dead_letters()) == 1
    assert stack.emulator.emulator.calls["createDocument"] == 0
    assert (await stack.run(upload_command(known, uuid.uuid4(), "a.txt", "text/plain", b"x")))["type"] == (
        "dms.upload.succeeded"
    )


async def test_dms_503_is_retried_then_succeeds(stack: Stack) -> None:
    await stack.set_faults(
        scripted=[{"kind": "status", "status": 503, "times": 1, "path_prefix": "/browser", "action": "createDocument"}]
    )
    event = await stack.run(upload_command(uuid.uuid4(), uuid.uuid4(), "a.txt", "text/plain", b"x"))
    assert event["type"] == "dms.upload.succeeded" and event["data"]["attempts"] == 2
    assert event["data"]["version_label"] == "1.0"


async def test_persistent_dms_failure_ends_in_the_dead_letter_queue(stack: Stack) -> None:
    await stack.set_faults(scripted=[{"kind": "status", "status": 502, "times": 99, "path_prefix": "/browser"}])
    command = upload_command(uuid.uuid4(), uuid.uuid4(), "a.txt", "text/plain", b"x")
    event = await stack.run(command)
    assert event["type"] == "dms.upload.failed"
    assert event["data"]["dead_lettered"] is True and event["data"]["retried"] is True
    assert event["data"]["attempts"] == 3 and event["data"]["error"]["code"] == "dms_unavailable"
    (dead,) = await stack.dead_letters()
    assert dead.message_id == command.id and json.loads(dead.body)["id"] == command.id
    assert dead.headers[ERROR_CODE_HEADER] == "dms_unavailable" and dead.headers[ATTEMPT_HEADER] == 3


async def test_one_token_serves_fifty_concurrent_uploads_and_is_refetched_after_expiry(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(emulator_config=EmulatorConfig(token_lifetime_s=6), in_flight_limit=50)
    tenant = uuid.uuid4()
    await stack.run(upload_command(tenant, uuid.uuid4(), "warm.txt", "text/plain", b"repo"))  # creates the repo
    commands = [upload_command(tenant, uuid.uuid4(), f"f{i}.txt", "text/plain", b"x") for i in range(50)]
    await asyncio.gather(*(stack.send(c) for c in commands))
    events = await stack.next_events(50)
    assert {e["type"] for e in events} == {"dms.upload.succeeded"}
    assert stack.emulator.emulator.tokens.issued == 1
    # Past expiry (and past the refresh-ahead margin) on the worker's clock, without waiting it out: the cache
    # renews ahead of the emulator's expiry anyway (tests/unit/dms/ walks the same with a fake clock).
    tokens = stack.worker.parts.tokens
    tokens._clock = lambda: time.monotonic() + 6.2
    assert (await stack.run(upload_command(tenant, uuid.uuid4(), "late.txt", "text/plain", b"x")))["type"] == (
        "dms.upload.succeeded"
    )
    assert stack.emulator.emulator.tokens.issued == 2


async def test_revoked_token_is_replaced_on_401_without_failing_the_command(stack: Stack) -> None:
    tenant = uuid.uuid4()
    await stack.run(upload_command(tenant, uuid.uuid4(), "a.txt", "text/plain", b"x"))
    stack.emulator.emulator.tokens.revoke_all()
    event = await stack.run(upload_command(tenant, uuid.uuid4(), "b.txt", "text/plain", b"x"))
    assert event["type"] == "dms.upload.succeeded" and event["data"]["attempts"] == 1
    assert stack.emulator.emulator.tokens.issued == 2


@asynccontextmanager
async def file_server(files: dict[str, bytes]) -> AsyncIterator[str]:
    """A real HTTP file host on loopback; ``/redirect`` points off the allowlist."""

    async def serve(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name == "redirect":
            raise web.HTTPFound("http://169.254.169.254/latest/meta-data")
        if name not in files:
            raise web.HTTPNotFound()
        return web.Response(body=files[name])

    async with serving(serve) as base:
        yield base


def by_reference(tenant: uuid.UUID, url: str, size: int | None = None) -> UploadCommand:
    command = upload_command(tenant, uuid.uuid4(), "ref.pdf", "application/pdf", b"")
    command.data.content_base64, command.data.sha256, command.data.size = None, None, size
    command.data.content_url = HttpUrl(url)
    return command


async def test_content_by_reference_only_from_allowlisted_hosts(make_stack: StackFactory) -> None:
    stack = await make_stack(content_url_allowed_hosts=["127.0.0.1"])
    tenant = uuid.uuid4()
    async with file_server({"doc.pdf": PDF}) as base:
        ok = await stack.run(by_reference(tenant, base + "doc.pdf", size=len(PDF)))
        assert ok["type"] == "dms.upload.succeeded" and ok["data"]["size"] == len(PDF)
        missing = await stack.run(by_reference(tenant, base + "nothing.pdf"))
        redirected = await stack.run(by_reference(tenant, base + "redirect"))
    metadata = await stack.run(by_reference(tenant, "http://169.254.169.254/latest/meta-data"))
    assert [e["data"]["error"]["code"] for e in (missing, redirected, metadata)] == ["content_unavailable"] * 3


async def test_small_and_streamed_bodies_arrive_byte_for_byte(stack: Stack) -> None:
    tenant = uuid.uuid4()
    for size in (1, 256 * 1024, 256 * 1024 + 1, 3 * 1024 * 1024):  # either side of the single-write limit
        content = bytes(range(256)) * (size // 256) + b"\x00" * (size % 256)
        doc = uuid.uuid4()
        event = await stack.run(upload_command(tenant, doc, "blob.zip", "application/zip", b"PK\x03\x04" + content))
        assert event["type"] == "dms.upload.succeeded", event
        stored = stack.repository(tenant).series_by_name[str(doc)].latest
        assert stack.emulator.emulator.state.content.get(stored.content_id) == b"PK\x03\x04" + content
