from __future__ import annotations

import base64

import aiohttp
import pytest
from aioresponses import aioresponses
from yarl import URL

from worker.content_source import decode_inline, fetch_url, host_allowed
from worker.errors import ContentFetchFailed, ContentUnavailable, FileTooLarge, InvalidCommand


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


async def test_fetch_streams_with_a_cap_and_refuses_redirects() -> None:
    async with aiohttp.ClientSession() as http:
        with aioresponses() as mocked:
            mocked.get("https://files.example/ok", body=b"content")
            mocked.get("https://files.example/big", body=b"x" * 100)
            mocked.get("https://files.example/redirect", status=302, headers={"Location": "http://127.0.0.1/"})
            mocked.get("https://files.example/down", status=503)
            assert await fetch_url(http, "https://files.example/ok", ["files.example"], 50, 5) == b"content"
            with pytest.raises(FileTooLarge):
                await fetch_url(http, "https://files.example/big", ["files.example"], 50, 5)
            with pytest.raises(ContentUnavailable, match="302"):
                await fetch_url(http, "https://files.example/redirect", ["files.example"], 50, 5)
            with pytest.raises(ContentFetchFailed):
                await fetch_url(http, "https://files.example/down", ["files.example"], 50, 5)
        with pytest.raises(ContentUnavailable, match="not allowlisted"):
            await fetch_url(http, "http://127.0.0.1:5672/", ["files.example"], 50, 5)
