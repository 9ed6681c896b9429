"""Content by reference, spooled: what goes wrong mid-stream fails with the right code, a dropped connection is
retried, content reaches DMS streamed from the spool file, and no spool file is ever left behind."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from worker.producer import upload_command_by_url
from worker.settings import MIB

from ..http_host import serving
from .conftest import Stack, StackFactory

pytestmark = pytest.mark.integration

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 64


@dataclass
class ContentServer:
    """Serves bodies on 127.0.0.1: whole, chunked without a length, or cut off after half (``drops`` times)."""

    base: str = ""
    bodies: dict[str, bytes] = field(default_factory=dict)
    chunked: set[str] = field(default_factory=set)
    drops: dict[str, int] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def serve(self, name: str, body: bytes, *, chunked: bool = False, drops: int = 0) -> str:
        self.bodies[name] = body
        if chunked:
            self.chunked.add(name)
        self.drops[name] = drops
        return f"{self.base}{name}"

    async def answer(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.requests.append(name)
        body = self.bodies[name]
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        if name not in self.chunked:
            response.content_length = len(body)
        await response.prepare(request)
        if self.drops[name] > 0:
            self.drops[name] -= 1
            await response.write(body[: len(body) // 2])
            assert request.transport is not None
            request.transport.close()  # the connection drops in the middle of the body
            return response
        for start in range(0, len(body), 256 * 1024):
            await response.write(body[start : start + 256 * 1024])
        await response.write_eof()
        return response


@pytest.fixture
async def content_server() -> AsyncIterator[ContentServer]:
    server = ContentServer()
    async with serving(server.answer) as server.base:
        yield server


def spool_files(spool_dir: Path) -> list[Path]:
    return [p for p in spool_dir.rglob("*") if p.is_file() and p.name != ".lock"]


@pytest.fixture
async def spooling_stack(make_stack: StackFactory, tmp_path: Path) -> Stack:
    return await make_stack(max_file_size=4 * MIB, content_url_allowed_hosts=["127.0.0.1"], spool_dir=tmp_path)


async def upload(
    stack: Stack,
    url: str,
    document: uuid.UUID | None = None,
    file_name: str = "big.txt",
    mime: str = "text/plain",
    size: int | None = None,
    sha256: str | None = None,
) -> dict[str, Any]:
    command = upload_command_by_url(TENANT, document or uuid.uuid4(), file_name, mime, url, size=size, sha256=sha256)
    return await stack.run(command, timeout=30)


TENANT = uuid.uuid4()


async def test_refusals_mid_stream_fail_at_once_and_leave_no_spool_file(
    spooling_stack: Stack, content_server: ContentServer, tmp_path: Path
) -> None:
    stack = spooling_stack
    text = os.urandom(MIB).hex().encode()  # 2 MiB of text
    cases: list[tuple[str, str, dict[str, Any], str]] = [
        # no Content-Length: the cap is hit while the body streams
        ("too-large", content_server.serve("too-large", text * 3, chunked=True), {}, "file_too_large"),
        ("sha", content_server.serve("sha", text), {"sha256": "0" * 64}, "integrity_mismatch"),
        ("size", content_server.serve("size", text), {"size": len(text) + 1}, "integrity_mismatch"),
        (
            "png-as-pdf",
            content_server.serve("png-as-pdf", PNG + text),
            {"file_name": "report.pdf", "mime": "application/pdf"},
            "unsupported_file_type",
        ),
    ]
    for name, url, kwargs, code in cases:
        event = await upload(stack, url, **kwargs)
        data = event["data"]
        assert event["type"] == "dms.upload.failed" and data["error"]["code"] == code, (name, event)
        assert (data["attempts"], data["retried"]) == (1, False), name
        assert spool_files(tmp_path) == [], name
    assert stack.emulator.emulator.calls["createdocument"] == 0


async def test_a_connection_dropped_mid_body_is_retried_then_stored(
    spooling_stack: Stack, content_server: ContentServer, tmp_path: Path
) -> None:
    stack = spooling_stack
    body = os.urandom(3 * MIB // 2).hex().encode()
    url = content_server.serve("flaky", body, drops=1)
    document = uuid.uuid4()
    event = await upload(stack, url, document, sha256=hashlib.sha256(body).hexdigest())
    data = event["data"]
    assert event["type"] == "dms.upload.succeeded", event
    assert (data["attempts"], data["size"]) == (2, len(body))
    assert content_server.requests.count("flaky") == 2
    retries = stack.worker.metrics.retries.labels(error_code="content_fetch_failed")._value.get()
    assert retries >= 1
    stored = stack.repository(TENANT).series_by_name[str(document)].latest
    assert stack.emulator.emulator.state.content.get(stored.content_id) == body
    assert spool_files(tmp_path) == []


async def test_a_later_version_is_checked_in_streamed_from_the_spool(
    spooling_stack: Stack, content_server: ContentServer, tmp_path: Path
) -> None:
    stack = spooling_stack
    document = uuid.uuid4()
    versions = [os.urandom(2 * MIB).hex().encode()[: 3 * MIB] for _ in range(2)]
    for number, content in enumerate(versions, start=1):
        url = content_server.serve(f"v{number}", content)
        event = await upload(stack, url, document, file_name="Pl\u00e4n v1.txt", size=len(content))
        data = event["data"]
        assert event["type"] == "dms.upload.succeeded" and data["version_label"] == f"{number}.0", event
    series = stack.repository(TENANT).series_by_name[str(document)]
    assert [stack.emulator.emulator.state.content.get(v.content_id) for v in series.versions] == versions
    assert series.latest.file_name == "Pl\u00e4n v1.txt"
    assert spool_files(tmp_path) == []
