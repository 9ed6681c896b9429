"""The emulator over real HTTP: auth, admin API shapes, CMIS error paths, faults and persistence."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from worker.dms.tokens import basic_auth_header
from worker.testing.emulator import EmulatorConfig, RunningEmulator, serve_emulator
from worker.testing.emulator.store import EICAR_SIGNATURE, VIRUS_MESSAGE

pytestmark = pytest.mark.integration


EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + EICAR_SIGNATURE + b"$H+H*"


class Api:
    def __init__(self, emulator: RunningEmulator, http: aiohttp.ClientSession) -> None:
        self.base, self.http, self.token = emulator.base_url, http, ""

    async def login(self, client: str = "emulator-client", secret: str = "emulator-secret") -> aiohttp.ClientResponse:
        response = await self.http.post(
            self.base + "oauth/token",
            data={"grant_type": "client_credentials"},
            headers={"Authorization": basic_auth_header(client, secret)},
        )
        if response.status == 200:
            self.token = (await response.json())["access_token"]
        return response

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def create_repo(self, external_id: str | None = None, versioned: bool = True) -> aiohttp.ClientResponse:
        spec = {
            "displayName": "r",
            "repositoryType": "internal",
            "isVersionEnabled": versioned,
            "isVirusScanEnabled": True,
            "externalId": external_id,
        }
        return await self.http.post(self.base + "rest/v2/repositories", json={"repository": spec}, headers=self.auth)

    async def cmis(
        self, repo_id: str, fields: dict[str, str], content: bytes | None = None, file_name: str = "f.txt"
    ) -> tuple[int, Any]:
        form = aiohttp.FormData()
        for key, value in {"succinct": "true", **fields}.items():
            form.add_field(key, value)
        if content is not None:
            form.add_field("content", content, filename=file_name, content_type="text/plain")
        async with self.http.post(f"{self.base}browser/{repo_id}/root", data=form, headers=self.auth) as response:
            text = await response.text()
            return response.status, (await response.json() if text else None)

    async def create_doc(self, repo_id: str, name: str, content: bytes = b"x") -> tuple[int, Any]:
        return await self.cmis(
            repo_id,
            {
                "cmisaction": "createDocument",
                "propertyId[0]": "cmis:name",
                "propertyValue[0]": name,
                "propertyId[1]": "cmis:objectTypeId",
                "propertyValue[1]": "cmis:document",
            },
            content,
        )


@pytest.fixture
async def api(emulator: RunningEmulator) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as http:
        client = Api(emulator, http)
        assert (await client.login()).status == 200
        yield client


async def _repo(api: Api) -> str:
    return str((await (await api.create_repo()).json())["id"])


async def test_token_endpoint_takes_basic_or_form_credentials_and_refuses_bad_ones(api: Api) -> None:
    assert (await api.login(secret="wrong")).status == 401
    form = {"grant_type": "client_credentials", "client_id": "emulator-client", "client_secret": "emulator-secret"}
    async with api.http.post(api.base + "oauth/token", data=form) as response:
        body = await response.json()
    assert response.status == 200 and body["token_type"] == "bearer" and body["expires_in"] == 3600


async def test_unknown_expired_and_revoked_tokens_get_401() -> None:
    async with serve_emulator(EmulatorConfig(token_lifetime_s=0.3)) as emulator, aiohttp.ClientSession() as http:
        api = Api(emulator, http)
        api.token = "made-up"
        assert (await http.get(api.base + "rest/v2/repositories", headers=api.auth)).status == 401
        await api.login()
        assert (await http.get(api.base + "rest/v2/repositories", headers=api.auth)).status == 200
        await asyncio.sleep(0.4)
        assert (await http.get(api.base + "browser", headers=api.auth)).status == 401
        await api.login()
        await http.post(api.base + "_emulator/tokens/revoke")
        assert (await http.get(api.base + "browser", headers=api.auth)).status == 401
        stats = await (await http.get(api.base + "_emulator/stats")).json()
        assert stats["tokens_issued"] == 2


async def test_repository_list_is_an_object_for_one_and_an_array_otherwise(api: Api) -> None:
    listing = api.base + "rest/v2/repositories"
    assert (await (await api.http.get(listing, headers=api.auth)).json())["repoAndConnectionInfos"] == []
    created = await (await api.create_repo("t-1")).json()
    one = (await (await api.http.get(listing, headers=api.auth)).json())["repoAndConnectionInfos"]
    assert isinstance(one, dict) and one["repository"]["externalId"] == "t-1"
    assert one["repository"]["cmisRepositoryId"] == created["cmisRepositoryId"]
    await api.create_repo("t-2")
    two = (await (await api.http.get(listing, headers=api.auth)).json())["repoAndConnectionInfos"]
    assert isinstance(two, list) and len(two) == 2


async def test_duplicate_external_id_gives_409_already_exists(api: Api) -> None:
    assert (await api.create_repo("t-1")).status == 200
    response = await api.create_repo("t-1")
    assert response.status == 409 and "t-1 already exists" in (await response.json())["message"]


async def test_get_and_delete_repository(api: Api) -> None:
    repo_id = await _repo(api)
    url = f"{api.base}rest/v2/repositories/{repo_id}"
    assert (await (await api.http.get(url, headers=api.auth)).json())["repository"]["id"] == repo_id
    assert (await api.http.delete(url, headers=api.auth)).status == 200
    missing = await api.http.get(url, headers=api.auth)
    assert missing.status == 404 and "There is no repository with the given ID" in (await missing.json())["message"]


async def test_deleting_a_repository_takes_its_documents_and_leaves_the_others(api: Api) -> None:
    doomed, kept = await _repo(api), str((await (await api.create_repo("t-kept")).json())["id"])
    for repo_id in (doomed, kept):
        assert (await api.create_doc(repo_id, "doc-1"))[0] == 201
    url = f"{api.base}rest/v2/repositories/{doomed}"
    answer = await api.http.delete(url, headers=api.auth)
    assert answer.status == 200 and (await answer.json())["message"] == f"Repository with id:{doomed} deleted"
    assert (await api.http.delete(url, headers=api.auth)).status == 404
    children = await api.http.get(f"{api.base}browser/{doomed}/root?cmisselector=children", headers=api.auth)
    assert children.status == 404 and (await children.json())["exception"] == "objectNotFound"
    status, body = await api.cmis(
        kept, {"cmisaction": "createDocument", "propertyId[0]": "cmis:name", "propertyValue[0]": "doc-1"}, b"x"
    )
    assert status == 409 and body["exception"] == "nameConstraintViolation"  # doc-1 is still there


async def test_root_children_come_in_pages_by_skip_count_and_max_items(api: Api) -> None:
    repo_id = await _repo(api)
    for n in range(5):
        await api.create_doc(repo_id, f"doc-{n}")
    url = f"{api.base}browser/{repo_id}/root"

    async def page(**query: str) -> tuple[int, Any]:
        params = {"cmisselector": "children", "succinct": "true", **query}
        async with api.http.get(url, params=params, headers=api.auth) as response:
            return response.status, await response.json()

    names = []
    for skip in (0, 2, 4):
        status, body = await page(skipCount=str(skip), maxItems="2")
        assert status == 200 and body["numItems"] == 5 and body["hasMoreItems"] == (skip < 3)
        names += [o["object"]["succinctProperties"]["cmis:name"] for o in body["objects"]]
    assert names == [f"doc-{n}" for n in range(5)]
    assert (await page(skipCount="5"))[1]["objects"] == []
    for bad in ({"maxItems": "-1"}, {"skipCount": "x"}):
        status, body = await page(**bad)
        assert status == 400 and body["exception"] == "invalidArgument"


async def test_duplicate_name_is_409_name_constraint_violation(api: Api) -> None:
    repo_id = await _repo(api)
    status, first = await api.create_doc(repo_id, "doc-1")
    assert status == 201 and first["succinctProperties"]["cmis:versionLabel"] == "1.0"
    status, body = await api.create_doc(repo_id, "doc-1")
    assert status == 409 and body["exception"] == "nameConstraintViolation"
    assert first["succinctProperties"]["cmis:objectId"] in body["message"]


async def test_concurrent_checkouts_one_wins_the_rest_get_409(api: Api) -> None:
    repo_id = await _repo(api)
    _, doc = await api.create_doc(repo_id, "doc-1")
    object_id = doc["succinctProperties"]["cmis:objectId"]
    results = await asyncio.gather(
        *(api.cmis(repo_id, {"cmisaction": "checkOut", "objectId": object_id}) for _ in range(10))
    )
    statuses = sorted(status for status, _ in results)
    assert statuses == [201] + [409] * 9
    assert all(body["exception"] == "updateConflict" for status, body in results if status == 409)


async def test_check_in_major_and_fetch_each_version(api: Api) -> None:
    repo_id = await _repo(api)
    _, doc = await api.create_doc(repo_id, "doc-1", b"first")
    _, pwc = await api.cmis(repo_id, {"cmisaction": "checkOut", "objectId": doc["succinctProperties"]["cmis:objectId"]})
    assert pwc["succinctProperties"]["cmis:isPrivateWorkingCopy"] is True
    status, v2 = await api.cmis(
        repo_id,
        {
            "cmisaction": "checkIn",
            "objectId": pwc["succinctProperties"]["cmis:objectId"],
            "major": "true",
            "checkinComment": "c2",
        },
        b"second",
        "new.txt",
    )
    props = v2["succinctProperties"]
    assert status == 201 and (props["cmis:versionLabel"], props["cmis:checkinComment"]) == ("2.0", "c2")
    assert props["cmis:contentStreamFileName"] == "new.txt"
    async with api.http.get(
        f"{api.base}browser/{repo_id}/root/doc-1",
        params={"cmisselector": "object", "succinct": "true"},
        headers=api.auth,
    ) as response:
        assert (await response.json())["succinctProperties"]["cmis:versionLabel"] == "2.0"
    for object_id, expected in (
        (doc["succinctProperties"]["cmis:objectId"], b"first"),
        (props["cmis:objectId"], b"second"),
    ):
        async with api.http.get(
            f"{api.base}browser/{repo_id}/root",
            params={"objectId": object_id, "cmisselector": "content"},
            headers=api.auth,
        ) as r:
            assert await r.read() == expected


async def test_query_by_name_in_folder(api: Api) -> None:
    repo_id = await _repo(api)
    _, doc = await api.create_doc(repo_id, "doc-'1'")
    await api.create_doc(repo_id, "doc-2")
    root = await (await api.http.get(f"{api.base}rest/v2/repositories/{repo_id}", headers=api.auth)).json()
    folder = root["repository"]["cmisRepositoryId"]
    statement = f"SELECT cmis:objectId FROM cmis:document WHERE cmis:name = 'doc-''1''' AND IN_FOLDER('{folder}')"
    async with api.http.get(
        f"{api.base}browser/{repo_id}",
        params={"cmisselector": "query", "q": statement, "succinct": "true"},
        headers=api.auth,
    ) as r:
        body = await r.json()
    assert body["numItems"] == 1
    assert body["results"][0]["succinctProperties"] == {"cmis:objectId": doc["succinctProperties"]["cmis:objectId"]}


async def test_eicar_is_refused_with_the_malware_message(api: Api) -> None:
    repo_id = await _repo(api)
    status, body = await api.create_doc(repo_id, "virus", EICAR)
    assert status == 409 and body["message"] == VIRUS_MESSAGE


async def test_missing_objects_are_404_object_not_found(api: Api) -> None:
    repo_id = await _repo(api)
    status, body = await api.cmis(repo_id, {"cmisaction": "delete", "objectId": "nope", "allVersions": "true"})
    assert status == 404 and body["exception"] == "objectNotFound"


async def test_max_content_size_is_enforced() -> None:
    async with serve_emulator(EmulatorConfig(max_content_size=10)) as emulator, aiohttp.ClientSession() as http:
        api = Api(emulator, http)
        await api.login()
        status, body = await api.create_doc(await _repo(api), "big", b"x" * 11)
        assert status == 409 and "exceeds the maximum" in body["message"]


async def test_scripted_faults_503_429_and_dropped_connections(api: Api) -> None:
    repo_id = await _repo(api)
    scripted = [
        {"kind": "status", "status": 503, "times": 1, "path_prefix": "/browser", "action": "createDocument"},
        {"kind": "rate_limit", "retry_after": 7, "times": 1, "path_prefix": "/browser"},
        {"kind": "drop", "times": 1, "path_prefix": "/browser"},
    ]
    await api.http.post(api.base + "_emulator/faults", json={"scripted": scripted})
    assert (await api.create_doc(repo_id, "a"))[0] == 503
    async with api.http.get(f"{api.base}browser/{repo_id}", headers=api.auth) as response:
        assert response.status == 429 and response.headers["Retry-After"] == "7"
    with pytest.raises(aiohttp.ClientError):
        await api.create_doc(repo_id, "a")
    assert (await api.create_doc(repo_id, "a"))[0] == 201


async def test_a_lost_answer_is_worked_on_and_then_cut_off(api: Api) -> None:
    """``lose_answer`` is the fault ``drop`` is not: DMS applies the write, the client sees only a broken
    connection (the same error a drop gives), and the write is there when looked at again."""
    await api.http.post(
        api.base + "_emulator/faults",
        json={"scripted": [{"kind": "lose_answer", "path_prefix": "/rest/v2/repositories"}]},
    )
    with pytest.raises(aiohttp.ClientError):
        await api.create_repo(external_id="lost-answer")
    async with api.http.get(api.base + "rest/v2/repositories", headers=api.auth) as response:
        listed = (await response.json())["repoAndConnectionInfos"]
    listed = listed if isinstance(listed, list) else [listed]
    repo_id = next(r["repository"]["id"] for r in listed if r["repository"].get("externalId") == "lost-answer")
    await api.http.post(
        api.base + "_emulator/faults",
        json={"scripted": [{"kind": "lose_answer", "path_prefix": "/browser", "action": "createDocument"}]},
    )
    with pytest.raises(aiohttp.ClientError):
        await api.create_doc(repo_id, "kept")
    status, body = await api.create_doc(repo_id, "kept")
    assert status == 409 and body["exception"] == "nameConstraintViolation"  # the lost one was written
    await api.http.post(api.base + "_emulator/faults", json={"lose_answer_rate": 1.0})
    with pytest.raises(aiohttp.ClientError):
        await api.create_doc(repo_id, "by-rate")
    await api.http.delete(api.base + "_emulator/faults")
    assert (await api.create_doc(repo_id, "by-rate"))[0] == 409


async def test_latency_and_error_rate_are_switchable_at_runtime(api: Api) -> None:
    await api.http.post(
        api.base + "_emulator/faults", json={"latency_ms": 100, "error_rate": 1.0, "error_statuses": [502]}
    )
    started = asyncio.get_running_loop().time()
    response = await api.http.get(api.base + "rest/v2/repositories", headers=api.auth)
    assert response.status == 502 and asyncio.get_running_loop().time() - started >= 0.1
    await api.http.post(api.base + "_emulator/faults", json={"latency_ms": 0, "error_rate": 0.0})
    assert (await api.http.get(api.base + "rest/v2/repositories", headers=api.auth)).status == 200


NO_FAULTS = {
    "latency_ms": 0.0,
    "answer_ms": 0.0,
    "answer_jitter_ms": 0.0,
    "error_rate": 0.0,
    "error_statuses": [500, 502, 503],
    "rate_limit_rate": 0.0,
    "retry_after": 1,
    "drop_rate": 0.0,
    "lose_answer_rate": 0.0,
    "scripted": [],
    "seed": None,
}


class TestTheFaultSet:
    """``/_emulator/faults``: GET shows the set in force, POST replaces it, POST {} and DELETE clear it."""

    async def faults(self, api: Api, method: str, body: Any = None) -> tuple[int, Any]:
        async with api.http.request(method, api.base + "_emulator/faults", json=body) as response:
            return response.status, await response.json()

    async def status_of_a_request(self, api: Api) -> int:
        async with api.http.get(api.base + "rest/v2/repositories", headers=api.auth) as response:
            return response.status

    async def test_get_shows_no_faults_at_first(self, api: Api) -> None:
        assert await self.faults(api, "GET") == (200, NO_FAULTS)

    async def test_post_with_an_empty_object_clears_every_fault(self, api: Api) -> None:
        set_ = {"error_rate": 1.0, "error_statuses": [502], "latency_ms": 20, "seed": 7}
        assert await self.faults(api, "POST", set_) == (200, NO_FAULTS | set_)
        assert await self.status_of_a_request(api) == 502
        assert await self.faults(api, "POST", {}) == (200, NO_FAULTS)
        assert await self.status_of_a_request(api) == 200
        assert await self.faults(api, "GET") == (200, NO_FAULTS)

    async def test_post_replaces_the_set_rather_than_merging_into_it(self, api: Api) -> None:
        await self.faults(api, "POST", {"error_rate": 1.0})
        assert await self.faults(api, "POST", {"latency_ms": 10}) == (200, NO_FAULTS | {"latency_ms": 10})
        assert await self.status_of_a_request(api) == 200  # the error_rate of the first POST is gone

    async def test_delete_clears_every_fault_scripted_ones_included(self, api: Api) -> None:
        scripted = {"kind": "status", "status": 503, "times": 5, "path_prefix": "/rest"}
        await self.faults(api, "POST", {"drop_rate": 0.0, "rate_limit_rate": 1.0, "scripted": [scripted]})
        assert await self.status_of_a_request(api) == 503
        assert await self.faults(api, "DELETE") == (200, NO_FAULTS)
        assert await self.status_of_a_request(api) == 200

    async def test_a_post_without_a_body_clears_them_too(self, api: Api) -> None:
        await self.faults(api, "POST", {"error_rate": 1.0})
        async with api.http.post(api.base + "_emulator/faults") as response:
            assert response.status == 200 and await response.json() == NO_FAULTS

    @pytest.mark.parametrize(
        ("body", "message"),
        [
            ({"error_rate": 0.0, "latency": 5}, "unknown fault setting 'latency'"),
            ({"scripted": [{"kind": "status", "tims": 2}]}, "unexpected keyword argument 'tims'"),
            ([], "faults are a JSON object of fault settings"),
        ],
        ids=["unknown_setting", "unknown_scripted_field", "not_an_object"],
    )
    async def test_a_wrong_body_is_refused_and_changes_nothing(self, api: Api, body: Any, message: str) -> None:
        await self.faults(api, "POST", {"error_rate": 1.0, "error_statuses": [502]})
        status, answer = await self.faults(api, "POST", body)
        assert status == 400 and message in answer["message"], answer
        assert await self.faults(api, "GET") == (200, NO_FAULTS | {"error_rate": 1.0, "error_statuses": [502]})


async def test_answer_ms_holds_each_answer_from_its_arrival_work_included(api: Api) -> None:
    await api.http.post(api.base + "_emulator/faults", json={"answer_ms": 300})
    loop = asyncio.get_running_loop()

    async def timed() -> float:
        started = loop.time()
        async with api.http.get(api.base + "rest/v2/repositories", headers=api.auth) as response:
            assert response.status == 200
        return loop.time() - started

    took = await asyncio.gather(*(timed() for _ in range(20)))  # a burst: each waits from its own arrival
    # Answers one after another would take 0.3, 0.6, ... 6 s; the bound leaves room for a loaded CI box (four
    # test processes and the broker on two cores made 0.60 s once) and still fails from the 5th answer on.
    assert all(0.3 <= t < 1.5 for t in took), took
    await api.http.post(api.base + "_emulator/faults", json={"answer_ms": 0})
    assert await timed() < 0.3


async def test_state_survives_a_restart_with_a_data_dir(tmp_path: Path) -> None:
    config = EmulatorConfig(data_dir=tmp_path)
    async with serve_emulator(config) as emulator, aiohttp.ClientSession() as http:
        api = Api(emulator, http)
        await api.login()
        repo_id = await _repo(api)
        _, doc = await api.create_doc(repo_id, "kept", b"durable bytes")
    async with serve_emulator(EmulatorConfig(data_dir=tmp_path)) as emulator, aiohttp.ClientSession() as http:
        api = Api(emulator, http)
        await api.login()
        async with http.get(
            f"{api.base}browser/{repo_id}/root",
            headers=api.auth,
            params={"objectId": doc["succinctProperties"]["cmis:objectId"], "cmisselector": "content"},
        ) as response:
            assert await response.read() == b"durable bytes"
