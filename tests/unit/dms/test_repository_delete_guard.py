"""``DELETE rest/v2/repositories`` without an id deletes every repository of the DMS instance (SAP's guide):
the client refuses any id that is empty or could change the path before it sends anything."""

from __future__ import annotations

import pytest

from worker.dms.client import DmsClient


@pytest.mark.parametrize("repository_id", ["", "  ", "a/b", "../x", "x?y=1", "x#y", "%2F", "a\\b"])
async def test_no_request_is_made_for_an_id_that_is_not_one(repository_id: str) -> None:
    client = DmsClient(session=None, credentials=None)  # type: ignore[arg-type]  # neither may be touched
    with pytest.raises(ValueError, match="refusing to delete a repository"):
        await client.delete_repository(repository_id)
