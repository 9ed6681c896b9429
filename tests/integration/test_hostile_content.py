"""Content that looks harmless on the wire, from the producer's side: plain publishes through the real broker,
the outcome read from result events, the dead-letter queue and the emulator's state."""

from __future__ import annotations

import io
import uuid
import zipfile
import zlib
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web

from worker.producer import upload_command
from worker.settings import MIB

from ..http_host import serving
from .conftest import StackFactory
from .test_hostile_input import raw

pytestmark = pytest.mark.integration

SVG_WITH_SCRIPT = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
HTML_AS_TEXT = b"\xef\xbb\xbf\n  <!DOCTYPE html><html><body><script>fetch('/steal')</script></body></html>"


def zip_declaring(total: int) -> bytes:
    """A small zip whose central directory declares ``total`` bytes of zeros (deflate makes them ~1000x smaller)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.bin", b"\0" * total)
    return buffer.getvalue()


def gzip_of_zeros(total: int) -> bytes:
    """``total`` zero bytes, gzip-compressed (about 1/1000 of the size), built without holding them all."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [compressor.compress(b"\0" * min(MIB, total - start)) for start in range(0, total, MIB)]
    return b"".join([*parts, compressor.flush()])


@pytest.fixture
async def content_server() -> AsyncIterator[Callable[[str, bytes, dict[str, str]], str]]:
    """``serve(path, body, headers)`` returns the URL on 127.0.0.1 that answers with exactly that body."""
    routes: dict[str, tuple[bytes, dict[str, str]]] = {}
    requests: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        requests.append(request.path)
        body, headers = routes[request.path]
        return web.Response(body=body, headers=headers)

    async with serving(answer) as base:

        def serve(path: str, body: bytes, headers: dict[str, str]) -> str:
            routes[path] = (body, headers)
            return base + path.removeprefix("/")

        yield serve


async def test_active_content_and_archive_bombs_are_refused_with_a_clear_message(make_stack: StackFactory) -> None:
    stack = await make_stack(max_archive_expanded_size=5 * MIB)
    tenant = uuid.uuid4()
    cases = [
        ("drawing.svg", "image/svg+xml", SVG_WITH_SCRIPT, "script"),
        ("notes.txt", "text/plain", HTML_AS_TEXT, "HTML"),
        ("bundle.zip", "application/zip", zip_declaring(6 * MIB), "expand"),
    ]
    for file_name, mime, content, reason in cases:
        event = await stack.run(upload_command(tenant, uuid.uuid4(), file_name, mime, content))
        assert event["type"] == "dms.upload.failed", (file_name, event)
        error = event["data"]["error"]
        assert error["code"] == "unsupported_file_type" and reason in error["message"], (file_name, error)
        assert (event["data"]["attempts"], event["data"]["retried"]) == (1, False)

    # Near misses are stored: an SVG without script, text mentioning HTML, a zip within the limit.
    fine = [
        ("drawing.svg", "image/svg+xml", b'<svg xmlns="http://www.w3.org/2000/svg"><circle r="4"/></svg>'),
        ("notes.txt", "text/plain", b"Export the page as <html> or as PDF; html is fine too.\n"),
        ("bundle.zip", "application/zip", zip_declaring(4 * MIB)),
    ]
    for file_name, mime, content in fine:
        event = await stack.run(upload_command(tenant, uuid.uuid4(), file_name, mime, content))
        assert event["type"] == "dms.upload.succeeded", (file_name, event)
    assert len(stack.repository(tenant).series_by_name) == len(fine)


async def test_active_content_is_stored_when_allowed(make_stack: StackFactory) -> None:
    stack = await make_stack(allow_active_content=True)
    tenant, document = uuid.uuid4(), uuid.uuid4()
    event = await stack.run(upload_command(tenant, document, "drawing.svg", "image/svg+xml", SVG_WITH_SCRIPT))
    assert event["type"] == "dms.upload.succeeded", event
    stored = stack.repository(tenant).series_by_name[str(document)].latest
    assert (stored.file_name, stored.length) == ("drawing.svg", len(SVG_WITH_SCRIPT))


async def test_a_gzip_bomb_behind_content_url_fails_at_once_as_too_large(
    make_stack: StackFactory, content_server: Callable[[str, bytes, dict[str, str]], str]
) -> None:
    stack = await make_stack(max_file_size=MIB, content_url_allowed_hosts=["127.0.0.1"])
    tenant = uuid.uuid4()
    bomb = gzip_of_zeros(1024 * MIB)  # 1 GiB inflated, about 1 MB on the wire: under max_file_size compressed
    assert len(bomb) <= MIB
    url = content_server("/bomb", bomb, {"Content-Encoding": "gzip", "Content-Type": "text/plain"})
    good = upload_command(tenant, uuid.uuid4(), "zeros.txt", "text/plain", b"x")

    await stack.send_raw(raw(good, content_base64=None, content_url=url, size=None, sha256=None), "gzip-bomb")
    (event,) = await stack.next_events(1)
    assert event["type"] == "dms.upload.failed", event
    assert event["data"]["error"]["code"] == "file_too_large", event
    assert (event["data"]["attempts"], event["data"]["retried"], event["data"]["dead_lettered"]) == (1, False, False)
    assert await stack.dead_letters() == []

    # A gzip body that inflates to just under the limit is stored, inflated.
    small = gzip_of_zeros(MIB // 2)
    url = content_server("/small", small, {"Content-Encoding": "gzip", "Content-Type": "text/plain"})
    await stack.send_raw(raw(good, content_base64=None, content_url=url, size=None, sha256=None), "gzip-small")
    (event,) = await stack.next_events(1)
    assert event["type"] == "dms.upload.succeeded" and event["data"]["size"] == MIB // 2, event


async def test_a_ten_thousand_character_file_name_is_shortened_not_refused(make_stack: StackFactory) -> None:
    stack = await make_stack()
    tenant, document = uuid.uuid4(), uuid.uuid4()
    good = upload_command(tenant, document, "short.pdf", "application/pdf", b"%PDF-1.7\n%%EOF\n")
    long_name = "Quarterly report " + "x" * (10_000 - len("Quarterly report .pdf")) + ".pdf"
    assert len(long_name) == 10_000

    await stack.send_raw(raw(good, file_name=long_name), "long-name")
    (event,) = await stack.next_events(1)
    assert event["type"] == "dms.upload.succeeded", event
    stored = stack.repository(tenant).series_by_name[str(document)].latest.file_name
    assert stored == event["data"]["file_name"]
    assert len(stored) == stack.settings.max_file_name_length and stored.startswith("Quarterly report xxx")
    assert stored.endswith(".pdf")
