from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aioresponses import aioresponses

from tests.certificates import CertificateAuthority
from worker.dms.destinations import Destination
from worker.dms.tokens import TokenCache, basic_auth_header, refresh_margin
from worker.errors import TokenRejected

TOKEN_URL = "https://uaa.example/oauth/token"
DEST = Destination(url="https://dms.example/", client_id="cid", client_secret="s3cr3t-value", token_url=TOKEN_URL)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def test_refresh_margin_is_thirty_seconds_or_a_tenth_but_at_most_half() -> None:
    assert refresh_margin(43200) == 4320
    assert refresh_margin(3600) == 360
    assert refresh_margin(120) == 30
    assert refresh_margin(2) == 1


async def test_concurrent_callers_share_one_fetch(http: aiohttp.ClientSession) -> None:
    cache = TokenCache(http)
    with aioresponses() as mocked:
        mocked.post(TOKEN_URL, payload={"access_token": "tok-1", "expires_in": 3600})
        tokens = await asyncio.gather(*(cache.get(DEST) for _ in range(50)))
    assert set(tokens) == {"tok-1"}
    assert cache.fetches == 1


async def test_token_is_refreshed_ahead_of_expiry(http: aiohttp.ClientSession) -> None:
    clock = Clock()
    cache = TokenCache(http, clock=clock)
    with aioresponses() as mocked:
        mocked.post(TOKEN_URL, payload={"access_token": "tok-1", "expires_in": "3600"})  # string, as BTP sends
        mocked.post(TOKEN_URL, payload={"access_token": "tok-2", "expires_in": 3600})
        assert await cache.get(DEST) == "tok-1"
        fetched_at = clock.now
        # Renewed between 90 % and all of the way to the refresh margin (jittered): 2916 s to 3240 s here.
        clock.now = fetched_at + 0.9 * (3600 - 360) - 1
        assert await cache.get(DEST) == "tok-1"
        clock.now = fetched_at + 3600 - 359
        assert await cache.get(DEST) == "tok-2"
    assert cache.fetches == 2


async def test_invalidate_drops_only_the_rejected_token(http: aiohttp.ClientSession) -> None:
    cache = TokenCache(http)
    with aioresponses() as mocked:
        mocked.post(TOKEN_URL, payload={"access_token": "tok-1", "expires_in": 3600})
        mocked.post(TOKEN_URL, payload={"access_token": "tok-2", "expires_in": 3600})
        await cache.get(DEST)
        cache.invalidate(DEST, "some-older-token")
        assert await cache.get(DEST) == "tok-1"
        cache.invalidate(DEST, "tok-1")
        assert await cache.get(DEST) == "tok-2"


async def test_credentials_go_as_basic_auth(http: aiohttp.ClientSession) -> None:
    cache = TokenCache(http)
    with aioresponses() as mocked:
        mocked.post(TOKEN_URL, payload={"access_token": "t", "expires_in": 60})
        await cache.get(DEST)
        (call,) = next(iter(mocked.requests.values()))
    assert call.kwargs["headers"]["Authorization"] == basic_auth_header("cid", "s3cr3t-value")
    assert call.kwargs["data"] == {"grant_type": "client_credentials"}


@pytest.mark.parametrize("status", [401, 500])
async def test_refusals_raise_token_rejected_without_the_secret(http: aiohttp.ClientSession, status: int) -> None:
    cache = TokenCache(http)
    with aioresponses() as mocked:
        mocked.post(TOKEN_URL, status=status, body="nope")
        with pytest.raises(TokenRejected) as caught:
            await cache.get(DEST)
    assert "s3cr3t-value" not in str(caught.value) + repr(caught.value)


async def test_malformed_token_response_is_rejected(http: aiohttp.ClientSession) -> None:
    cache = TokenCache(http)
    with aioresponses() as mocked:
        mocked.post(TOKEN_URL, payload={"token": "x"})
        with pytest.raises(TokenRejected, match="malformed"):
            await cache.get(DEST)


def test_destination_repr_hides_the_secret() -> None:
    assert "s3cr3t-value" not in repr(DEST) and "s3cr3t-value" not in str(DEST)
    assert re.search(r"client_secret=SecretStr\('\*+'\)", repr(DEST))


async def test_x509_credentials_send_the_client_id_and_a_certificate_not_a_secret(http: aiohttp.ClientSession) -> None:
    issued = CertificateAuthority().issue("dms-worker-x509")
    dest = Destination.model_validate(
        {
            "uri": "https://dms.example/",
            "uaa": {
                "clientid": "sb-x509",
                "credential-type": "x509",
                "certificate": issued.certificate,
                "key": issued.key,
                "certurl": "https://uaa.cert.example",
            },
        }
    )
    cache = TokenCache(http)
    with aioresponses() as mocked:
        mocked.post("https://uaa.cert.example/oauth/token", payload={"access_token": "t", "expires_in": 60})
        assert await cache.get(dest) == "t"
        (call,) = next(iter(mocked.requests.values()))
    assert "Authorization" not in call.kwargs["headers"]
    assert call.kwargs["data"] == {"grant_type": "client_credentials", "client_id": "sb-x509"}
    assert isinstance(call.kwargs["ssl"], ssl.SSLContext)


async def test_an_unloadable_key_is_token_rejected_without_the_key(http: aiohttp.ClientSession) -> None:
    issued = CertificateAuthority().issue("x")
    wrong_key = CertificateAuthority().issue("y").key  # a real key, but not the certificate's
    dest = Destination(
        url="https://dms/",
        client_id="c",
        token_url="https://u/oauth/token",
        certificate=issued.certificate,
        key=wrong_key,
    )
    with pytest.raises(TokenRejected, match="do not load") as caught:
        await TokenCache(http).get(dest)
    assert wrong_key not in str(caught.value) + repr(caught.value) and caught.value.__cause__ is None
