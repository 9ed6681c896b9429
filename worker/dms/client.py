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
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, BinaryIO

import aiohttp
import structlog

from worker import tracing
from worker.dms.call_gate import pass_gate
from worker.dms.credentials import Credentials
from worker.dms.http_errors import error_for
from worker.dms.protocol import Content, DestinationRef, DocumentPage, DocumentVersion, RepositoryRef
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


def _quoted(value: str) -> str:
    """A Content-Disposition parameter as aiohttp writes it with ``quote_fields=False``: raw UTF-8, with
    backslashes and double quotes escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def small_form(controls: dict[str, str], file: tuple[bytes, str, str] | None) -> aiohttp.BytesPayload:
    """The body aiohttp's ``FormData(charset="utf-8", quote_fields=False)`` makes of these controls (and, last,
    the ``filename`` control and the ``content`` part), as one payload: url-encoded without a file, else
    multipart/form-data."""
    if file is None:
        return aiohttp.BytesPayload(
            urllib.parse.urlencode(controls).encode(), content_type="application/x-www-form-urlencoded"
        )
    boundary = uuid.uuid4().hex
    delimiter = f"--{boundary}\r\n"
    parts = [
        f"{delimiter}Content-Type: text/plain; charset=utf-8\r\nContent-Disposition: form-data; "
        f"name={_quoted(key)}\r\n\r\n{value}\r\n"
        for key, value in {**controls, "filename": file[1]}.items()
    ]
    content, file_name, mime_type = file
    head = (
        f"{''.join(parts)}{delimiter}Content-Type: {mime_type}\r\nContent-Disposition: form-data; "
        f'name="content"; filename={_quoted(file_name)}\r\n\r\n'
    )
    body = b"".join((head.encode(), content, f"\r\n--{boundary}--\r\n".encode()))
    return aiohttp.BytesPayload(body, content_type=f"multipart/form-data; boundary={boundary}")


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
    return RepositoryRef(
        id=repo["id"],
        root_folder_id=repo["cmisRepositoryId"],
        external_id=repo.get("externalId"),
        name=repo.get("name"),
        description=repo.get("description"),
    )


def _page(body: Any) -> DocumentPage:
    """A getChildren answer: ``{"objects": [{"object": {...}}], "hasMoreItems", "numItems"}``."""
    body = body if isinstance(body, dict) else {}
    objects = [entry.get("object") for entry in body.get("objects") or [] if isinstance(entry, dict)]
    documents, others = [], 0
    for item in objects:
        props = (item.get("succinctProperties") if isinstance(item, dict) else None) or {}
        if props.get("cmis:baseTypeId", "cmis:document") == "cmis:document" and "cmis:objectId" in props:
            documents.append(_version(item))  # type: ignore[arg-type]
        else:
            others += 1
    total = body.get("numItems")
    return DocumentPage(documents, others, bool(body.get("hasMoreItems")), total if isinstance(total, int) else None)


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

    async def delete_repository(self, repository_id: str) -> bool:
        """Deletes one repository (with whatever it still holds); False when it was already gone.

        ``DELETE rest/v2/repositories`` without an id deletes *every* repository of the instance, so an id
        that is empty or could change the path is refused here, before any request."""
        if not repository_id or not repository_id.strip() or any(c in repository_id for c in "/?#%\\"):
            raise ValueError(f"refusing to delete a repository by the id {repository_id!r}")
        try:
            await self._call("deleteRepository", "DELETE", f"rest/v2/repositories/{repository_id}", ok={200, 204})
        except DmsRejected as exc:
            if exc.status == 404:
                return False
            raise
        return True

    # -- CMIS ------------------------------------------------------------------------------------

    async def list_children(self, repo: RepositoryRef, skip: int, max_items: int) -> DocumentPage:
        """One page of the documents in ROOT (getChildren with skipCount and maxItems), latest versions."""
        params = {
            "objectId": repo.root_folder_id,
            "cmisselector": "children",
            "skipCount": str(skip),
            "maxItems": str(max_items),
            "succinct": "true",
        }
        body = await self._call("getChildren", "GET", f"browser/{repo.id}/root", params=params, ok={200})
        return _page(body)

    async def versions_of(self, repo: RepositoryRef, object_id: str) -> list[DocumentVersion] | None:
        """Every version of the document one of whose versions is ``object_id``, newest first; None when
        there is no such document."""
        params = {"objectId": object_id, "cmisselector": "versions", "succinct": "true"}
        try:
            body = await self._call("getAllVersions", "GET", f"browser/{repo.id}/root", params=params, ok={200})
        except DmsRejected as exc:
            if exc.status == 404:
                return None
            raise
        return [_version(item) for item in body or []]

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
            controls = {**fields, "succinct": "true", "_charset_": "UTF-8"}
            if file is None or (isinstance(file[0], bytes) and len(file[0]) <= SINGLE_WRITE_LIMIT):
                # Small bodies go out in one write, built at once (aiohttp's FormData took ~6 % of the
                # worker's CPU per upload for the same bytes).
                return small_form(controls, None if file is None else (file[0], file[1], file[2]))  # type: ignore[arg-type]
            # quote_fields=False: aiohttp would otherwise percent-encode the part's filename, and DMS would
            # store "Plan%20v1.pdf". The `filename` control (decoded per _charset_) states it unambiguously.
            form = aiohttp.FormData(charset="utf-8", quote_fields=False)
            for key, value in controls.items():
                form.add_field(key, value)
            content, file_name, mime_type = file
            if not isinstance(content, bytes):  # streamed from its source (a spool file), 64 KB at a time
                opened.append(stream := content.open())
                content = stream  # type: ignore[assignment]
            form.add_field("filename", file_name)
            form.add_field("content", content, filename=file_name, content_type=mime_type)
            return form()

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
        body_size: int = 0,
    ) -> Any:
        timeout = self._timeout
        if body_size > SINGLE_WRITE_LIMIT and timeout.total is not None:
            timeout = aiohttp.ClientTimeout(total=timeout.total + body_size / SLOWEST_UPLOAD_BYTES_PER_S)
        await pass_gate()  # e.g. the fence of a replica cut off from the broker: nothing is sent past it
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
