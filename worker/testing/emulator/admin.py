"""The DMS admin REST API (``{uri}rest/v2/repositories``) of the emulator."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from worker.testing.emulator import cmis_json
from worker.testing.emulator.base import EmulatorBase
from worker.testing.emulator.store import AdminFault


class AdminApi(EmulatorBase):
    async def list_repositories(self, request: web.Request) -> web.StreamResponse:
        self.calls["listRepositories"] += 1
        entries = [cmis_json.admin_repo_and_connection(r) for r in self.state.zone_repositories(self._zone(request))]
        # Documented quirk: with exactly one repository the list is a single object, except (inferred)
        # when the versioned media type is asked for.
        always_array = "version=3" in request.headers.get("Accept", "")
        payload: Any = entries[0] if len(entries) == 1 and not always_array else entries
        return web.json_response({"repoAndConnectionInfos": payload})

    async def create_repository(self, request: web.Request) -> web.StreamResponse:
        self.calls["createRepository"] += 1
        zone = self._zone(request)
        try:
            body = await request.json()
        except json.JSONDecodeError as exc:
            raise AdminFault(400, "Malformed JSON body") from exc
        repo = self.state.create_repository(zone, body if isinstance(body, dict) else {})
        return web.json_response(cmis_json.admin_repository(repo))

    async def get_repository(self, request: web.Request) -> web.StreamResponse:
        repo = self.state.repository(self._zone(request), request.match_info["id"])
        return web.json_response(cmis_json.admin_repo_and_connection(repo))

    async def count_repositories(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"count": len(self.state.zone_repositories(self._zone(request)))})

    async def delete_repository(self, request: web.Request) -> web.StreamResponse:
        self.calls["deleteRepository"] += 1
        repo_id = request.match_info["id"]
        self.state.delete_repository(self._zone(request), repo_id)
        return web.json_response({"message": f"Repository with id:{repo_id} deleted"})

    async def delete_all_repositories(self, request: web.Request) -> web.StreamResponse:
        # Faithful to the documented (dangerous) behaviour: no id deletes every repository of the zone.
        self.calls["deleteAllRepositories"] += 1
        zone = self._zone(request)
        for repo in self.state.zone_repositories(zone):
            self.state.delete_repository(zone, repo.id)
        return web.json_response({"message": "All repositories deleted"})
