"""A DMS destination: where DMS lives and how to get its token; and which destination a tenant gets.

Accepts the DMS service key JSON (``uri`` + ``uaa.clientid/clientsecret/url``, or an X.509 key with
``uaa.credential-type: x509``, ``certificate``, ``key`` and ``certurl``), a flat binding in the XSUAA layout
(``uri``, ``clientid``, ``clientsecret``, ``url``: the Destination service's own binding), or a BTP destination's
properties (``URL``, ``clientId``, ``clientSecret``, ``tokenServiceURL``), and normalises them all.

``choose_destination`` is the pure decision of which destination serves a tenant, in the documented order of
precedence (README, *Running on SAP BTP*).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

DEFAULT_DESTINATION_NAME = "CALM_SD_DMS_INTEGRATION"


def _lower_keys(data: Mapping[Any, Any]) -> dict[str, Any]:
    # Keys compared case-insensitively: environment sources may lower-case nested JSON keys.
    return {str(k).lower(): v for k, v in data.items()}


def _credentials(uaa: dict[str, Any], outer: dict[str, Any]) -> dict[str, Any]:
    """client id, secret or certificate and key, and the token URL, from an XSUAA credentials section."""
    section = outer.get("x509") if isinstance(outer.get("x509"), dict) else {}
    x509 = _lower_keys(section or {})
    certificate = uaa.get("certificate") or x509.get("certificate") or outer.get("certificate")
    key = uaa.get("key") or x509.get("key") or outer.get("key")
    is_x509 = str(uaa.get("credential-type", "")).lower() == "x509" or (
        certificate and key and not uaa.get("clientsecret")
    )
    base = uaa.get("certurl") if is_x509 and uaa.get("certurl") else uaa.get("url", "")
    return {
        "client_id": uaa.get("clientid"),
        "client_secret": None if is_x509 else uaa.get("clientsecret"),
        "certificate": certificate if is_x509 else None,
        "key": key if is_x509 else None,
        "token_url": str(base).rstrip("/") + "/oauth/token",
    }


class Destination(BaseModel):
    model_config = ConfigDict(frozen=True, hide_input_in_errors=True)  # the input holds the secrets

    name: str = DEFAULT_DESTINATION_NAME
    url: str  # DMS base URL, always ending with "/"
    client_id: str
    client_secret: SecretStr | None = None  # None for X.509 credentials
    token_url: str
    certificate: str | None = Field(default=None, repr=False)  # PEM chain, X.509 credentials only
    key: SecretStr | None = None  # PEM private key, X.509 credentials only

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        keys = _lower_keys(data)
        if isinstance(keys.get("uaa"), dict):  # DMS service key
            endpoints = keys.get("endpoints") or {}
            uri = keys.get("uri") or endpoints.get("ecmservice", {}).get("url")
            data = {
                "name": keys.get("name", DEFAULT_DESTINATION_NAME),
                "url": uri,
                **_credentials(_lower_keys(keys["uaa"]), keys),
            }
        elif "uri" in keys and "clientid" in keys:  # flat XSUAA-style binding (the Destination service's own)
            data = {"name": keys.get("name", "destination-service"), "url": keys["uri"], **_credentials(keys, keys)}
        elif "clientid" in keys:  # BTP destination properties (URL, clientId, clientSecret, tokenServiceURL)
            data = {
                "name": keys.get("name", DEFAULT_DESTINATION_NAME),
                "url": keys.get("url"),
                "client_id": keys.get("clientid"),
                "client_secret": keys.get("clientsecret"),
                "token_url": keys.get("tokenserviceurl"),
                "certificate": keys.get("certificate"),
                "key": keys.get("key"),
            }
        if isinstance(data.get("url"), str) and not data["url"].endswith("/"):
            data = {**data, "url": data["url"] + "/"}
        return data

    @model_validator(mode="after")
    def _has_credentials(self) -> Destination:
        for field_name, value in (("url", self.url), ("token_url", self.token_url)):
            if not value.startswith(("https://", "http://")):
                raise ValueError(f"destination {self.name}: {field_name} is not an http(s) URL")
        if self.client_secret is None and (self.certificate is None or self.key is None):
            raise ValueError(f"destination {self.name} has neither a client secret nor a certificate and key")
        return self

    @property
    def is_x509(self) -> bool:
        return self.client_secret is None

    def secrets(self) -> list[str]:
        """The secret values, for the log redactor."""
        return [s.get_secret_value() for s in (self.client_secret, self.key) if s is not None]

    def as_properties(self) -> dict[str, str]:
        """BTP destination properties, secrets included (for handing to another process)."""
        properties = {"Name": self.name, "URL": self.url, "clientId": self.client_id, "tokenServiceURL": self.token_url}
        if self.client_secret is not None:
            properties["clientSecret"] = self.client_secret.get_secret_value()
        if self.certificate is not None and self.key is not None:
            properties.update(certificate=self.certificate, key=self.key.get_secret_value())
        return properties

    @property
    def cache_key(self) -> tuple[str, str]:
        return (self.token_url, self.client_id)


@dataclass(frozen=True)
class DestinationName:
    """A destination to be looked up by name in the BTP Destination service."""

    name: str

    @property
    def url(self) -> str:
        """A stable identity for caches keyed by DMS (the real URL is known only after the lookup)."""
        return f"destination-service:{self.name}"


@dataclass(frozen=True)
class DestinationSources:
    """Every place a destination can come from, as configured or discovered."""

    tenant_destinations: Mapping[uuid.UUID, Destination] = field(default_factory=dict)  # TENANT_DESTINATIONS
    destination: Destination | None = None  # DESTINATION
    bound_dms: Destination | None = None  # an ``sdm`` binding (VCAP_SERVICES or SERVICE_BINDING_ROOT)
    destination_service: bool = False  # a ``destination`` binding exists
    tenant_destination_names: Mapping[uuid.UUID, str] = field(default_factory=dict)
    destination_name: str = DEFAULT_DESTINATION_NAME


def choose_destination(
    tenant_id: uuid.UUID | None, sources: DestinationSources
) -> Destination | DestinationName | None:
    """Which destination serves this tenant (``None``: what a tenant with no entry of its own gets).

    Tenant entries first (environment, then a per-tenant name in the Destination service), then the default:
    the ``DESTINATION`` variable, then a DMS service binding, then the Destination service's default name.
    """
    if tenant_id is not None:
        if tenant_id in sources.tenant_destinations:
            return sources.tenant_destinations[tenant_id]
        if sources.destination_service and tenant_id in sources.tenant_destination_names:
            return DestinationName(sources.tenant_destination_names[tenant_id])
    if sources.destination is not None:
        return sources.destination
    if sources.bound_dms is not None:
        return sources.bound_dms
    if sources.destination_service:
        return DestinationName(sources.destination_name)
    return None


def readiness_target(sources: DestinationSources) -> Destination | DestinationName | None:
    """The destination readiness checks: the default one, else the first tenant's; None when there is none."""
    default = choose_destination(None, sources)
    if default is not None:
        return default
    if sources.tenant_destinations:
        return next(iter(sources.tenant_destinations.values()))
    if sources.destination_service and sources.tenant_destination_names:
        return DestinationName(next(iter(sources.tenant_destination_names.values())))
    return None
