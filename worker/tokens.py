"""OAuth2 client-credentials tokens per destination: cached, fetched once for all concurrent callers,
refreshed ahead of expiry, and evicted when DMS answers 401."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import structlog

from worker.destinations import Destination
from worker.errors import TokenRejected

log = structlog.get_logger(__name__)

DEFAULT_EXPIRES_IN = 3600.0


@dataclass
class _Token:
    value: str
    refresh_at: float  # monotonic

    def __repr__(self) -> str:  # never show the token
        return f"_Token(refresh_at={self.refresh_at:.0f})"


def refresh_margin(lifetime_s: float) -> float:
    """Renew ahead of expiry: 30 s or a tenth of the lifetime, whichever is more, but at most half of it."""
    return min(max(30.0, lifetime_s / 10), lifetime_s / 2)


def basic_auth_header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


class TokenCache:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        clock: Callable[[], float] = time.monotonic,
        on_fetch: Callable[[], None] | None = None,
    ) -> None:
        self._session = session
        self._clock = clock
        self._on_fetch = on_fetch
        self._tokens: dict[tuple[str, str], _Token] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.fetches = 0

    async def get(self, destination: Destination) -> str:
        key = destination.cache_key
        cached = self._tokens.get(key)
        if cached is not None and self._clock() < cached.refresh_at:
            return cached.value
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:  # single flight: the first caller fetches, the rest reuse its token
            cached = self._tokens.get(key)
            if cached is not None and self._clock() < cached.refresh_at:
                return cached.value
            token = await self._fetch(destination)
            self._tokens[key] = token
            return token.value

    def invalidate(self, destination: Destination, rejected_token: str) -> None:
        """Forget the token DMS rejected, unless another caller already replaced it."""
        cached = self._tokens.get(destination.cache_key)
        if cached is not None and cached.value == rejected_token:
            del self._tokens[destination.cache_key]

    async def _fetch(self, destination: Destination) -> _Token:
        self.fetches += 1
        if self._on_fetch is not None:
            self._on_fetch()
        auth = basic_auth_header(destination.client_id, destination.client_secret.get_secret_value())
        try:
            async with self._session.post(
                destination.token_url,
                data={"grant_type": "client_credentials"},
                headers={"Authorization": auth, "Accept": "application/json"},
                timeout=aiohttp.ClientTimeout(total=10),
            ) as response:
                if response.status != 200:
                    raise TokenRejected(f"token service of destination {destination.name} answered {response.status}")
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise TokenRejected(
                f"token service of destination {destination.name} unreachable: {type(exc).__name__}"
            ) from exc
        try:
            value = str(body["access_token"])
            lifetime = float(body.get("expires_in") or DEFAULT_EXPIRES_IN)  # may be int or string
        except (KeyError, TypeError, ValueError) as exc:
            raise TokenRejected(f"token response of destination {destination.name} is malformed") from exc
        log.info("token_fetched", destination=destination.name, expires_in=lifetime)
        return _Token(value=value, refresh_at=self._clock() + lifetime - refresh_margin(lifetime))
