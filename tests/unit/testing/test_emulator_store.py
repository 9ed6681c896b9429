"""The emulator's DMS rules, without HTTP."""

from __future__ import annotations

import pytest

from worker.testing.emulator import query
from worker.testing.emulator.content import MemoryContentStore
from worker.testing.emulator.store import (
    EICAR_SIGNATURE,
    MAX_VERSIONS,
    VIRUS_MESSAGE,
    AdminFault,
    CmisFault,
    DmsState,
    Repository,
    next_label,
)

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + EICAR_SIGNATURE + b"$H+H*"


@pytest.fixture
def state() -> DmsState:
    return DmsState(MemoryContentStore(), max_content_size=100)


@pytest.fixture
def repo(state: DmsState) -> Repository:
    spec = {
        "displayName": "r",
        "repositoryType": "internal",
        "isVersionEnabled": True,
        "isVirusScanEnabled": True,
        "externalId": "tenant-1",
    }
    return state.create_repository("zone", {"repository": spec})


def test_duplicate_external_id_in_one_zone_is_409_but_other_zones_are_separate(state: DmsState, repo) -> None:
    spec = {"repository": {"displayName": "r", "repositoryType": "internal", "externalId": "tenant-1"}}
    with pytest.raises(AdminFault) as caught:
        state.create_repository("zone", spec)
    assert caught.value.status == 409 and "tenant-1 already exists" in caught.value.message
    assert state.create_repository("other-zone", spec).zone == "other-zone"


def test_unknown_repository_is_404_with_the_documented_message(state: DmsState) -> None:
    with pytest.raises(AdminFault, match="There is no repository with the given ID:nope"):
        state.repository("zone", "nope")


def test_major_check_ins_count_up_and_keep_the_comment(state: DmsState, repo) -> None:
    v1 = state.create_document(repo, "doc", b"1", "text/plain", "a.txt", None)
    pwc = state.check_out(repo, v1.object_id, "u")
    v2 = state.check_in(repo, pwc.object_id, True, "second", (b"2", "text/plain", "b.txt"))
    assert (v1.label, v2.label, v2.comment, v2.file_name) == ("1.0", "2.0", "second", "b.txt")
    assert [v.label for v in state.versions_newest_first(repo, v1.object_id)] == ["2.0", "1.0"]


def test_minor_labels() -> None:
    from worker.testing.emulator.store import Version, VersionSeries

    series = VersionSeries("s", "n", [Version("o", "2.0", True, "c", 0, "m", "f", 0)])
    assert (next_label(series, True), next_label(series, False)) == ("3.0", "2.1")


def test_only_one_private_working_copy(state: DmsState, repo) -> None:
    v1 = state.create_document(repo, "doc", b"1", "text/plain", "a.txt", None)
    state.check_out(repo, v1.object_id, "u")
    with pytest.raises(CmisFault) as caught:
        state.check_out(repo, v1.object_id, "u")
    assert (caught.value.status, caught.value.exception) == (409, "updateConflict")


def test_cancel_check_out_allows_a_new_checkout(state: DmsState, repo) -> None:
    v1 = state.create_document(repo, "doc", b"1", "text/plain", "a.txt", None)
    pwc = state.check_out(repo, v1.object_id, "u")
    state.cancel_check_out(repo, pwc.object_id)
    assert state.check_out(repo, v1.object_id, "u").is_pwc


def test_duplicate_names_are_409_naming_the_existing_object(state: DmsState, repo) -> None:
    v1 = state.create_document(repo, "doc", b"1", "text/plain", "a.txt", None)
    with pytest.raises(CmisFault) as caught:
        state.create_document(repo, "doc", b"1", "text/plain", "a.txt", None)
    assert caught.value.exception == "nameConstraintViolation" and f"with Id {v1.object_id}" in caught.value.message


def test_virus_and_size_are_refused(state: DmsState, repo) -> None:
    with pytest.raises(CmisFault, match=VIRUS_MESSAGE.replace("!", r"\!")):
        state.create_document(repo, "v", EICAR, "text/plain", "v.txt", None)
    with pytest.raises(CmisFault, match="exceeds the maximum"):
        state.create_document(repo, "big", b"x" * 101, "text/plain", "big.txt", None)


def test_version_cap(state: DmsState, repo) -> None:
    version = state.create_document(repo, "doc", b"1", "text/plain", "a.txt", None)
    for _ in range(MAX_VERSIONS - 1):
        pwc = state.check_out(repo, version.object_id, "u")
        version = state.check_in(repo, pwc.object_id, True, None, None)
    assert version.label == f"{MAX_VERSIONS}.0"
    pwc = state.check_out(repo, version.object_id, "u")
    with pytest.raises(CmisFault, match="Maximum number of versions"):
        state.check_in(repo, pwc.object_id, True, None, None)


def test_delete_all_versions_frees_the_name(state: DmsState, repo) -> None:
    v1 = state.create_document(repo, "doc", b"1", "text/plain", "a.txt", None)
    pwc = state.check_out(repo, v1.object_id, "u")
    v2 = state.check_in(repo, pwc.object_id, True, None, None)
    state.delete(repo, v2.object_id, all_versions=True)
    with pytest.raises(CmisFault) as caught:
        state.get_object(repo, v1.object_id)
    assert caught.value.status == 404
    assert state.create_document(repo, "doc", b"1", "text/plain", "a.txt", None).label == "1.0"


def test_query_subset_parses_and_refuses_the_rest() -> None:
    parsed = query.parse("SELECT cmis:objectId FROM cmis:document WHERE cmis:name = 'it''s' AND IN_FOLDER('f1')")
    assert (parsed.columns, parsed.equals, parsed.in_folder) == (["cmis:objectId"], {"cmis:name": "it's"}, "f1")
    assert query.parse("select * from cmis:document").columns is None
    for bad in [
        "DELETE FROM x",
        "SELECT * FROM cmis:document WHERE cmis:name LIKE 'a%'",
        "SELECT * FROM cmis:document WHERE cmis:name = 'a' OR cmis:name = 'b'",
    ]:
        with pytest.raises(CmisFault):
            query.parse(bad)
