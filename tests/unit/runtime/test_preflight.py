"""``warn_if_no_destination``: one warning exactly when no tenant can have a DMS destination."""

from __future__ import annotations

import json
import uuid
from collections.abc import MutableMapping
from typing import Any

import pytest
import structlog.testing

from worker.runtime import preflight
from worker.settings import DestinationSettings

TENANT = uuid.UUID("0b6c3f0e-2a7f-4a59-9d4e-5b8f6f0f2c11")
KEY: dict[str, Any] = {
    "uri": "https://dms.example/",
    "uaa": {"clientid": "sb-dms", "clientsecret": "dms-s3cret", "url": "https://uaa.example"},
}
DESTINATION_BINDING = {
    "uri": "https://destination.example",
    "clientid": "sb-dest",
    "clientsecret": "dest-s3cret",
    "url": "https://uaa.example",
}


def warnings_for(**settings: Any) -> list[MutableMapping[str, Any]]:
    with structlog.testing.capture_logs() as logged:
        preflight.warn_if_no_destination(DestinationSettings(**settings))
    return [line for line in logged if line["log_level"] == "warning"]


def test_nothing_configured_is_one_warning_naming_the_variables() -> None:
    assert warnings_for() == [
        {
            "event": "no_dms_destination",
            "log_level": "warning",
            "hint": "uploads fail with unknown_tenant until one is set: DMS_WORKER_DESTINATION, "
            "DMS_WORKER_TENANT_DESTINATIONS, or a DMS (sdm) or Destination service binding in VCAP_SERVICES / "
            "SERVICE_BINDING_ROOT",
        }
    ]


def test_per_tenant_names_without_a_destination_service_binding_are_not_a_destination() -> None:
    assert [w["event"] for w in warnings_for(tenant_destination_names={TENANT: "CALM_B"})] == ["no_dms_destination"]


@pytest.mark.parametrize(
    "settings",
    [
        {"destination": KEY},
        {"tenant_destinations": {TENANT: KEY}},
        {"vcap_services": json.dumps({"sdm": [{"credentials": KEY}]})},
        {"vcap_services": json.dumps({"destination": [{"credentials": DESTINATION_BINDING}]})},
    ],
    ids=["destination", "tenant_destinations", "sdm_binding", "destination_service_binding"],
)
def test_any_destination_is_enough(settings: dict[str, Any]) -> None:
    assert warnings_for(**settings) == []
