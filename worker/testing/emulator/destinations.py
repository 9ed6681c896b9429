"""The emulator's stand-in for the SAP BTP Destination service: "find destination" by name.

``GET {uri}destination-configuration/v1/destinations/{name}`` with a token of the Destination service's own
client answers ``{"owner", "destinationConfiguration", "authTokens"}``; for ``OAuth2ClientCredentials`` the
token is fetched from this emulator's token authority with the destination's client id and secret, and an
``authTokens`` entry carries ``error`` instead when that fails, as SAP documents. 404 for an unknown name.
Destinations are added and removed at runtime through the control API (``/_emulator/destinations/{name}``).
"""

from __future__ import annotations

import json

from aiohttp import web

from worker.testing.emulator.base import EmulatorBase

FIND_PREFIX = "/destination-configuration/v1/destinations/"


class DestinationServiceApi(EmulatorBase):
    async def find_destination(self, request: web.Request) -> web.StreamResponse:
        self.calls["findDestination"] += 1
        if self.tokens.zone_for(request.headers.get("Authorization")) != self.config.destination_service.zone:
            return web.json_response({"ErrorMessage": "Unauthorized"}, status=401)
        name = request.match_info["name"]
        configuration = self.destinations.get(name)
        if configuration is None:
            return web.json_response(
                {"ErrorMessage": "Configuration with the specified name was not found"}, status=404
            )
        body: dict[str, object] = {
            "owner": {"SubaccountId": "emulated-subaccount", "InstanceId": None},
            "destinationConfiguration": configuration,
        }
        if configuration.get("Authentication") == "OAuth2ClientCredentials":
            body["authTokens"] = [self._auth_token(configuration)]
        return web.json_response(body)

    def _auth_token(self, configuration: dict[str, str]) -> dict[str, object]:
        credentials = {
            "client_id": configuration.get("clientId", ""),
            "client_secret": configuration.get("clientSecret", ""),
        }
        client = self.tokens.authenticate(None, credentials)
        if client is None:
            return {"type": "", "value": "", "error": "Retrieval of OAuthToken failed due to: 401 Unauthorized"}
        token, expires_in = self.tokens.issue(client)
        return {
            "type": "Bearer",
            "value": token,
            "expires_in": str(expires_in),  # a string, as the real service sends it
            "http_header": {"key": "Authorization", "value": f"Bearer {token}"},
        }

    # -- control API -----------------------------------------------------------------------------

    async def put_destination(self, request: web.Request) -> web.StreamResponse:
        try:
            configuration = await request.json()
        except json.JSONDecodeError:
            return web.json_response({"message": "Malformed JSON body"}, status=400)
        name = request.match_info["name"]
        self.destinations[name] = {**{str(k): str(v) for k, v in configuration.items()}, "Name": name}
        return web.json_response({"Name": name})

    async def delete_destination(self, request: web.Request) -> web.StreamResponse:
        found = self.destinations.pop(request.match_info["name"], None)
        return web.json_response({"deleted": found is not None})
