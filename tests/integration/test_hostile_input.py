"""A corpus of hostile commands through the real broker: each fails clearly, tenants stay apart,
and no secret or token shows up in logs, events or dead letters."""

from __future__ import annotations

import base64
import io
import json
import uuid

import pytest
import structlog

from worker.contracts import UploadCommand
from worker.dms.destinations import Destination
from worker.producer import upload_command
from worker.results.dead_letters import DeadLetterQueue, Selection
from worker.runtime import logs
from worker.testing.emulator import Client, EmulatorConfig
from worker.testing.emulator.store import EICAR_SIGNATURE

from .conftest import StackFactory

pytestmark = pytest.mark.integration


SECRET_A = "sEcReT-tenant-a-7f3b9c"
SECRET_B = "sEcReT-tenant-b-91de04"
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + EICAR_SIGNATURE + b"$H+H*"


def raw(command: UploadCommand, **data_changes: object) -> bytes:
    body = json.loads(command.model_dump_json())
    body["data"].update(data_changes)
    return json.dumps(body).encode()


async def test_hostile_corpus_fails_clearly_and_tenants_never_mix(make_stack: StackFactory) -> None:
    config = EmulatorConfig(clients=[Client("client-a", SECRET_A, "zone-a"), Client("client-b", SECRET_B, "zone-b")])
    tenant_a, tenant_b = uuid.uuid4(), uuid.uuid4()
    stack = await make_stack(
        emulator_config=config, destination=False, max_file_size=64 * 1024, content_url_allowed_hosts=["files.example"]
    )
    key_a = stack.emulator.service_key(config.clients[0])
    key_b = stack.emulator.service_key(config.clients[1])
    stack.settings.tenant_destinations.update(
        {tenant_a: Destination.model_validate(key_a), tenant_b: Destination.model_validate(key_b)}
    )
    output = io.StringIO()
    logs.configure("DEBUG", json_output=True, stream=output)
    issued: list[str] = []
    original_issue = stack.emulator.emulator.tokens.issue

    def recording_issue(client: Client) -> tuple[str, int]:
        token, expires = original_issue(client)
        issued.append(token)
        return token, expires

    stack.emulator.emulator.tokens.issue = recording_issue  # type: ignore[method-assign]
    try:
        good = upload_command(tenant_a, uuid.uuid4(), "a.txt", "text/plain", b"ok")
        corpus: list[tuple[bytes, str]] = [
            (b"\x00\xff garbage", "invalid_command"),
            (b'{"specversion": "1.0", "type": "dms.upload", "data": {"tenant_id": 5}}', "invalid_command"),
            (raw(good, content_base64="QUJDQUJDQ"), "invalid_command"),  # truncated base64
            (raw(good, content_base64=base64.b64encode(b"x" * 70_000).decode()), "file_too_large"),
            (raw(good, size=3), "integrity_mismatch"),
            (raw(good, sha256="a" * 64), "integrity_mismatch"),
            (raw(good, size="two"), "invalid_command"),
            (raw(good, file_name="../../" + "\x00" * 3), "invalid_command"),
            (
                raw(
                    good,
                    file_name="run.pdf",
                    mime_type="application/pdf",
                    content_base64=base64.b64encode(b"\x7fELF\x02\x01").decode(),
                    size=None,
                    sha256=None,
                ),
                "unsupported_file_type",
            ),
            (raw(good, content_base64=base64.b64encode(EICAR).decode(), size=None, sha256=None), "virus_detected"),
            (
                raw(good, content_base64=None, content_url="http://127.0.0.1:15672/api", size=None, sha256=None),
                "content_unavailable",
            ),
            (
                raw(good, content_base64=None, content_url="http://169.254.169.254/", size=None, sha256=None),
                "content_unavailable",
            ),
            (
                raw(good, content_base64=None, content_url="http://10.1.2.3/x", size=None, sha256=None),
                "content_unavailable",
            ),
            (raw(good, tenant_id=str(uuid.uuid4())), "unknown_tenant"),
        ]
        for n, (body, code) in enumerate(corpus):
            await stack.send_raw(body, message_id=f"hostile-{n}")
            (event,) = await stack.next_events(1)
            # The CloudEvent id names the command; a body without one is named by its AMQP message id.
            command_id = good.id if b'"id": "' + good.id.encode() in body else f"hostile-{n}"
            assert (event["data"]["command_id"], event["data"]["error"]["code"]) == (command_id, code), event

        traversal = upload_command(tenant_b, uuid.uuid4(), "../../tenant-a/evil\x1b[31m.txt", "text/plain", b"b")
        event = await stack.run(traversal)
        assert event["type"] == "dms.upload.succeeded" and event["data"]["file_name"] == "evil[31m.txt"
        assert (await stack.run(good))["type"] == "dms.upload.succeeded"

        # Tenant B's credentials stop working: failures, never a write with tenant A's destination.
        stack.emulator.emulator.tokens._clients.pop("client-b")
        stack.emulator.emulator.tokens.revoke_all()
        refused = await stack.run(upload_command(tenant_b, uuid.uuid4(), "b.txt", "text/plain", b"b"))
        assert refused["data"]["error"]["code"] == "token_rejected" and refused["data"]["dead_lettered"] is True
    finally:
        structlog.reset_defaults()

    state = stack.emulator.emulator.state
    (repo_a,) = state.zone_repositories("zone-a")
    (repo_b,) = state.zone_repositories("zone-b")
    assert (repo_a.external_id, repo_b.external_id) == (str(tenant_a), str(tenant_b))
    assert set(repo_a.series_by_name) == {str(good.data.document_id)}
    assert set(repo_b.series_by_name) == {str(traversal.data.document_id)}

    dead = await DeadLetterQueue(stack.connection, stack.settings).inspect(Selection())
    exposed = (
        output.getvalue()
        + json.dumps([d.as_row() for d in dead])
        + json.dumps([repr(stack.settings), str(stack.settings.tenant_destinations)])
    )
    assert issued and "token_fetched" in exposed
    for secret in [SECRET_A, SECRET_B, *issued, "guest:guest"]:
        assert secret not in exposed, "a secret leaked"
