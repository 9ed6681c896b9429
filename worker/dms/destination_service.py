"""The SAP BTP Destination service: "find destination" by name, reached through its own binding.

``GET <uri>/destination-configuration/v1/destinations/<name>`` answers the destination's configuration and,
for ``OAuth2ClientCredentials``, ``authTokens`` it fetched for us. The answer is cached per name until its
token is due for renewal (at most ``ttl_s``; jittered, ``worker.backoff.renewal``), fetched once for all
concurrent callers, and forgotten when DMS rejects the token, so the next call looks the destination up again.
A missing destination (404) is ``UnknownTenant``; a token the service could not get (``authTokens[].error``)
is ``TokenRejected``.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog
from pydantic import ValidationError

from worker import backoff
from worker.dms.destinations import Destination
from worker.dms.tokens import TokenCache, refresh_margin
from worker.errors import DmsUnavailable, TokenRejected, UnknownTenant

log = structlog.get_logger(__name__)

FIND_PATH = "destination-configuration/v1/destinations/"


@dataclass(frozen=True)
class FoundDestination:
    destination: Destination
    token: str | None  # from ``authTokens``; None: fetch one with the destination's own credentials
    fresh_until: float  # monotonic

    def __repr__(self) -> str:  # never show the token
        return f"FoundDestination(destination={self.destination!r}, has_token={self.token is not None})"


def parse_lookup(
    body: Any, name: str, now: float, ttl_s: float, jitter: backoff.Jitter = backoff.renewal
) -> FoundDestination:
    """A "find destination" answer as a destination, its token and how long both may be used (pure but for
    ``jitter``, which draws the time of renewal)."""
    if not isinstance(body, dict) or not isinstance(body.get("destinationConfiguration"), dict):
        raise UnknownTenant(f"destination {name}: the Destination service answer has no destinationConfiguration")
    configuration = body["destinationConfiguration"]
    try:
        destination = Destination.model_validate({**configuration, "Name": configuration.get("Name") or name})
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in e["loc"]) or "destination" for e in exc.errors()})
        raise UnknownTenant(f"destination {name} is not usable for DMS (check {', '.join(fields)})") from None
    fresh_until = now + jitter(ttl_s)
    tokens = [t for t in body.get("authTokens") or [] if isinstance(t, dict)]
    if not tokens:
        return FoundDestination(destination, None, fresh_until)
    first = tokens[0]
    if first.get("error") or not first.get("value"):
        reason = str(first.get("error") or "no token value")[:200]
        raise TokenRejected(f"the Destination service could not get a token for destination {name}: {reason}")
    try:
        lifetime = float(first.get("expires_in") or ttl_s)  # SAP sends it as a string
    except (TypeError, ValueError):
        lifetime = ttl_s
    fresh_until = now + jitter(min(ttl_s, lifetime - refresh_margin(lifetime)))
    return FoundDestination(destination, str(first["value"]), fresh_until)


class DestinationService:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        binding: Destination,
        tokens: TokenCache,
        ttl_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        on_secret: Callable[[str], None] | None = None,
    ) -> None:
        self._session = session
        self._binding = binding  # ``url`` is the service's ``uri``; the token comes from its XSUAA
        self._tokens = tokens
        self._ttl_s = ttl_s
        self._clock = clock
        self._on_secret = on_secret
        self._found: dict[str, FoundDestination] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.lookups = 0

    async def find(self, name: str) -> FoundDestination:
        found = self._found.get(name)
        if found is not None and self._clock() < found.fresh_until:
            return found
        async with self._locks.setdefault(name, asyncio.Lock()):  # single flight per name
            found = self._found.get(name)
            if found is not None and self._clock() < found.fresh_until:
                return found
            found = await self._lookup(name)
            self._found[name] = found
            return found

    def forget(self, name: str, rejected_token: str | None = None) -> None:
        """DMS rejected this destination's token: look it up again next time (unless already replaced)."""
        found = self._found.get(name)
        if found is not None and (rejected_token is None or found.token in {None, rejected_token}):
            del self._found[name]

    async def _lookup(self, name: str) -> FoundDestination:
        self.lookups += 1
        url = self._binding.url + FIND_PATH + urllib.parse.quote(name, safe="")
        for attempt in (1, 2):
            token = await self._tokens.get(self._binding)
            try:
                async with self._session.get(
                    url,
                    headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                    timeout=aiohttp.ClientTimeout(total=10),
                ) as response:
                    status = response.status
                    if status in {401, 403}:
                        self._tokens.invalidate(self._binding, token)
                        if attempt == 1:
                            continue
                        raise TokenRejected(f"the Destination service refused our token ({status})")
                    if status == 404:
                        raise UnknownTenant(f"destination {name} does not exist in the Destination service")
                    if status != 200:
                        raise DmsUnavailable(f"the Destination service answered {status} for destination {name}")
                    body = await response.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                raise DmsUnavailable(f"the Destination service is unreachable: {type(exc).__name__}") from exc
            found = parse_lookup(body, name, self._clock(), self._ttl_s)
            if self._on_secret is not None:  # tokens need not be registered: the log redactor knows bearer values
                for secret in found.destination.secrets():
                    self._on_secret(secret)
            log.info("destination_found", destination=name, url=found.destination.url, has_token=bool(found.token))
            return found
        raise AssertionError("unreachable")
