from __future__ import annotations

import base64
import gzip
import hashlib
import zlib
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aioresponses import aioresponses
from yarl import URL

from worker.commands.content import CappedBody, decode_inline, fetch_url, host_allowed
from worker.commands.spool import Spool, SpooledContent
from worker.errors import ContentFetchFailed, ContentUnavailable, FileTooLarge, InvalidCommand


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    opened = Spool.open(tmp_path)
    yield opened
    opened.close()


def read_and_close(content: SpooledContent) -> bytes:
    with content.open() as file:
        data = file.read()
    content.close()
    return data


def test_inline_content_decodes() -> None:
    assert decode_inline(base64.b64encode(b"hello").decode(), 10) == b"hello"


def test_inline_content_over_the_limit_is_refused_before_decoding() -> None:
    with pytest.raises(FileTooLarge):
        decode_inline(base64.b64encode(b"x" * 11).decode(), 10)
    assert decode_inline(base64.b64encode(b"x" * 10).decode(), 10) == b"x" * 10


@pytest.mark.parametrize("bad", ["!!!!", "abc", "aGVsbG8=garbage"])
def test_invalid_base64_is_an_invalid_command(bad: str) -> None:
    with pytest.raises(InvalidCommand):
        decode_inline(bad, 100)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://files.example/a", True),
        ("https://cdn.files.example/a", True),
        ("http://127.0.0.1/a", False),
        ("http://169.254.169.254/latest/meta-data", False),
        ("http://10.0.0.1/a", False),
        ("http://[::1]/a", False),
        ("file:///etc/passwd", False),
        ("ftp://files.example/a", False),
        ("https://files.example.evil.test/a", False),
    ],
)
def test_only_allowlisted_http_hosts(url: str, allowed: bool) -> None:
    assert host_allowed(URL(url), ["files.example", "*.files.example"]) is allowed


async def test_fetch_streams_with_a_cap_and_refuses_redirects(spool: Spool) -> None:
    async with aiohttp.ClientSession() as http:
        with aioresponses() as mocked:
            mocked.get("https://files.example/ok", body=b"content")
            mocked.get("https://files.example/big", body=b"x" * 100)
            mocked.get("https://files.example/redirect", status=302, headers={"Location": "http://127.0.0.1/"})
            mocked.get("https://files.example/down", status=503)
            fetched = await fetch_url(http, "https://files.example/ok", ["files.example"], 50, 5, spool)
            assert (fetched.size, fetched.sha256, fetched.head) == (
                7,
                hashlib.sha256(b"content").hexdigest(),
                b"content",
            )
            assert read_and_close(fetched) == b"content"
            with pytest.raises(FileTooLarge):
                await fetch_url(http, "https://files.example/big", ["files.example"], 50, 5, spool)
            with pytest.raises(ContentUnavailable, match="302"):
                await fetch_url(http, "https://files.example/redirect", ["files.example"], 50, 5, spool)
            with pytest.raises(ContentFetchFailed):
                await fetch_url(http, "https://files.example/down", ["files.example"], 50, 5, spool)
        with pytest.raises(ContentUnavailable, match="not allowlisted"):
            await fetch_url(http, "http://127.0.0.1:5672/", ["files.example"], 50, 5, spool)


def gzip_stream(content: bytes, wbits: int = 31) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return compressor.compress(content) + compressor.flush()


def fed_in_chunks(body: CappedBody, data: bytes, size: int = 7) -> bytes:
    pieces: list[bytes] = []
    for start in range(0, len(data), size):
        pieces += body.feed(data[start : start + size])
    return b"".join(pieces + body.finish())


class TestCappedBody:
    """The cap counts the content's real (inflated) bytes and stops inflating one byte past it."""

    # Parameters name the tests: gzip's mtime=0 gives the same bytes, so the same test ids, in every pytest-xdist
    # process (a time stamp in the header would differ between processes and stop the run).
    @pytest.mark.parametrize(
        ("encoding", "wire"),
        [
            ("", b"x" * 100),
            ("identity", b"x" * 100),
            ("gzip", gzip.compress(b"x" * 100, mtime=0)),
            ("X-GZIP", gzip.compress(b"x" * 100, mtime=0)),
            ("deflate", gzip_stream(b"x" * 100, wbits=15)),  # zlib-wrapped, as RFC 9110 says
            ("deflate", gzip_stream(b"x" * 100, wbits=-15)),  # raw, as some servers send it
            ("gzip", gzip.compress(b"x" * 60, mtime=0) + gzip.compress(b"x" * 40, mtime=0)),  # two members
            ("gzip", gzip.compress(b"x" * 100, mtime=0) + b"\0" * 8),  # trailing padding is ignored
        ],
    )
    def test_content_within_the_cap_is_returned_inflated(self, encoding: str, wire: bytes) -> None:
        assert fed_in_chunks(CappedBody(encoding, 100), wire) == b"x" * 100

    @pytest.mark.parametrize("encoding", ["", "gzip", "deflate"])
    def test_one_byte_over_the_cap_is_too_large(self, encoding: str) -> None:
        wire = {"": b"x" * 101, "gzip": gzip.compress(b"x" * 101), "deflate": gzip_stream(b"x" * 101, 15)}[encoding]
        with pytest.raises(FileTooLarge):
            fed_in_chunks(CappedBody(encoding, 100), wire)

    def test_a_bomb_is_refused_from_its_first_chunk_without_inflating_it(self) -> None:
        bomb = gzip_stream(b"\0" * 64 * 1024 * 1024)  # 64 MiB of zeros in about 64 KB
        body = CappedBody("gzip", 1024)
        with pytest.raises(FileTooLarge, match="inflates past the limit of 1024 bytes"):
            body.feed(bomb)
        assert body.size <= 1025

    @pytest.mark.parametrize(
        ("encoding", "wire", "reason"),
        [
            ("br", b"anything", "only gzip and deflate"),
            ("gzip, gzip", b"anything", "only gzip and deflate"),
            ("gzip", b"not gzip at all", "does not inflate"),
            ("gzip", gzip.compress(b"x" * 100, mtime=0)[:-12], "middle of its compressed stream"),
        ],
    )
    def test_encodings_we_cannot_inflate_are_permanent_failures(self, encoding: str, wire: bytes, reason: str) -> None:
        with pytest.raises(ContentUnavailable, match=reason):
            fed_in_chunks(CappedBody(encoding, 1000), wire)


async def test_fetch_inflates_a_gzip_body_and_caps_its_inflated_size(spool: Spool) -> None:
    async with aiohttp.ClientSession() as http:
        with aioresponses() as mocked:
            gzipped = {"Content-Encoding": "gzip"}
            mocked.get("https://files.example/small", body=gzip.compress(b"y" * 50), headers=gzipped)
            mocked.get("https://files.example/bomb", body=gzip.compress(b"\0" * 10_000), headers=gzipped)
            small = await fetch_url(http, "https://files.example/small", ["files.example"], 50, 5, spool)
            assert read_and_close(small) == b"y" * 50
            with pytest.raises(FileTooLarge, match="inflates past"):
                await fetch_url(http, "https://files.example/bomb", ["files.example"], 50, 5, spool)


async def test_a_failed_fetch_leaves_no_spool_file(spool: Spool) -> None:
    async with aiohttp.ClientSession() as http:
        with aioresponses() as mocked:
            mocked.get("https://files.example/big", body=b"x" * 100)
            mocked.get(
                "https://files.example/bomb", body=gzip.compress(b"\0" * 10_000), headers={"Content-Encoding": "gzip"}
            )
            mocked.get("https://files.example/broken", exception=aiohttp.ClientPayloadError("cut"))
            for name, error in [("big", FileTooLarge), ("bomb", FileTooLarge), ("broken", ContentFetchFailed)]:
                with pytest.raises(error):
                    await fetch_url(http, f"https://files.example/{name}", ["files.example"], 50, 5, spool)
    assert spool.files() == []
