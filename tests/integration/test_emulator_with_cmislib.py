"""A third-party CMIS browser-binding client (cmislib) drives the emulator through a document's life."""

from __future__ import annotations

import asyncio
import io

import aiohttp
import pytest
from cmislib import CmisClient
from cmislib.browser.binding import BrowserBinding

from worker.dms.tokens import basic_auth_header
from worker.testing.emulator import RunningEmulator

pytestmark = pytest.mark.integration


async def _token_and_repository(emulator: RunningEmulator) -> tuple[str, str]:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            emulator.token_url,
            data={"grant_type": "client_credentials"},
            headers={"Authorization": basic_auth_header("emulator-client", "emulator-secret")},
        ) as resp:
            token = (await resp.json())["access_token"]
        body = {"repository": {"displayName": "cmislib", "repositoryType": "internal", "isVersionEnabled": True}}
        async with http.post(
            emulator.base_url + "rest/v2/repositories",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        ) as resp:
            repo_id = (await resp.json())["id"]
    return token, repo_id


def _document_lifecycle(base_url: str, token: str, repo_id: str) -> dict[str, object]:
    client = CmisClient(base_url + "browser", "", "", binding=BrowserBinding())
    client.session.auth = None
    client.session.headers["Authorization"] = f"Bearer {token}"

    listed = [r["repositoryId"] for r in client.getRepositories()]
    repo = client.getRepository(repo_id)
    root = repo.getRootFolder()
    doc = repo.createDocument(
        "report.txt", parentFolder=root, contentFile=io.BytesIO(b"first"), contentType="text/plain"
    )
    pwc = doc.checkout()
    new_version = pwc.checkin(
        checkinComment="second upload", contentFile=io.BytesIO(b"second"), contentType="text/plain"
    )
    versions = list(new_version.getAllVersions())
    labels = [v.getProperties()["cmis:versionLabel"] for v in versions]
    contents = {v.getProperties()["cmis:versionLabel"]: v.getContentStream().read() for v in versions}
    comment = new_version.getProperties()["cmis:checkinComment"]
    new_version.delete(allVersions="true")
    children_after = [c.getName() for c in root.getChildren()]
    return {
        "listed": listed,
        "labels": labels,
        "contents": contents,
        "comment": comment,
        "children_after": children_after,
    }


async def test_cmislib_runs_a_document_lifecycle_against_the_emulator(emulator: RunningEmulator) -> None:
    token, repo_id = await _token_and_repository(emulator)

    result = await asyncio.to_thread(_document_lifecycle, emulator.base_url, token, repo_id)

    assert result["listed"] == [repo_id]
    assert result["labels"] == ["2.0", "1.0"]
    assert result["contents"] == {"1.0": b"first", "2.0": b"second"}
    assert result["comment"] == "second upload"
    assert result["children_after"] == []
