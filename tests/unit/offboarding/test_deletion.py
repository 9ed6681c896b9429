"""Emptying ROOT against an in-memory DMS: every document with its versions, page after page, whatever the
deletions do to the pages; transient failures retried, refusals passed over and named, folders left alone."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from worker.errors import DmsUnavailable, RateLimited
from worker.offboarding.deletion import Pace, count, empty

from .fakes import FakeDms, FakeProgress, document, ours, refusal

TENANT, OTHER = uuid.uuid4(), uuid.uuid4()
NO_WAIT = (0, 0, 0)


@pytest.fixture
def dms() -> FakeDms:
    fake = FakeDms()
    fake.add(ours(TENANT, "mine"), *(document(f"d{n}", versions=1 + n % 3) for n in range(25)))
    fake.add(ours(OTHER, "theirs"), document("keep", versions=2))
    return fake


async def test_every_document_goes_page_after_page_and_only_from_this_repository(dms: FakeDms) -> None:
    progress = FakeProgress()
    tally = await empty(dms, ours(TENANT, "mine"), progress, page_size=4, batch=10, concurrency=3)
    assert (tally.documents, tally.versions, tally.refused, tally.others) == (25, 9 * 1 + 8 * 2 + 8 * 3, {}, 0)
    assert dms.roots["mine"] == [] and [d.object_id for d in dms.roots["theirs"]] == ["keep-v2"]
    assert progress.stages == [("deleting", 25)] and progress.advanced == 25
    assert not any("keep" in call for call in dms.calls)


async def test_the_dry_count_reads_pages_and_changes_nothing(dms: FakeDms) -> None:
    tally = await count(dms, ours(TENANT, "mine"), 7, FakeProgress())
    assert (tally.documents, tally.versions) == (25, 49)
    assert len(dms.roots["mine"]) == 25 and not any(c.startswith("delete") for c in dms.calls)


async def test_versions_are_listed_only_when_the_label_does_not_tell(dms: FakeDms) -> None:
    repo = ours(TENANT, "odd")
    dms.add(repo, document("minor", label="1.2"), document("plain", versions=4))
    dms.history["minor-v1"] = 3
    tally = await empty(dms, repo, FakeProgress())
    assert tally.versions == 3 + 4
    assert [c for c in dms.calls if c.startswith("getAllVersions")] == ["getAllVersions minor-v1"]


async def test_a_transient_failure_is_retried_and_a_refusal_is_passed_over_and_named(dms: FakeDms) -> None:
    repo = ours(TENANT, "mine")
    dms.fail["d3-v1"] = [DmsUnavailable("503"), RateLimited("429", retry_after=0)]
    dms.fail["d5-v3"] = [refusal("d5-v3")] * 5
    tally = await empty(dms, repo, FakeProgress(), page_size=4, retry_delays_ms=NO_WAIT)
    assert tally.documents == 24 and set(tally.refused) == {"d5-v3"}
    assert "legal hold" in tally.refused["d5-v3"] and [d.object_id for d in dms.roots["mine"]] == ["d5-v3"]
    assert dms.calls.count("delete d3-v1") == 3 and dms.calls.count("delete d5-v3") == 1


async def test_retries_that_run_out_stop_the_run_and_a_second_run_continues(dms: FakeDms) -> None:
    repo = ours(TENANT, "mine")
    dms.fail["d10-v2"] = [DmsUnavailable("503")] * 4
    with pytest.raises(DmsUnavailable):
        await empty(dms, repo, FakeProgress(), page_size=5, concurrency=1, retry_delays_ms=NO_WAIT)
    assert 0 < len(dms.roots["mine"]) < 25
    tally = await empty(dms, repo, FakeProgress(), page_size=5, retry_delays_ms=NO_WAIT)
    assert dms.roots["mine"] == [] and tally.documents < 25


async def test_a_checked_out_document_has_its_working_copy_cancelled_first(dms: FakeDms) -> None:
    repo = ours(TENANT, "locked")
    dms.add(repo, document("held", versions=2, checked_out=True))
    await empty(dms, repo, FakeProgress())
    cancel = dms.calls.index("cancelCheckOut held-pwc")
    assert dms.calls[cancel + 1] == "delete held-v2" and dms.roots["locked"] == []


async def test_folders_are_left_and_counted(dms: FakeDms) -> None:
    repo = ours(TENANT, "mine")
    dms.folders["mine"] = 2
    tally = await empty(dms, repo, FakeProgress(), page_size=4)
    assert (tally.documents, tally.others) == (25, 2)


async def test_a_document_dms_keeps_listing_after_its_delete_does_not_loop(dms: FakeDms) -> None:
    repo = ours(TENANT, "ghost")
    dms.add(repo, document("ghost"))

    async def lying_delete(repo, object_id: str) -> bool:
        return True

    dms.delete = lying_delete  # type: ignore[method-assign]
    tally = await asyncio.wait_for(empty(dms, repo, FakeProgress()), 5)
    assert tally.refused == {"ghost-v1": "still listed after it was deleted"}


async def test_the_pace_spaces_deletions_out() -> None:
    pace = Pace(20.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(5):
        await pace.turn()
    assert 0.19 <= loop.time() - started < 0.5  # the first at once, then one per 50 ms
