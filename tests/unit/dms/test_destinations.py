from __future__ import annotations

import json
import uuid

import pytest

from tests.environment import as_environment
from worker.dms.destinations import (
    DEFAULT_DESTINATION_NAME,
    Destination,
    DestinationName,
    DestinationSources,
    choose_destination,
    readiness_target,
)
from worker.settings import DestinationSettings, Settings


def test_service_key_becomes_a_destination() -> None:
    key = {
        "uri": "https://api-sdm-di.cfapps.eu10.hana.ondemand.com",
        "uaa": {"clientid": "sb-x", "clientsecret": "sec", "url": "https://sub.authentication.eu10.hana.ondemand.com/"},
    }
    dest = Destination.model_validate(key)
    assert dest.url == "https://api-sdm-di.cfapps.eu10.hana.ondemand.com/"
    assert dest.token_url == "https://sub.authentication.eu10.hana.ondemand.com/oauth/token"
    assert dest.client_secret is not None
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
    sources = configured(Settings(_env_file=None))
    for_tenant, default = choose_destination(tenant, sources), choose_destination(uuid.uuid4(), sources)
    assert isinstance(for_tenant, Destination) and for_tenant.url == "https://other/"
    assert isinstance(default, Destination) and default.url == "https://d/"


def test_without_a_default_destination_unknown_tenants_have_none() -> None:
    assert choose_destination(uuid.uuid4(), configured(DestinationSettings())) is None


def configured(settings: DestinationSettings) -> DestinationSources:
    """The destinations the settings give, nothing bound (as the worker's DmsClients.sources reads them)."""
    return DestinationSources(
        tenant_destinations=settings.tenant_destinations,
        destination=settings.destination,
        tenant_destination_names=settings.tenant_destination_names,
        destination_name=settings.destination_name,
    )


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
        in_flight_limit=3,
        retry_delays_ms=[5, 10],
        results_queue=None,
    )
    for key, value in as_environment(original).items():
        monkeypatch.setenv(key, value)
    again = Settings(_env_file=None)
    assert again.model_dump(mode="json") == original.model_dump(mode="json")
    assert again.destination is not None and again.destination.client_secret is not None
    assert again.destination.client_secret.get_secret_value() == "b"


X509_KEY = {
    "uri": "https://api-sdm-di.cfapps.eu10.hana.ondemand.com/",
    "uaa": {
        "clientid": "sb-x509",
        "credential-type": "x509",
        "certificate": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        "key": "-----BEGIN PRIVATE KEY-----\nsecret-key-material\n-----END PRIVATE KEY-----\n",
        "certurl": "https://sub.authentication.cert.eu10.hana.ondemand.com",
        "url": "https://sub.authentication.eu10.hana.ondemand.com",
    },
}


class TestX509ServiceKeys:
    """``credential-type: x509``: certificate and key instead of a secret, the token from ``certurl``."""

    def test_the_token_comes_from_the_cert_host(self) -> None:
        dest = Destination.model_validate(X509_KEY)
        assert dest.is_x509 and dest.client_secret is None
        assert dest.token_url == "https://sub.authentication.cert.eu10.hana.ondemand.com/oauth/token"
        assert dest.key is not None and "secret-key-material" in dest.key.get_secret_value()

    def test_certificate_and_key_may_sit_in_an_x509_section(self) -> None:
        uaa = {k: v for k, v in X509_KEY["uaa"].items() if k not in {"certificate", "key"}}  # type: ignore[attr-defined]
        section = {"certificate": X509_KEY["uaa"]["certificate"], "key": X509_KEY["uaa"]["key"]}  # type: ignore[index]
        assert Destination.model_validate({**X509_KEY, "uaa": uaa, "x509": section}).is_x509

    def test_repr_and_errors_never_show_the_key(self) -> None:
        dest = Destination.model_validate(X509_KEY)
        assert "secret-key-material" not in repr(dest) + str(dest)
        assert "BEGIN CERTIFICATE" not in repr(dest)  # long and useless in a log line
        broken = {**X509_KEY, "uaa": {**X509_KEY["uaa"], "certurl": None, "url": None}}  # type: ignore[dict-item]
        with pytest.raises(ValueError) as caught:
            Destination.model_validate(broken)
        assert "secret-key-material" not in str(caught.value)

    def test_properties_round_trip(self) -> None:
        dest = Destination.model_validate(X509_KEY)
        assert Destination.model_validate(dest.as_properties()) == dest

    def test_neither_secret_nor_certificate_is_refused(self) -> None:
        with pytest.raises(ValueError, match="neither a client secret nor a certificate"):
            Destination(url="https://d/", client_id="a", token_url="https://u/oauth/token")


def test_a_flat_binding_is_the_destination_service_layout() -> None:
    dest = Destination.model_validate(
        {"uri": "https://destination.example", "clientid": "c", "clientsecret": "s", "url": "https://uaa.example/"}
    )
    assert (dest.url, dest.token_url) == ("https://destination.example/", "https://uaa.example/oauth/token")


def _dest(url: str) -> Destination:
    return Destination(url=url, client_id="a", client_secret="b", token_url="https://u/oauth/token")


class TestChooseDestination:
    """The order of precedence, per tenant then for everyone (pure)."""

    tenant, named, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    ENV, BOUND, TENANT = _dest("https://env/"), _dest("https://bound/"), _dest("https://tenant/")

    def sources(self, **overrides: object) -> DestinationSources:
        values: dict[str, object] = {
            "tenant_destinations": {self.tenant: self.TENANT},
            "destination": self.ENV,
            "bound_dms": self.BOUND,
            "destination_service": True,
            "tenant_destination_names": {self.named: "CALM_B", self.tenant: "IGNORED"},
            "destination_name": "CALM_SD_DMS_INTEGRATION",
        }
        return DestinationSources(**{**values, **overrides})  # type: ignore[arg-type]

    def test_tenant_entries_come_first(self) -> None:
        assert choose_destination(self.tenant, self.sources()) == self.TENANT
        assert choose_destination(self.named, self.sources()) == DestinationName("CALM_B")

    def test_then_the_environment_then_the_binding_then_the_destination_service(self) -> None:
        assert choose_destination(self.other, self.sources()) == self.ENV
        assert choose_destination(self.other, self.sources(destination=None)) == self.BOUND
        assert choose_destination(self.other, self.sources(destination=None, bound_dms=None)) == DestinationName(
            "CALM_SD_DMS_INTEGRATION"
        )

    def test_names_need_the_destination_service(self) -> None:
        sources = self.sources(destination_service=False, destination=None, bound_dms=None)
        assert choose_destination(self.named, sources) is None
        assert choose_destination(self.tenant, sources) == self.TENANT

    def test_nothing_configured_means_no_destination_and_nothing_to_check(self) -> None:
        assert choose_destination(self.other, DestinationSources()) is None
        assert readiness_target(DestinationSources()) is None

    def test_readiness_checks_the_default_else_a_tenants(self) -> None:
        assert readiness_target(self.sources()) == self.ENV
        assert readiness_target(DestinationSources(tenant_destinations={self.tenant: self.TENANT})) == self.TENANT
        only_names = DestinationSources(destination_service=True, tenant_destination_names={self.named: "CALM_B"})
        assert readiness_target(only_names) == DestinationName("CALM_SD_DMS_INTEGRATION")
