"""Running the way SAP BTP apps do, over real TLS and HTTP: X.509 service keys (mTLS token fetch), service
bindings from ``VCAP_SERVICES`` and ``SERVICE_BINDING_ROOT``, the Destination service, and what happens when
no destination can be resolved (readiness 503, commands kept in the DLQ, replayed once it exists)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.certificates import CertificateAuthority, Issued, server_contexts
from worker.dms.destinations import DEFAULT_DESTINATION_NAME, Destination
from worker.dms.tls import trust_context
from worker.dms.tokens import TokenCache
from worker.errors import TokenRejected
from worker.producer import upload_command
from worker.results.dead_letters import DeadLetterQueue, Selection
from worker.testing.emulator import Client, EmulatorConfig, EmulatorTls, RunningEmulator, serve_emulator

from .conftest import Stack, StackFactory

pytestmark = pytest.mark.integration

X509_CLIENT = Client("sb-x509-client", "not-used-by-x509", "default-zone", certificate_cn="dms-worker-x509")


def emulator_tls(ca: CertificateAuthority, directory: Path) -> EmulatorTls:
    return EmulatorTls(*server_contexts(ca, directory))


async def readiness(stack: Stack) -> tuple[int, str]:
    url = f"http://127.0.0.1:{stack.worker.parts.http_port}/readyz"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.text()


async def upload(stack: Stack, tenant: uuid.UUID | None = None) -> dict[str, Any]:
    return await stack.run(upload_command(tenant or uuid.uuid4(), uuid.uuid4(), "Plan.txt", "text/plain", b"plan"))


def x509_key(emulator: RunningEmulator, issued: Issued) -> dict[str, object]:
    return emulator.x509_service_key(X509_CLIENT, issued.certificate, issued.key)


def vcap_with(label: str, credentials: dict[str, object]) -> str:
    return json.dumps({label: [{"name": f"my-{label}", "label": label, "tags": [label], "credentials": credentials}]})


def destination_service_only(emulator: RunningEmulator) -> dict[str, Any]:
    return {"vcap_services": vcap_with("destination", emulator.destination_service_binding())}


# -- X.509 -----------------------------------------------------------------------------------------


async def test_an_x509_service_key_carries_an_upload_over_mtls(make_stack: StackFactory, tmp_path: Path) -> None:
    ca = CertificateAuthority()
    issued = ca.issue(X509_CLIENT.certificate_cn or "")
    stack = await make_stack(
        EmulatorConfig(clients=[X509_CLIENT]),
        destination=False,
        tls=emulator_tls(ca, tmp_path),
        ca_bundle=ca.write(tmp_path),
        settings_from=lambda emulator: {"destination": Destination.model_validate(x509_key(emulator, issued))},
    )
    assert stack.emulator.base_url.startswith("https://")
    event = await upload(stack)
    assert event["type"] == "dms.upload.succeeded" and event["data"]["version_label"] == "1.0"
    assert stack.emulator.emulator.tokens.issued == 1
    assert (await readiness(stack))[0] == 200
    assert issued.key not in repr(stack.settings) and issued.key not in str(stack.settings.destination)


async def test_a_wrong_certificate_is_a_clear_token_rejected(tmp_path: Path) -> None:
    ca, stranger = CertificateAuthority(), CertificateAuthority("not the tenant's CA")
    bundle = ca.write(tmp_path)
    async with (
        serve_emulator(EmulatorConfig(clients=[X509_CLIENT]), tls=emulator_tls(ca, tmp_path)) as emulator,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust_context(bundle))) as http,
    ):
        good = Destination.model_validate(x509_key(emulator, ca.issue("dms-worker-x509")))
        assert await TokenCache(http, ca_bundle=bundle).get(good)
        cases = [
            (stranger.issue("dms-worker-x509"), "refused the TLS connection"),  # the handshake fails
            (ca.issue("someone-else"), "answered 401"),  # a valid certificate, but not this client's
        ]
        for issued, reason in cases:
            with pytest.raises(TokenRejected, match=reason) as caught:
                await TokenCache(http, ca_bundle=bundle).get(Destination.model_validate(x509_key(emulator, issued)))
            assert caught.value.code == "token_rejected"
            shown = str(caught.value) + repr(caught.value) + repr(caught.value.__cause__)
            assert issued.key not in shown and "PRIVATE KEY" not in shown
        assert emulator.emulator.tokens.issued == 1


# -- service bindings -------------------------------------------------------------------------------


async def test_vcap_services_alone_carries_an_upload(make_stack: StackFactory) -> None:
    stack = await make_stack(
        destination=False, settings_from=lambda e: {"vcap_services": vcap_with("sdm", e.service_key())}
    )
    assert stack.settings.destination is None and not stack.settings.tenant_destinations
    event = await upload(stack)
    assert event["type"] == "dms.upload.succeeded" and event["data"]["version_label"] == "1.0"
    assert (await readiness(stack))[0] == 200


def write_binding(directory: Path, kind: str, credentials: dict[str, object]) -> None:
    """A binding as the SAP BTP service operator mounts it: one file per key, nested values as JSON."""
    directory.mkdir(parents=True)
    properties = []
    for key, value in {**credentials, "type": kind, "label": kind}.items():
        text = json.dumps(value) if isinstance(value, dict) else str(value)
        (directory / key).write_text(text)
        properties.append({"name": key, "format": "json" if isinstance(value, dict) else "text"})
    (directory / ".metadata").write_text(json.dumps({"credentialProperties": properties}))


async def test_service_binding_root_alone_carries_an_upload(make_stack: StackFactory, tmp_path: Path) -> None:
    def mount(emulator: RunningEmulator) -> dict[str, Any]:
        write_binding(tmp_path / "bindings" / "dms", "sdm", emulator.service_key())
        return {"service_binding_root": tmp_path / "bindings"}

    stack = await make_stack(destination=False, settings_from=mount)
    event = await upload(stack)
    assert event["type"] == "dms.upload.succeeded" and event["data"]["version_label"] == "1.0"


# -- the Destination service ------------------------------------------------------------------------


async def test_destination_service_lookup_is_cached_and_repeated_after_a_401(make_stack: StackFactory) -> None:
    other = Client("client-other", "secret-other", "zone-other")
    stack = await make_stack(
        EmulatorConfig(clients=[Client("emulator-client", "emulator-secret", "default-zone"), other]),
        destination=False,
        settings_from=destination_service_only,
    )
    emulator = stack.emulator.emulator
    emulator.destinations[DEFAULT_DESTINATION_NAME] = stack.emulator.destination_properties(DEFAULT_DESTINATION_NAME)
    emulator.destinations["CALM_OTHER"] = stack.emulator.destination_properties("CALM_OTHER", other)
    tenant, special = uuid.uuid4(), uuid.uuid4()
    stack.settings.tenant_destination_names[special] = "CALM_OTHER"
    service = stack.worker.parts.dms_clients.destination_service
    assert service is not None

    assert (await upload(stack, tenant))["data"]["version_label"] == "1.0"
    assert (await upload(stack, tenant))["data"]["version_label"] == "1.0"
    assert service.lookups == 1  # cached
    assert emulator.calls["token"] == 1  # the Destination service's own token; DMS's came in authTokens

    emulator.tokens.revoke_all()  # DMS (and the Destination service) now answer 401 to the cached tokens
    assert (await upload(stack, tenant))["type"] == "dms.upload.succeeded"
    assert service.lookups == 2  # looked up again after the 401

    assert (await upload(stack, special))["type"] == "dms.upload.succeeded"  # its own destination, by name
    assert [r.external_id for r in emulator.state.zone_repositories("zone-other")] == [str(special)]
    assert [r.external_id for r in emulator.state.zone_repositories("default-zone")] == [str(tenant)]


async def test_without_a_destination_readiness_fails_and_commands_wait_in_the_dlq(make_stack: StackFactory) -> None:
    stack = await make_stack(destination=False, settings_from=destination_service_only)
    status, body = await readiness(stack)
    assert status == 503 and "no DMS destination" in body and DEFAULT_DESTINATION_NAME in body, body

    commands = [upload_command(uuid.uuid4(), uuid.uuid4(), f"f{i}.txt", "text/plain", b"x") for i in range(2)]
    for command in commands:
        await stack.send(command)
    events = await stack.next_events(2)
    assert {(e["type"], e["data"]["error"]["code"], e["data"]["dead_lettered"]) for e in events} == {
        ("dms.upload.failed", "unknown_tenant", True)
    }
    dlq = DeadLetterQueue(stack.connection, stack.settings)
    assert sorted(str(d.message_id) for d in await dlq.inspect(Selection())) == sorted(c.id for c in commands)

    # The destination is created in the BTP cockpit: ready again, and a replay gets the commands done.
    stack.emulator.emulator.destinations[DEFAULT_DESTINATION_NAME] = stack.emulator.destination_properties(
        DEFAULT_DESTINATION_NAME
    )
    assert (await readiness(stack))[0] == 200
    assert len(await dlq.replay(Selection(error_code="unknown_tenant"))) == 2
    events = await stack.next_events(2)
    assert {(e["type"], e["data"]["version_label"]) for e in events} == {("dms.upload.succeeded", "1.0")}
    assert await dlq.inspect(Selection()) == []


async def test_with_nothing_configured_readiness_says_so(make_stack: StackFactory) -> None:
    stack = await make_stack(destination=False)
    status, body = await readiness(stack)
    assert status == 503 and "none configured" in body, body
