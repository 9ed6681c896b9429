"""The emulator's aiohttp application: token endpoint, admin REST API, CMIS browser binding, control API."""

from __future__ import annotations

import json
import urllib.parse
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from worker.emulator import cmis_json, persistence, query
from worker.emulator.content import ContentStore, DirectoryContentStore, MemoryContentStore
from worker.emulator.faults import FaultConfig, FaultInjector, fault_response
from worker.emulator.forms import CmisForm, read_form
from worker.emulator.store import AdminFault, CmisFault, DmsState, Repository
from worker.emulator.tokens import Client, TokenAuthority

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CONTROL_PREFIX = "/_emulator"


@dataclass
class EmulatorConfig:
    clients: list[Client] = field(
        default_factory=lambda: [Client("emulator-client", "emulator-secret", "default-zone")]
    )
    token_lifetime_s: float = 3600.0
    max_content_size: int = 400 * 1024 * 1024
    data_dir: Path | None = None
    faults: FaultConfig = field(default_factory=FaultConfig)


class Emulator:
    """Holds the state; ``make_app`` wires its handlers into an aiohttp application."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        content: ContentStore = DirectoryContentStore(config.data_dir) if config.data_dir else MemoryContentStore()
        self.state = DmsState(content, config.max_content_size)
        if config.data_dir:
            persistence.load(self.state, config.data_dir)
        self.tokens = TokenAuthority(config.clients, config.token_lifetime_s)
        self.faults = FaultInjector(config.faults)
        self.calls: Counter[str] = Counter()

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=self.config.max_content_size + 2**20)
        app.router.add_post("/oauth/token", self.token)
        app.router.add_get("/rest/v2/repositories", self.list_repositories)
        app.router.add_post("/rest/v2/repositories", self.create_repository)
        app.router.add_delete("/rest/v2/repositories", self.delete_all_repositories)
        app.router.add_get("/rest/v2/repositories/count", self.count_repositories)
        app.router.add_get("/rest/v2/repositories/{id}", self.get_repository)
        app.router.add_delete("/rest/v2/repositories/{id}", self.delete_repository)
        app.router.add_get("/browser", self.service_root)
        app.router.add_get("/browser/{repo}", self.repository_get)
        app.router.add_post("/browser/{repo}", self.repository_post)
        app.router.add_get("/browser/{repo}/root{path:(/.*)?}", self.root_get)
        app.router.add_post("/browser/{repo}/root{path:(/.*)?}", self.root_post)
        app.router.add_get(CONTROL_PREFIX + "/stats", self.stats)
        app.router.add_get(CONTROL_PREFIX + "/faults", self.get_faults)
        app.router.add_post(CONTROL_PREFIX + "/faults", self.set_faults)
        app.router.add_post(CONTROL_PREFIX + "/tokens/revoke", self.revoke_tokens)
        app.router.add_post(CONTROL_PREFIX + "/token-lifetime", self.set_token_lifetime)
        return app

    # -- cross-cutting ---------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(CONTROL_PREFIX):
            return await handler(request)
        if self.faults.config.latency_ms:
            import asyncio

            await asyncio.sleep(self.faults.config.latency_ms / 1000)
        # POSTs to the browser binding pick their fault once the form (and its cmisaction) is read.
        if not (request.method == "POST" and request.path.startswith("/browser")):
            fault = self.faults.pick(request.path, request.query.get("cmisselector"))
            if fault is not None:
                return fault_response(request, fault)
        try:
            response = await handler(request)
        except CmisFault as fault:
            return web.json_response({"exception": fault.exception, "message": fault.message}, status=fault.status)
        except AdminFault as fault:
            return web.json_response({"message": fault.message}, status=fault.status)
        if request.method in {"POST", "DELETE"} and self.config.data_dir and response.status < 400:
            persistence.save(self.state, self.config.data_dir)
        return response

    def _zone(self, request: web.Request) -> str:
        zone = self.tokens.zone_for(request.headers.get("Authorization"))
        if zone is None:
            raise web.HTTPUnauthorized(
                text=json.dumps({"exception": "unauthorized", "message": "Invalid or expired token"}),
                content_type="application/json",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return zone

    def _cmis_repo(self, request: web.Request) -> Repository:
        zone = self._zone(request)
        repo = self.state.repositories.get(request.match_info["repo"])
        if repo is None or repo.zone != zone:
            raise CmisFault("objectNotFound", f"Repository {request.match_info['repo']} not found")
        return repo

    def _base_url(self, request: web.Request) -> str:
        return f"{request.scheme}://{request.host}/"

    # -- OAuth -----------------------------------------------------------------------------------

    async def token(self, request: web.Request) -> web.StreamResponse:
        self.calls["token"] += 1
        form = {k: str(v) for k, v in (await request.post()).items()}
        form.update({k: v for k, v in request.query.items() if k == "grant_type"})
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        client = self.tokens.authenticate(request.headers.get("Authorization"), form)
        if client is None:
            return web.json_response({"error": "unauthorized", "error_description": "Bad credentials"}, status=401)
        token, expires_in = self.tokens.issue(client)
        return web.json_response(
            {
                "access_token": token,
                "token_type": "bearer",
                "expires_in": expires_in,
                "scope": "uaa.resource SDM_Admin SDM_User",
                "jti": token[:16],
            }
        )

    # -- admin REST API --------------------------------------------------------------------------

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

    # -- CMIS browser binding --------------------------------------------------------------------

    async def service_root(self, request: web.Request) -> web.StreamResponse:
        zone = self._zone(request)
        base = self._base_url(request)
        return web.json_response({r.id: cmis_json.repository_info(r, base) for r in self.state.zone_repositories(zone)})

    async def repository_get(self, request: web.Request) -> web.StreamResponse:
        repo = self._cmis_repo(request)
        selector = request.query.get("cmisselector", "repositoryInfo")
        if selector == "repositoryInfo":
            return web.json_response({repo.id: cmis_json.repository_info(repo, self._base_url(request))})
        if selector == "query":
            return self._query(
                repo, request.query.get("q") or request.query.get("statement") or "", dict(request.query)
            )
        raise CmisFault("notSupported", f"cmisselector {selector} is not supported on the repository URL")

    async def repository_post(self, request: web.Request) -> web.StreamResponse:
        repo = self._cmis_repo(request)
        form = await read_form(request, self.state.max_content_size)
        action = (form.get("cmisaction") or "").lower()
        if fault := self.faults.pick(request.path, action):
            return fault_response(request, fault)
        if action != "query":
            raise CmisFault("notSupported", f"cmisaction {action} is not supported on the repository URL")
        return self._query(repo, form.get("statement") or form.get("q") or "", form.controls)

    def _query(self, repo: Repository, statement: str, options: dict[str, str]) -> web.StreamResponse:
        self.calls["query"] += 1
        parsed = query.parse(statement)
        if parsed.in_folder not in (None, repo.root_folder_id):
            hits = []
        else:
            hits = [cmis_json.document_properties(repo, s, s.latest) for s in repo.series_by_name.values()]
            hits = [p for p in hits if all(str(p.get(k)) == v for k, v in parsed.equals.items())]
        succinct = options.get("succinct", "false").lower() == "true"
        skip, max_items = int(options.get("skipCount", 0)), int(options.get("maxItems", 100))
        page = hits[skip : skip + max_items]
        results = [
            cmis_json.render_object(cmis_json.select_properties(p, parsed.columns), succinct, False) for p in page
        ]
        return web.json_response(
            {"results": results, "hasMoreItems": skip + max_items < len(hits), "numItems": len(hits)}
        )

    async def root_get(self, request: web.Request) -> web.StreamResponse:
        repo = self._cmis_repo(request)
        q = request.query
        path = urllib.parse.unquote(request.match_info.get("path") or "").strip("/")
        object_id = q.get("objectId")
        selector = q.get("cmisselector")
        succinct = q.get("succinct", "false").lower() == "true"
        actions = q.get("includeAllowableActions", "false").lower() == "true"
        filter_ = q.get("filter")
        columns = None if not filter_ or filter_ == "*" else [c.strip() for c in filter_.split(",")]

        if (object_id is None and not path) or object_id == repo.root_folder_id:
            return self._root_folder(repo, selector or "children", q, succinct, actions)
        if object_id is not None:
            series, version = self.state.get_object(repo, object_id)
        else:
            if "/" in path:
                raise CmisFault("objectNotFound", f"Object with path /{path} not found")
            series = self.state.get_by_name(repo, path)
            version = series.latest
        if q.get("returnVersion") == "latest":
            version = series.latest
        elif q.get("returnVersion") == "latestmajor":
            version = next(v for v in reversed(series.versions) if v.is_major)
        selector = selector or "object"
        self.calls[selector] += 1
        if selector == "object":
            props = cmis_json.select_properties(cmis_json.document_properties(repo, series, version), columns)
            return web.json_response(cmis_json.render_object(props, succinct, actions))
        if selector == "versions":
            versions = self.state.versions_newest_first(repo, version.object_id)
            return web.json_response(
                [
                    cmis_json.render_object(cmis_json.document_properties(repo, series, v), succinct, actions)
                    for v in versions
                ]
            )
        if selector == "content":
            return self._content(repo, version, q.get("download", "attachment"))
        if selector == "allowableActions":
            props = cmis_json.document_properties(repo, series, version)
            return web.json_response(cmis_json.render_object(props, True, True)["allowableActions"])
        if selector == "parents":
            parent = cmis_json.render_object(cmis_json.root_folder_properties(repo), succinct, False)
            return web.json_response([{"object": parent, "relativePathSegment": series.name}])
        raise CmisFault("notSupported", f"cmisselector {selector} is not supported")

    def _root_folder(
        self, repo: Repository, selector: str, q: Any, succinct: bool, actions: bool
    ) -> web.StreamResponse:
        self.calls[f"folder.{selector}"] += 1
        if selector == "object":
            return web.json_response(cmis_json.render_object(cmis_json.root_folder_properties(repo), succinct, actions))
        if selector == "children":
            all_series = list(repo.series_by_name.values())
            skip, max_items = int(q.get("skipCount", 0)), int(q.get("maxItems", 100))
            page = all_series[skip : skip + max_items]
            objects = [
                {"object": cmis_json.render_object(cmis_json.document_properties(repo, s, s.latest), succinct, actions)}
                for s in page
            ]
            return web.json_response(
                {"objects": objects, "hasMoreItems": skip + max_items < len(all_series), "numItems": len(all_series)}
            )
        if selector == "parents":
            return web.json_response([])
        raise CmisFault("notSupported", f"cmisselector {selector} is not supported on a folder")

    def _content(self, repo: Repository, version: Any, disposition: str) -> web.StreamResponse:
        data = self.state.content.get(version.content_id)
        quoted = urllib.parse.quote(version.file_name)
        return web.Response(
            body=data,
            content_type=version.mime_type.split(";")[0],
            headers={"Content-Disposition": f"{disposition}; filename*=UTF-8''{quoted}"},
        )

    async def root_post(self, request: web.Request) -> web.StreamResponse:
        repo = self._cmis_repo(request)
        form = await read_form(request, self.state.max_content_size)
        action = (form.get("cmisaction") or "").lower()
        if fault := self.faults.pick(request.path, action):
            return fault_response(request, fault)
        self.calls[action] += 1
        user = request.headers.get("X-EcmUserEnc", "anonymous")
        object_id = form.get("objectId") or ""
        if action == "createdocument":
            return self._create_document(repo, form)
        if action == "checkout":
            pwc = self.state.check_out(repo, object_id, user)
            return self._object_response(repo, pwc.object_id, form, status=201)
        if action == "checkin":
            version = self.state.check_in(
                repo, object_id, form.flag("major", True), form.get("checkinComment"), form.file
            )
            return self._object_response(repo, version.object_id, form, status=201)
        if action == "setcontent":
            file = form.file
            if file is None:
                raise CmisFault("invalidArgument", "No content stream part")
            version = self.state.set_content(repo, object_id, *file)
            return self._object_response(repo, version.object_id, form, status=201)
        if action == "cancelcheckout":
            self.state.cancel_check_out(repo, object_id)
            return web.Response(status=200)
        if action == "delete":
            self.state.delete(repo, object_id, form.flag("allVersions", True))
            return web.Response(status=200)
        if action == "query":
            return self._query(repo, form.get("statement") or "", form.controls)
        raise CmisFault("notSupported", f"cmisaction {action or '(missing)'} is not supported")

    def _create_document(self, repo: Repository, form: CmisForm) -> web.StreamResponse:
        parent = form.get("objectId")
        if parent not in (None, "", repo.root_folder_id):
            raise CmisFault("objectNotFound", f"Folder {parent} not found")
        props = form.properties()
        if props.get("cmis:objectTypeId", "cmis:document") != "cmis:document":
            raise CmisFault("constraint", "Only cmis:document is supported by the emulator")
        content, mime, file_name = form.file or (b"", "application/octet-stream", "")
        version = self.state.create_document(
            repo,
            props.get("cmis:name", ""),
            content,
            mime,
            file_name or props.get("cmis:name", ""),
            form.get("versioningState"),
        )
        return self._object_response(repo, version.object_id, form, status=201)

    def _object_response(self, repo: Repository, object_id: str, form: CmisForm, status: int) -> web.StreamResponse:
        series, version = self.state.get_object(repo, object_id)
        props = cmis_json.document_properties(repo, series, version)
        return web.json_response(cmis_json.render_object(props, form.flag("succinct", False), False), status=status)

    # -- control API (tests and ops only; not part of DMS) ----------------------------------------

    async def stats(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "tokens_issued": self.tokens.issued,
                "calls": dict(self.calls),
                "faults_injected": self.faults.injected,
                "repositories": len(self.state.repositories),
            }
        )

    async def get_faults(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.faults.config.as_dict())

    async def set_faults(self, request: web.Request) -> web.StreamResponse:
        try:
            self.faults.config.update(await request.json())
        except (ValueError, TypeError) as exc:
            return web.json_response({"message": str(exc)}, status=400)
        self.faults.reseed()
        return web.json_response(self.faults.config.as_dict())

    async def revoke_tokens(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"revoked": self.tokens.revoke_all()})

    async def set_token_lifetime(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.tokens.lifetime_s = float(body["seconds"])
        return web.json_response({"seconds": self.tokens.lifetime_s})
