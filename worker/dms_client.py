"""Typed async client for one DMS destination: the admin REST API and the CMIS browser binding.

It speaks HTTP and returns typed results; it knows nothing of RabbitMQ or commands.
"""

from __future__ import annotations

import json as jsonlib
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

from worker.destinations import Destination
from worker.dms_errors import error_for
from worker.errors import DmsRejected, DmsUnavailable, TokenRejected
from worker.tokens import TokenCache

log = structlog.get_logger(__name__)

SINGLE_WRITE_LIMIT = 256 * 1024  # larger contents are streamed from the form rather than copied once more
RequestObserver = Callable[[str, int, float], None]  # (operation, status, seconds); status 0 = no answer


@dataclass(frozen=True)
class RepositoryRef:
    id: str
    root_folder_id: str
    external_id: str | None


@dataclass(frozen=True)
class DocumentVersion:
    object_id: str
    version_label: str
    version_series_id: str
    file_name: str | None
    length: int | None
    mime_type: str | None
    checkin_comment: str | None
    checked_out_id: str | None

    @classmethod
    def from_succinct(cls, body: dict[str, Any]) -> DocumentVersion:
        props = body.get("succinctProperties") or {}
        return cls(
            object_id=str(props["cmis:objectId"]),
            version_label=str(props.get("cmis:versionLabel") or ""),
            version_series_id=str(props.get("cmis:versionSeriesId") or ""),
            file_name=props.get("cmis:contentStreamFileName"),
            length=props.get("cmis:contentStreamLength"),
            mime_type=props.get("cmis:contentStreamMimeType"),
            checkin_comment=props.get("cmis:checkinComment"),
            checked_out_id=props.get("cmis:versionSeriesCheckedOutId"),
        )


def _repository_ref(entry: dict[str, Any]) -> RepositoryRef:
    repo = entry.get("repository", entry)
    return RepositoryRef(id=repo["id"], root_folder_id=repo["cmisRepositoryId"], external_id=repo.get("externalId"))


class DmsClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        destination: Destination,
        tokens: TokenCache,
        timeout_s: float = 60.0,
        observe: RequestObserver | None = None,
    ) -> None:
        self._session = session
        self.destination = destination
        self._tokens = tokens
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._observe = observe

    # -- admin API -------------------------------------------------------------------------------

    async def list_repositories(self) -> list[RepositoryRef]:
        body = await self._call("listRepositories", "GET", "rest/v2/repositories", ok={200})
        infos = body.get("repoAndConnectionInfos", []) if isinstance(body, dict) else []
        if isinstance(infos, dict):  # documented quirk: exactly one repository comes as an object
            infos = [infos]
        return [_repository_ref(entry) for entry in infos]

    async def create_repository(self, spec: dict[str, Any]) -> RepositoryRef:
        body = await self._call(
            "createRepository", "POST", "rest/v2/repositories", json={"repository": spec}, ok={200, 201}
        )
        return _repository_ref(body)

    # -- CMIS ------------------------------------------------------------------------------------

    async def create_document(
        self, repo: RepositoryRef, name: str, file_name: str, mime_type: str, content: bytes
    ) -> DocumentVersion:
        fields = {
            "cmisaction": "createDocument",
            "objectId": repo.root_folder_id,
            "propertyId[0]": "cmis:name",
            "propertyValue[0]": name,
            "propertyId[1]": "cmis:objectTypeId",
            "propertyValue[1]": "cmis:document",
        }
        body = await self._post_form("createDocument", repo, fields, (content, file_name, mime_type))
        return DocumentVersion.from_succinct(body)

    async def check_out(self, repo: RepositoryRef, object_id: str) -> str:
        """Returns the private working copy's object id."""
        body = await self._post_form("checkOut", repo, {"cmisaction": "checkOut", "objectId": object_id})
        return DocumentVersion.from_succinct(body).object_id

    async def check_in(
        self, repo: RepositoryRef, pwc_id: str, file_name: str, mime_type: str, content: bytes, comment: str
    ) -> DocumentVersion:
        fields = {"cmisaction": "checkIn", "objectId": pwc_id, "major": "true", "checkinComment": comment}
        body = await self._post_form("checkIn", repo, fields, (content, file_name, mime_type))
        return DocumentVersion.from_succinct(body)

    async def cancel_check_out(self, repo: RepositoryRef, pwc_id: str) -> None:
        await self._post_form("cancelCheckOut", repo, {"cmisaction": "cancelCheckOut", "objectId": pwc_id})

    async def delete(self, repo: RepositoryRef, object_id: str) -> bool:
        """Deletes every version; False when the object was already gone."""
        try:
            await self._post_form(
                "delete", repo, {"cmisaction": "delete", "objectId": object_id, "allVersions": "true"}
            )
        except DmsRejected as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def find_by_name(self, repo: RepositoryRef, name: str) -> DocumentVersion | None:
        """The latest version of the document called ``name`` in ROOT, or None."""
        path = f"browser/{repo.id}/root/{urllib.parse.quote(name, safe='')}"
        try:
            body = await self._call(
                "getObjectByPath", "GET", path, params={"cmisselector": "object", "succinct": "true"}, ok={200}
            )
        except DmsRejected as exc:
            if exc.status == 404:
                return None
            raise
        return DocumentVersion.from_succinct(body)

    async def versions(self, repo: RepositoryRef, object_id: str) -> list[DocumentVersion]:
        body = await self._call(
            "getAllVersions",
            "GET",
            f"browser/{repo.id}/root",
            params={"objectId": object_id, "cmisselector": "versions", "succinct": "true"},
            ok={200},
        )
        return [DocumentVersion.from_succinct(item) for item in body]

    async def content(self, repo: RepositoryRef, object_id: str) -> bytes:
        return await self._call(  # type: ignore[no-any-return]
            "getContent",
            "GET",
            f"browser/{repo.id}/root",
            params={"objectId": object_id, "cmisselector": "content"},
            ok={200},
            raw=True,
        )

    # -- transport -------------------------------------------------------------------------------

    async def _post_form(
        self,
        operation: str,
        repo: RepositoryRef,
        fields: dict[str, str],
        file: tuple[bytes, str, str] | None = None,
    ) -> Any:
        async def build() -> Any:
            # quote_fields=False: aiohttp would otherwise percent-encode the part's filename, and DMS would
            # store "Plan%20v1.pdf". The `filename` control (decoded per _charset_) states it unambiguously.
            form = aiohttp.FormData(charset="utf-8", quote_fields=False)
            for key, value in fields.items():
                form.add_field(key, value)
            form.add_field("succinct", "true")
            form.add_field("_charset_", "UTF-8")
            if file is not None:
                content, file_name, mime_type = file
                form.add_field("filename", file_name)
                form.add_field("content", content, filename=file_name, content_type=mime_type)
            body = form()
            if file is None or len(file[0]) <= SINGLE_WRITE_LIMIT:
                # Small bodies go out in one write instead of several per form field.
                return aiohttp.BytesPayload(await body.as_bytes(), content_type=body.content_type)
            return body

        ok = {200, 201} if operation not in {"cancelCheckOut", "delete"} else {200, 204}
        return await self._call(operation, "POST", f"browser/{repo.id}/root", form=build, ok=ok)

    async def _call(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        ok: set[int],
        params: dict[str, str] | None = None,
        json: Any = None,
        form: Callable[[], Awaitable[Any]] | None = None,
        raw: bool = False,
    ) -> Any:
        url = self.destination.url + path
        for attempt in (1, 2):
            token = await self._tokens.get(self.destination)
            started = time.perf_counter()
            try:
                async with self._session.request(
                    method,
                    url,
                    params=params,
                    json=json,
                    data=await form() if form else None,
                    headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                    timeout=self._timeout,
                ) as response:
                    status = response.status
                    self._record(operation, status, started)
                    if status == 401:
                        self._tokens.invalidate(self.destination, token)
                        if attempt == 1:
                            log.info("dms_token_rejected_refreshing", operation=operation)
                            continue
                        raise TokenRejected(f"DMS {operation} rejected a freshly fetched token (401)")
                    if status in ok:
                        if raw:
                            return await response.read()
                        if status == 204 or response.content_length == 0:
                            return None
                        text = await response.text()
                        return _json_or_none(text)
                    body = _json_or_none(await response.text()) or ""
                    raise error_for(operation, status, body, response.headers.get("Retry-After"))
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._record(operation, 0, started)
                raise DmsUnavailable(f"DMS {operation} failed: {type(exc).__name__}") from exc
        raise AssertionError("unreachable")

    def _record(self, operation: str, status: int, started: float) -> None:
        if self._observe is not None:
            self._observe(operation, status, time.perf_counter() - started)


def _json_or_none(text: str) -> Any:
    if not text:
        return None
    try:
        return jsonlib.loads(text)
    except ValueError:
        return text
