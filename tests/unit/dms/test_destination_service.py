"""The Destination service client: find destination by name, its authTokens, caching, 404 and 401."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from yarl import URL

from worker.dms.destination_service import DestinationService, FoundDestination, parse_lookup
from worker.dms.destinations import Destination
from worker.dms.tokens import TokenCache
from worker.errors import DmsUnavailable, TokenRejected, UnknownTenant

BINDING = Destination.model_validate(
    {"uri": "https://destination.example", "clientid": "dest", "clientsecret": "dest-s3cret", "url": "https://uaa"}
)
FIND = "https://destination.example/destination-configuration/v1/destinations/"
CONFIGURATION = {
    "Name": "CALM_SD_DMS_INTEGRATION",
    "Type": "HTTP",
    "URL": "https://dms.example",
    "Authentication": "OAuth2ClientCredentials",
    "clientId": "dms-client",
    "clientSecret": "dms-s3cret",
    "tokenServiceURL": "https://uaa/oauth/token",
}


def answer(expires_in: str = "3600", **token: Any) -> dict[str, Any]:
    auth = {"type": "Bearer", "value": "dms-token", "expires_in": expires_in, **token}
    return {"owner": {"SubaccountId": "s"}, "destinationConfiguration": CONFIGURATION, "authTokens": [auth]}


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def nominal(seconds: float) -> float:
    """No jitter: the nominal renewal time itself."""
    return seconds


class TestParseLookup:
    """The answer of "find destination" read as SAP documents it (pure)."""

    def test_configuration_and_token(self) -> None:
        found = parse_lookup(answer(), "CALM_SD_DMS_INTEGRATION", now=0, ttl_s=300, jitter=nominal)
        assert (found.destination.url, found.destination.client_id, found.token) == (
            "https://dms.example/",
            "dms-client",
            "dms-token",
        )
        assert found.fresh_until == 300  # the TTL is shorter than the token's life

    def test_a_short_lived_token_is_renewed_ahead_of_its_expiry(self) -> None:
        assert parse_lookup(answer(expires_in="120"), "X", now=0, ttl_s=300, jitter=nominal).fresh_until == 90

    def test_the_renewal_is_jittered_between_nine_tenths_and_all_of_the_nominal_time(self) -> None:
        times = {parse_lookup(answer(expires_in="120"), "X", now=0, ttl_s=300).fresh_until for _ in range(50)}
        assert all(81 <= t <= 90 for t in times) and len(times) > 1  # replicas do not look up again together

    def test_without_auth_tokens_the_worker_fetches_its_own(self) -> None:
        found = parse_lookup({**answer(), "authTokens": []}, "X", now=0, ttl_s=300)
        assert found.token is None and found.destination.client_secret is not None

    def test_a_token_error_is_token_rejected(self) -> None:
        with pytest.raises(TokenRejected, match="could not get a token"):
            parse_lookup(answer(value="", error="Retrieval of OAuthToken failed"), "X", now=0, ttl_s=300)

    @pytest.mark.parametrize("body", [{}, [], {"destinationConfiguration": {"Name": "X", "URL": "https://d"}}])
    def test_an_unusable_answer_is_unknown_tenant(self, body: Any) -> None:
        with pytest.raises(UnknownTenant):
            parse_lookup(body, "X", now=0, ttl_s=300)

    def test_repr_hides_the_token(self) -> None:
        found = parse_lookup(answer(), "X", now=0, ttl_s=300)
        assert "dms-token" not in repr(found) and "dms-s3cret" not in repr(found)
        assert isinstance(found, FoundDestination)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_lookups_are_cached_single_flight_and_repeated_when_stale(http: aiohttp.ClientSession) -> None:
    clock = Clock()
    service = DestinationService(http, BINDING, TokenCache(http), ttl_s=300, clock=clock)
    with aioresponses() as mocked:
        mocked.post("https://uaa/oauth/token", payload={"access_token": "svc", "expires_in": 3600}, repeat=True)
        mocked.get(FIND + "CALM_SD_DMS_INTEGRATION", payload=answer(), repeat=True)
        found = await asyncio.gather(*(service.find("CALM_SD_DMS_INTEGRATION") for _ in range(20)))
        assert {f.token for f in found} == {"dms-token"} and service.lookups == 1
        clock.now += 269  # renewed at 90 % to 100 % of the TTL (jittered)
        await service.find("CALM_SD_DMS_INTEGRATION")
        assert service.lookups == 1
        clock.now += 32
        await service.find("CALM_SD_DMS_INTEGRATION")
        assert service.lookups == 2
        service.forget("CALM_SD_DMS_INTEGRATION", "some-other-token")  # not ours: kept
        await service.find("CALM_SD_DMS_INTEGRATION")
        assert service.lookups == 2
        service.forget("CALM_SD_DMS_INTEGRATION", "dms-token")
        await service.find("CALM_SD_DMS_INTEGRATION")
        assert service.lookups == 3
        (call, *_) = mocked.requests[("GET", URL(FIND + "CALM_SD_DMS_INTEGRATION"))]
    assert call.kwargs["headers"]["Authorization"] == "Bearer svc"


async def test_a_missing_destination_is_unknown_tenant(http: aiohttp.ClientSession) -> None:
    service = DestinationService(http, BINDING, TokenCache(http))
    with aioresponses() as mocked:
        mocked.post("https://uaa/oauth/token", payload={"access_token": "svc", "expires_in": 3600})
        mocked.get(FIND + "NOPE", status=404, payload={"ErrorMessage": "not found"})
        with pytest.raises(UnknownTenant, match="NOPE does not exist"):
            await service.find("NOPE")


async def test_a_rejected_service_token_is_fetched_again_once(http: aiohttp.ClientSession) -> None:
    tokens = TokenCache(http)
    service = DestinationService(http, BINDING, tokens)
    with aioresponses() as mocked:
        mocked.post("https://uaa/oauth/token", payload={"access_token": "old", "expires_in": 3600})
        mocked.post("https://uaa/oauth/token", payload={"access_token": "new", "expires_in": 3600})
        mocked.get(FIND + "X", status=401)
        mocked.get(FIND + "X", payload=answer())
        assert (await service.find("X")).token == "dms-token"
    assert tokens.fetches == 2


@pytest.mark.parametrize("status", [500, 503])
async def test_service_trouble_is_transient(http: aiohttp.ClientSession, status: int) -> None:
    service = DestinationService(http, BINDING, TokenCache(http))
    with aioresponses() as mocked:
        mocked.post("https://uaa/oauth/token", payload={"access_token": "svc", "expires_in": 3600})
        mocked.get(FIND + "X", status=status)
        with pytest.raises(DmsUnavailable):
            await service.find("X")
