"""Typed async client for one DMS destination: the admin REST API and the CMIS browser binding.

Its destination and token come from ``worker.dms.credentials`` (configured, or looked up by name in the BTP
Destination service); after a 401 it asks for them once more.

It speaks HTTP and returns typed results; it knows nothing of RabbitMQ or commands. It satisfies
``worker.dms.protocol.DmsApi``, which is all the handlers depend on.
"""

from __future__ import annotations

import contextlib
import json as jsonlib
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any, BinaryIO

import aiohttp
import structlog

from worker import tracing
from worker.dms.credentials import Credentials
from worker.dms.http_errors import error_for
from worker.dms.protocol import Content, DestinationRef, DocumentVersion, RepositoryRef
from worker.dms.reachability import Reachability
from worker.errors import DmsRejected, DmsUnavailable, TokenRejected

log = structlog.get_logger(__name__)

SINGLE_WRITE_LIMIT = 256 * 1024  # larger contents are streamed from the form rather than copied once more
# A request carrying content gets this much longer than DMS_TIMEOUT_S: a 400 MB body needs time to go out.
SLOWEST_UPLOAD_BYTES_PER_S = 1024 * 1024
PROBE_TIMEOUT_S = 3.0
PROBE_HEADERS = {"Connection": "close"}  # never a pooled connection that may be the one hanging
# (operation, status, seconds, request body bytes); status 0 = no answer
RequestObserver = Callable[[str, int, float, int], None]


def _version(body: dict[str, Any]) -> DocumentVersion:
    props = body.get("succinctProperties") or {}
    return DocumentVersion(
        object_id=str(props["cmis:objectId"]),
        version_label=str(props.get("cmis:versionLabel") or ""),
        version_series_id=str(props.get("cmis:versionSeriesId") or ""),
        file_name=props.get("cmis:contentStreamFileName"),
        length=props.get("cmis:contentStreamLength"),
        mime_type=props.get("cmis:contentStreamMimeType"),
        checkin_comment=props.get("cmis:checkinComment"),
        checked_out_id=props.get("cmis:versionSeriesCheckedOutId"),
        description=props.get("cmis:description"),
        checked_out_by=props.get("cmis:versionSeriesCheckedOutBy"),
    )


def _repository_ref(entry: dict[str, Any]) -> RepositoryRef:
    repo = entry.get("repository", entry)
    return RepositoryRef(id=repo["id"], root_folder_id=repo["cmisRepositoryId"], external_id=repo.get("externalId"))


class DmsClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        credentials: Credentials,
        timeout_s: float = 60.0,
        observe: RequestObserver | None = None,
        user: str | None = None,
    ) -> None:
        self._session = session
        self._credentials = credentials
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._observe = observe
        # DMS's user propagation header on every CMIS call: DMS records this name as the owner of the
        # worker's working copies (cmis:versionSeriesCheckedOutBy), which tells them from anyone else's.
        self._user_headers = {"X-EcmUserEnc": user} if user else {}
        self.reachability = Reachability(self._probe)
        self._base_url = ""  # the destination's URL as last resolved: what the probe asks

    @property
    def destination(self) -> DestinationRef:
        """Which DMS this is (a stable key for per-DMS caches)."""
        return self._credentials.identity

    async def check_credentials(self) -> None:
        """Resolves the destination and a token for it as the first call would (for readiness)."""
        await self._credentials.resolve()

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
        self,
        repo: RepositoryRef,
        name: str,
        file_name: str,
        mime_type: str,
        content: Content,
        description: str | None = None,
    ) -> DocumentVersion:
        fields = {
            "cmisaction": "createDocument",
            "objectId": repo.root_folder_id,
            "propertyId[0]": "cmis:name",
            "propertyValue[0]": name,
            "propertyId[1]": "cmis:objectTypeId",
            "propertyValue[1]": "cmis:document",
        }
        if description is not None:
            fields |= {"propertyId[2]": "cmis:description", "propertyValue[2]": description}
        body = await self._post_form("createDocument", repo, fields, (content, file_name, mime_type))
        return _version(body)

    async def check_out(self, repo: RepositoryRef, object_id: str) -> str:
        """Returns the private working copy's object id."""
        body = await self._post_form("checkOut", repo, {"cmisaction": "checkOut", "objectId": object_id})
        return _version(body).object_id

    async def check_in(
        self,
        repo: RepositoryRef,
        pwc_id: str,
        file_name: str,
        mime_type: str,
        content: Content,
        comment: str,
        description: str | None = None,
    ) -> DocumentVersion:
        fields = {"cmisaction": "checkIn", "objectId": pwc_id, "major": "true", "checkinComment": comment}
        if description is not None:
            fields |= {"propertyId[0]": "cmis:description", "propertyValue[0]": description}
        body = await self._post_form("checkIn", repo, fields, (content, file_name, mime_type))
        return _version(body)

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
        body = await self._get_by_name("getObjectByPath", repo, name, "object")
        return None if body is None else _version(body)

    async def versions_by_name(self, repo: RepositoryRef, name: str) -> list[DocumentVersion] | None:
        """Every version of the document called ``name`` in ROOT, newest first (a working copy, if any,
        among them), or None when there is no such document: one call, whatever the history."""
        body = await self._get_by_name("getAllVersions", repo, name, "versions")
        return None if body is None else [_version(item) for item in body]

    async def _get_by_name(self, operation: str, repo: RepositoryRef, name: str, selector: str) -> Any:
        """A CMIS selector on the ROOT document called ``name``; None when there is no such document."""
        path = f"browser/{repo.id}/root/{urllib.parse.quote(name, safe='')}"
        try:
            return await self._call(
                operation, "GET", path, params={"cmisselector": selector, "succinct": "true"}, ok={200}
            )
        except DmsRejected as exc:
            if exc.status == 404:
                return None
            raise

    # -- transport -------------------------------------------------------------------------------

    async def _post_form(
        self,
        operation: str,
        repo: RepositoryRef,
        fields: dict[str, str],
        file: tuple[Content, str, str] | None = None,
    ) -> Any:
        opened: list[BinaryIO] = []  # a content stream per send, closed once the request is over

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
                if not isinstance(content, bytes):  # streamed from its source (a spool file), 64 KB at a time
                    opened.append(stream := content.open())
                    content = stream  # type: ignore[assignment]
                form.add_field("filename", file_name)
                form.add_field("content", content, filename=file_name, content_type=mime_type)
            body = form()
            if file is None or (isinstance(file[0], bytes) and len(file[0]) <= SINGLE_WRITE_LIMIT):
                # Small bodies go out in one write instead of several per form field.
                return aiohttp.BytesPayload(await body.as_bytes(), content_type=body.content_type)
            return body

        ok = {200, 201} if operation not in {"cancelCheckOut", "delete"} else {200, 204}
        size = 0 if file is None else len(file[0]) if isinstance(file[0], bytes) else file[0].size
        try:
            return await self._call(operation, "POST", f"browser/{repo.id}/root", form=build, ok=ok, body_size=size)
        finally:
            for stream in opened:
                with contextlib.suppress(OSError):
                    stream.close()

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
        body_size: int = 0,
    ) -> Any:
        timeout = self._timeout
        if body_size > SINGLE_WRITE_LIMIT and timeout.total is not None:
            timeout = aiohttp.ClientTimeout(total=timeout.total + body_size / SLOWEST_UPLOAD_BYTES_PER_S)
        for attempt in (1, 2):
            if (back := self.reachability.down()) is not None:  # no use hanging on a link that is gone
                raise DmsUnavailable(
                    f"DMS {operation} not tried: DMS has not answered for {self.reachability.down_for_s():.0f} s",
                    retry_sooner=back,
                )
            destination, token = await self._credentials.resolve()
            self._base_url = destination.url
            url = destination.url + path
            started = time.perf_counter()
            try:
                async with (
                    tracing.async_span(
                        f"DMS {operation}", tracing.SpanKind.CLIENT, _span_attributes(operation, method, url)
                    ) as span,
                    self._session.request(
                        method,
                        url,
                        params=params,
                        json=json,
                        data=await form() if form else None,
                        headers={
                            "Authorization": f"Bearer {token}",
                            "Accept": "application/json",
                            **(self._user_headers if path.startswith("browser/") else {}),
                            **tracing.current_fields(),
                        },
                        timeout=timeout,
                    ) as response,
                ):
                    status = response.status
                    self.reachability.answered()
                    span.set_attribute("http.response.status_code", status)
                    self._record(operation, status, started, body_size)
                    if status == 401:
                        self._credentials.reject(destination, token)
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
                self._record(operation, 0, started, body_size)
                if not isinstance(exc, aiohttp.ClientResponseError):  # no answer at all
                    self.reachability.no_answer()
                raise DmsUnavailable(
                    f"DMS {operation} failed: {type(exc).__name__}", retry_sooner=self.reachability.back()
                ) from exc
        raise AssertionError("unreachable")

    async def _probe(self) -> None:
        """Any HTTP answer from DMS, on a connection of its own (raises on none)."""
        async with self._session.get(
            self._base_url + "browser", timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S), headers=PROBE_HEADERS
        ) as response:
            await response.read()

    async def close(self) -> None:
        await self.reachability.close()

    def _record(self, operation: str, status: int, started: float, body_size: int) -> None:
        if self._observe is not None:
            self._observe(operation, status, time.perf_counter() - started, body_size)


def _span_attributes(operation: str, method: str, url: str) -> dict[str, Any]:
    parts = urllib.parse.urlsplit(url)  # the path names repositories and documents: ids, no secrets
    return {
        tracing.OPERATION: operation,
        "http.request.method": method,
        "server.address": parts.hostname or "",
        "url.path": parts.path,
    }


def _json_or_none(text: str) -> Any:
    if not text:
        return None
    try:
        return jsonlib.loads(text)
    except ValueError:
        return text
