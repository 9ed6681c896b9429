"""Gets an upload's bytes: inline base64, or a ``content_url`` fetched from an allowlisted host with a size cap."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection

import aiohttp
from yarl import URL

from worker.errors import ContentFetchFailed, ContentUnavailable, FileTooLarge, InvalidCommand


def decode_inline(content_base64: str, max_size: int) -> bytes:
    # Refuse before decoding: base64 grows 4/3, so this bounds memory for hostile input.
    stripped = "".join(content_base64.split())
    if len(stripped) * 3 // 4 - stripped[-2:].count("=") > max_size:
        raise FileTooLarge(f"inline content exceeds the limit of {max_size} bytes")
    try:
        return base64.b64decode(stripped, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidCommand("content_base64 is not valid base64") from exc


def host_allowed(url: URL, allowed_hosts: Collection[str]) -> bool:
    """Exact host or ``*.suffix`` wildcard; only http(s). Everything else (loopback, private ranges,
    link-local) is refused unless explicitly listed."""
    if url.scheme not in {"http", "https"} or not url.host:
        return False
    host = url.host.lower()
    for pattern in allowed_hosts:
        pattern = pattern.lower()
        if host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:])):
            return True
    return False


async def fetch_url(
    session: aiohttp.ClientSession,
    url: str,
    allowed_hosts: Collection[str],
    max_size: int,
    timeout_s: float,
) -> bytes:
    target = URL(url)
    if not host_allowed(target, allowed_hosts):
        raise ContentUnavailable(f"content_url host {target.host!r} is not allowlisted")
    try:
        # No redirects: a redirect could lead off the allowlist (SSRF).
        async with session.get(
            target, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=timeout_s)
        ) as response:
            if response.status >= 500:
                raise ContentFetchFailed(f"content_url answered {response.status}")
            if response.status != 200:
                raise ContentUnavailable(f"content_url answered {response.status}")
            if response.content_length is not None and response.content_length > max_size:
                raise FileTooLarge(f"content_url content exceeds the limit of {max_size} bytes")
            chunks: list[bytes] = []
            total = 0
            async for chunk in response.content.iter_chunked(64 * 1024):
                total += len(chunk)
                if total > max_size:
                    raise FileTooLarge(f"content_url content exceeds the limit of {max_size} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ContentFetchFailed(f"content_url could not be fetched: {type(exc).__name__}") from exc
