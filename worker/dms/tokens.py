"""OAuth2 client-credentials tokens per destination: cached, fetched once for all concurrent callers,
refreshed ahead of expiry (jittered, so replicas that fetched together do not renew together), and evicted
when DMS answers 401.

A client secret goes as HTTP Basic; X.509 credentials present their certificate on the TLS connection to the
``certurl`` host and send only the client id, no secret."""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import structlog

from worker import backoff, tracing
from worker.dms.destinations import Destination
from worker.dms.tls import client_certificate_context
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


def _span_attributes(destination: Destination) -> dict[str, object]:
    return {"dms.destination": destination.name, "dms.x509": destination.is_x509}


def basic_auth_header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


class TokenCache:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        clock: Callable[[], float] = time.monotonic,
        on_fetch: Callable[[], None] | None = None,
        ca_bundle: Path | None = None,
        on_fetch_failed: Callable[[], None] | None = None,
    ) -> None:
        self._session = session
        self._ca_bundle = ca_bundle
        self._client_certificates: dict[tuple[str, str], ssl.SSLContext] = {}
        self._clock = clock
        self._on_fetch = on_fetch
        self._on_fetch_failed = on_fetch_failed
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
            with tracing.span("token fetch", tracing.SpanKind.CLIENT, _span_attributes(destination)):
                try:
                    token = await self._fetch(destination)
                except BaseException:
                    if self._on_fetch_failed is not None:
                        self._on_fetch_failed()
                    raise
            self._tokens[key] = token
            return token.value

    def invalidate(self, destination: Destination, rejected_token: str) -> None:
        """Forget the token DMS rejected, unless another caller already replaced it."""
        cached = self._tokens.get(destination.cache_key)
        if cached is not None and cached.value == rejected_token:
            del self._tokens[destination.cache_key]

    def _client_certificate(self, destination: Destination) -> ssl.SSLContext:
        context = self._client_certificates.get(destination.cache_key)
        if context is None:
            if destination.certificate is None or destination.key is None:
                raise TokenRejected(f"destination {destination.name} has neither a client secret nor a certificate")
            context = client_certificate_context(
                destination.certificate, destination.key.get_secret_value(), self._ca_bundle
            )
            self._client_certificates[destination.cache_key] = context
        return context

    async def _fetch(self, destination: Destination) -> _Token:
        self.fetches += 1
        if self._on_fetch is not None:
            self._on_fetch()
        headers = {"Accept": "application/json"}
        form = {"grant_type": "client_credentials"}
        client_certificate: ssl.SSLContext | None = None
        if destination.client_secret is not None:
            headers["Authorization"] = basic_auth_header(
                destination.client_id, destination.client_secret.get_secret_value()
            )
        else:  # X.509: the certificate on the TLS connection is the credential
            form["client_id"] = destination.client_id
            client_certificate = self._client_certificate(destination)
        try:
            async with self._session.post(
                destination.token_url,
                data=form,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=10),
                ssl=client_certificate if client_certificate is not None else True,  # True: the session's own
            ) as response:
                if response.status != 200:
                    raise TokenRejected(f"token service of destination {destination.name} answered {response.status}")
                body = await response.json(content_type=None)
        except (aiohttp.ClientSSLError, aiohttp.ClientOSError, aiohttp.ServerDisconnectedError) as exc:
            if client_certificate is None:
                raise TokenRejected(
                    f"token service of destination {destination.name} unreachable: {type(exc).__name__}"
                ) from exc
            raise TokenRejected(
                f"mTLS token service of destination {destination.name} refused the TLS connection "
                f"({type(exc).__name__}): check that the X.509 certificate and key are current and that "
                f"certurl names the cert host"
            ) from exc
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise TokenRejected(
                f"token service of destination {destination.name} unreachable: {type(exc).__name__}"
            ) from exc
        try:
            value = str(body["access_token"])
            lifetime = float(body.get("expires_in") or DEFAULT_EXPIRES_IN)  # may be int or string
        except (KeyError, TypeError, ValueError) as exc:
            raise TokenRejected(f"token response of destination {destination.name} is malformed") from exc
        log.info("token_fetched", destination=destination.name, expires_in=lifetime, x509=destination.is_x509)
        return _Token(value=value, refresh_at=self._clock() + backoff.renewal(lifetime - refresh_margin(lifetime)))
