"""Service bindings: Cloud Foundry's VCAP_SERVICES and servicebinding.io directories become destinations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import structlog
import structlog.testing

from tests.environment import as_environment
from worker.dms import bindings
from worker.dms.bindings import discover, from_binding_root, from_vcap_services
from worker.settings import Settings

SDM: dict[str, Any] = {
    "uri": "https://api-sdm-di.cfapps.eu10.hana.ondemand.com/",
    "uaa": {
        "clientid": "sb-dms",
        "clientsecret": "dms-s3cret",
        "url": "https://sub.authentication.eu10.hana.ondemand.com",
    },
}
DESTINATION = {
    "uri": "https://destination-configuration.cfapps.eu10.hana.ondemand.com",
    "clientid": "sb-dest",
    "clientsecret": "dest-s3cret",
    "url": "https://sub.authentication.eu10.hana.ondemand.com",
}


def vcap(**groups: list[dict[str, Any]]) -> str:
    return json.dumps(groups)


class TestVcapServices:
    """Cloud Foundry: entries under the ``sdm`` and ``destination`` labels (or carrying that label)."""

    def test_both_bindings_are_found(self) -> None:
        found = from_vcap_services(
            vcap(
                sdm=[{"name": "dms", "label": "sdm", "credentials": SDM}],
                destination=[{"name": "dest", "label": "destination", "credentials": DESTINATION}],
            )
        )
        assert found.dms is not None and found.destination_service is not None
        assert (found.dms.url, found.dms.client_id, found.dms.name) == (SDM["uri"], "sb-dms", "dms")
        assert found.dms.token_url == "https://sub.authentication.eu10.hana.ondemand.com/oauth/token"
        service = found.destination_service
        assert service.url == "https://destination-configuration.cfapps.eu10.hana.ondemand.com/"
        assert service.token_url == "https://sub.authentication.eu10.hana.ondemand.com/oauth/token"
        assert service.client_secret is not None and service.client_secret.get_secret_value() == "dest-s3cret"

    def test_an_entry_carrying_the_label_under_another_key_counts(self) -> None:
        found = from_vcap_services(vcap(**{"user-provided": [{"name": "x", "label": "sdm", "credentials": SDM}]}))
        assert found.dms is not None and found.destination_service is None

    def test_unusable_entries_are_skipped_without_showing_secrets(self, capsys: pytest.CaptureFixture[str]) -> None:
        broken = {"uri": "https://x/", "uaa": {"clientid": "a", "clientsecret": "leaky-s3cret"}}
        structlog.configure(processors=[structlog.processors.JSONRenderer()])
        try:
            found = from_vcap_services(vcap(sdm=[{"name": "bad", "credentials": broken}, {"credentials": SDM}]))
        finally:
            structlog.reset_defaults()
        assert found.dms is not None and found.dms.client_id == "sb-dms"
        out = capsys.readouterr().out
        assert "service_binding_unusable" in out and "leaky-s3cret" not in out

    @pytest.mark.parametrize("text", ["", "not json", "[]", '{"sdm": "nope"}'])
    def test_garbage_finds_nothing(self, text: str) -> None:
        found = from_vcap_services(text)
        assert found.dms is None and found.destination_service is None


def write_binding(directory: Path, files: dict[str, str], metadata: dict[str, object] | None = None) -> None:
    directory.mkdir(parents=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    if metadata is not None:
        (directory / ".metadata").write_text(json.dumps(metadata))


class TestServiceBindingRoot:
    """servicebinding.io: one directory per binding, one file per key, ``type`` says which service."""

    def test_operator_layout_with_nested_json_and_metadata(self, tmp_path: Path) -> None:
        write_binding(
            tmp_path / "dms",
            {"type": "sdm", "uri": SDM["uri"], "uaa": json.dumps(SDM["uaa"]), "instance_name": "dms"},
            {"credentialProperties": [{"name": "uaa", "format": "json"}, {"name": "uri", "format": "text"}]},
        )
        write_binding(tmp_path / "destination", {**{k: str(v) for k, v in DESTINATION.items()}, "type": "destination"})
        write_binding(tmp_path / "other", {"type": "xsuaa", "clientid": "x"})
        found = from_binding_root(tmp_path)
        assert found.dms is not None and found.dms.client_id == "sb-dms" and found.dms.name == "dms"
        assert found.destination_service is not None and found.destination_service.client_id == "sb-dest"

    def test_a_missing_root_finds_nothing(self, tmp_path: Path) -> None:
        found = from_binding_root(tmp_path / "absent")
        assert found.dms is None and found.destination_service is None

    def test_vcap_services_wins_over_the_binding_root(self, tmp_path: Path) -> None:
        other = {**SDM, "uri": "https://other-dms/"}
        write_binding(tmp_path / "dms", {"type": "sdm", "uri": other["uri"], "uaa": json.dumps(SDM["uaa"])})
        found = discover(vcap(sdm=[{"credentials": SDM}]), tmp_path)
        assert found.dms is not None and found.dms.url == SDM["uri"]
        assert discover(None, tmp_path).dms is not None
        assert discover(None, None).dms is None


def test_discover_says_each_finding_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """A start-up retried while the broker is away discovers on every try; its log says it once."""
    monkeypatch.setattr(bindings, "_reported", set())
    with structlog.testing.capture_logs() as logged:
        for _ in range(3):
            discover(None, None)
        discover(vcap(sdm=[{"credentials": SDM}]), None)  # a binding that appears later is said
        discover(vcap(sdm=[{"credentials": SDM}]), None)
    assert [(e["event"], e["dms"], e["destination_service"]) for e in logged] == [
        ("service_bindings", False, False),
        ("service_bindings", True, False),
    ]


def test_settings_read_the_platform_variables_without_our_prefix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("VCAP_SERVICES", vcap(sdm=[{"credentials": SDM}]))
    monkeypatch.setenv("SERVICE_BINDING_ROOT", str(tmp_path))
    monkeypatch.setenv("DMS_WORKER_TENANT_DESTINATION_NAMES", '{"0b6c3f0e-2a7f-4a59-9d4e-5b8f6f0f2c11": "CALM_B"}')
    settings = Settings(_env_file=None)
    assert settings.vcap_services is not None and "sb-dms" in settings.vcap_services.get_secret_value()
    assert settings.service_binding_root == tmp_path
    assert list(settings.tenant_destination_names.values()) == ["CALM_B"]
    assert "dms-s3cret" not in repr(settings)
    env = as_environment(settings)
    assert env["VCAP_SERVICES"] == settings.vcap_services.get_secret_value()
    assert env["SERVICE_BINDING_ROOT"] == str(tmp_path)
