"""The CMIS 1.1 browser binding (``{uri}browser/...``) of the emulator."""

from __future__ import annotations

import urllib.parse
from typing import Any

from aiohttp import web

from worker.testing.emulator import cmis_json, query
from worker.testing.emulator.base import EmulatorBase
from worker.testing.emulator.content import Upload
from worker.testing.emulator.faults import LOSES_ANSWER, InjectedFault
from worker.testing.emulator.forms import CmisForm, read_form
from worker.testing.emulator.store import CmisFault, Repository


class BrowserApi(EmulatorBase):
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

    async def _read_post(self, request: web.Request) -> tuple[Repository, CmisForm, str]:
        """Repository, form and lower-cased cmisaction of a POST; its fault is picked once the action is known."""
        repo = self._cmis_repo(request)
        form = await read_form(request, self.state.max_content_size, self.state.content.upload_dir())
        action = (form.get("cmisaction") or "").lower()
        if fault := self.faults.pick(request.path, action, form.properties().get("cmis:name"), request.method):
            if fault.kind == LOSES_ANSWER:
                request[LOSES_ANSWER] = fault  # worked on as usual; the middleware loses the answer
            else:
                form.discard()
                raise InjectedFault(fault)
        return repo, form, action

    async def repository_post(self, request: web.Request) -> web.StreamResponse:
        repo, form, action = await self._read_post(request)
        form.discard()  # no action here takes content
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
        quoted = urllib.parse.quote(version.file_name)
        headers = {
            "Content-Disposition": f"{disposition}; filename*=UTF-8''{quoted}",
            "Content-Type": version.mime_type.split(";")[0],
        }
        path = self.state.content.file(version.content_id)
        if path is not None:  # large content is streamed from its file
            return web.FileResponse(path, headers=headers)
        return web.Response(body=self.state.content.get(version.content_id), headers=headers)

    async def root_post(self, request: web.Request) -> web.StreamResponse:
        repo, form, action = await self._read_post(request)
        try:
            return self._root_action(request, repo, form, action)
        finally:
            form.discard()  # the content's temporary file, unless the store took it over

    def _root_action(self, request: web.Request, repo: Repository, form: CmisForm, action: str) -> web.StreamResponse:
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
                repo,
                object_id,
                form.flag("major", True),
                form.get("checkinComment"),
                form.file,
                form.properties().get("cmis:description"),
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
        content, mime, file_name = form.file or (Upload.of(b""), "application/octet-stream", "")
        version = self.state.create_document(
            repo,
            props.get("cmis:name", ""),
            content,
            mime,
            file_name or props.get("cmis:name", ""),
            form.get("versioningState"),
            props.get("cmis:description"),
        )
        return self._object_response(repo, version.object_id, form, status=201)

    def _object_response(self, repo: Repository, object_id: str, form: CmisForm, status: int) -> web.StreamResponse:
        series, version = self.state.get_object(repo, object_id)
        props = cmis_json.document_properties(repo, series, version)
        return web.json_response(cmis_json.render_object(props, form.flag("succinct", False), False), status=status)
