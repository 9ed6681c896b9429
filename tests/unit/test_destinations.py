from __future__ import annotations

import json
import uuid

from worker.destinations import DEFAULT_DESTINATION_NAME, Destination
from worker.settings import Settings


def test_service_key_becomes_a_destination() -> None:
    key = {
        "uri": "https://api-sdm-di.cfapps.eu10.hana.ondemand.com",
        "uaa": {"clientid": "sb-x", "clientsecret": "sec", "url": "https://sub.authentication.eu10.hana.ondemand.com/"},
    }
    dest = Destination.model_validate(key)
    assert dest.url == "https://api-sdm-di.cfapps.eu10.hana.ondemand.com/"
    assert dest.token_url == "https://sub.authentication.eu10.hana.ondemand.com/oauth/token"
    assert (dest.client_id, dest.client_secret.get_secret_value()) == ("sb-x", "sec")
    assert dest.name == DEFAULT_DESTINATION_NAME


def test_service_key_without_uri_uses_the_ecmservice_endpoint() -> None:
    key = {
        "endpoints": {"ecmservice": {"url": "https://dms/"}},
        "uaa": {"clientid": "a", "clientsecret": "b", "url": "https://uaa"},
    }
    assert Destination.model_validate(key).url == "https://dms/"


def test_btp_destination_properties_become_a_destination() -> None:
    props = {
        "Name": "CALM_SD_DMS_INTEGRATION",
        "Type": "HTTP",
        "URL": "https://dms.example",
        "Authentication": "OAuth2ClientCredentials",
        "clientId": "cid",
        "clientSecret": "sec",
        "tokenServiceURL": "https://uaa.example/oauth/token",
    }
    dest = Destination.model_validate(props)
    assert (dest.url, dest.token_url, dest.client_id) == ("https://dms.example/", props["tokenServiceURL"], "cid")


def test_settings_read_destinations_from_the_environment(monkeypatch) -> None:
    tenant = uuid.uuid4()
    monkeypatch.setenv(
        "DMS_WORKER_DESTINATION",
        '{"uri": "https://d/", "uaa": {"clientid": "a", "clientsecret": "b", "url": "https://u"}}',
    )
    other = {"URL": "https://other", "clientId": "c", "clientSecret": "d", "tokenServiceURL": "https://u2/oauth/token"}
    monkeypatch.setenv("DMS_WORKER_TENANT_DESTINATIONS", json.dumps({str(tenant): other}))
    settings = Settings(_env_file=None)
    assert settings.destination_for(tenant).url == "https://other/"
    assert settings.destination_for(uuid.uuid4()).url == "https://d/"


def test_without_a_default_destination_unknown_tenants_have_none() -> None:
    assert Settings(_env_file=None).destination_for(uuid.uuid4()) is None


def test_default_destination_from_the_environment_in_btp_form(monkeypatch) -> None:
    props = {
        "Name": "X",
        "URL": "https://dms",
        "clientId": "cid",
        "clientSecret": "sec",
        "tokenServiceURL": "https://uaa/oauth/token",
    }
    monkeypatch.setenv("DMS_WORKER_DESTINATION", json.dumps(props))
    dest = Settings(_env_file=None).destination
    assert dest is not None and (dest.url, dest.client_id, dest.token_url) == (
        "https://dms/",
        "cid",
        props["tokenServiceURL"],
    )


def test_settings_survive_a_round_trip_through_the_environment(monkeypatch) -> None:
    tenant = uuid.uuid4()
    dest = Destination(url="https://d/", client_id="a", client_secret="b", token_url="https://u/oauth/token")
    original = Settings(
        _env_file=None,
        destination=dest,
        tenant_destinations={tenant: dest},
        prefetch=3,
        retry_delays_ms=[5, 10],
        results_queue=None,
    )
    for key, value in original.as_environment().items():
        monkeypatch.setenv(key, value)
    again = Settings(_env_file=None)
    assert again.model_dump(mode="json") == original.model_dump(mode="json")
    assert again.destination.client_secret.get_secret_value() == "b"
