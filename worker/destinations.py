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
        if "uaa" in data:  # service key
            uaa = data["uaa"]
            uri = data.get("uri") or data.get("endpoints", {}).get("ecmservice", {}).get("url")
            data = {
                "name": data.get("name", DEFAULT_DESTINATION_NAME),
                "url": uri,
                "client_id": uaa.get("clientid"),
                "client_secret": uaa.get("clientsecret"),
                "token_url": str(uaa.get("url", "")).rstrip("/") + "/oauth/token",
            }
        elif "URL" in data:  # BTP destination properties
            data = {
                "name": data.get("Name", DEFAULT_DESTINATION_NAME),
                "url": data.get("URL"),
                "client_id": data.get("clientId"),
                "client_secret": data.get("clientSecret"),
                "token_url": data.get("tokenServiceURL"),
            }
        if isinstance(data.get("url"), str) and not data["url"].endswith("/"):
            data = {**data, "url": data["url"] + "/"}
        return data

    @property
    def cache_key(self) -> tuple[str, str]:
        return (self.token_url, self.client_id)
