"""A DMS destination: where DMS lives and how to get its token.

Accepts the DMS service key JSON (``uri`` + ``uaa.clientid/clientsecret/url``) or a BTP destination's
properties (``URL``, ``clientId``, ``clientSecret``, ``tokenServiceURL``), and normalises both.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr, model_validator

DEFAULT_DESTINATION_NAME = "CALM_SD_DMS_INTEGRATION"


class Destination(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str = DEFAULT_DESTINATION_NAME
    url: str  # DMS base URL, always ending with "/"
    client_id: str
    client_secret: SecretStr
    token_url: str

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        # Keys compared case-insensitively: environment sources may lower-case nested JSON keys.
        keys = {str(k).lower(): v for k, v in data.items()}
        if isinstance(keys.get("uaa"), dict):  # DMS service key
            uaa = {str(k).lower(): v for k, v in keys["uaa"].items()}
            endpoints = keys.get("endpoints") or {}
            uri = keys.get("uri") or endpoints.get("ecmservice", {}).get("url")
            data = {
                "name": keys.get("name", DEFAULT_DESTINATION_NAME),
                "url": uri,
                "client_id": uaa.get("clientid"),
                "client_secret": uaa.get("clientsecret"),
                "token_url": str(uaa.get("url", "")).rstrip("/") + "/oauth/token",
            }
        elif "clientid" in keys:  # BTP destination properties (URL, clientId, clientSecret, tokenServiceURL)
            data = {
                "name": keys.get("name", DEFAULT_DESTINATION_NAME),
                "url": keys.get("url"),
                "client_id": keys.get("clientid"),
                "client_secret": keys.get("clientsecret"),
                "token_url": keys.get("tokenserviceurl"),
            }
        if isinstance(data.get("url"), str) and not data["url"].endswith("/"):
            data = {**data, "url": data["url"] + "/"}
        return data

    def as_properties(self) -> dict[str, str]:
        """BTP destination properties, secret included (for handing to another process)."""
        return {
            "Name": self.name,
            "URL": self.url,
            "clientId": self.client_id,
            "clientSecret": self.client_secret.get_secret_value(),
            "tokenServiceURL": self.token_url,
        }

    @property
    def cache_key(self) -> tuple[str, str]:
        return (self.token_url, self.client_id)
