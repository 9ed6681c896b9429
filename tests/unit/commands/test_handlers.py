"""Handlers against a small in-memory fake of the DMS client (no sockets)."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

from worker.commands.delivery import Delivery
from worker.commands.handlers import Handlers
from worker.commands.known_documents import command_marker
from worker.dms.protocol import DmsApi, DocumentVersion, RepositoryRef
from worker.dms.repositories import TenantRepositories
from worker.errors import DmsRejected, DmsUnavailable, DocumentLocked, FileTooLarge, NameConflict, UnknownTenant
from worker.producer import delete_command, upload_command
from worker.settings import CommandSettings

TENANT = uuid.uuid4()


@dataclass
class FakeDestination:
    url: str = "https://fake-dms/"


@dataclass
class FakeDms:
    destination: FakeDestination = field(default_factory=FakeDestination)
    calls: list[str] = field(default_factory=list)
    repos: list[RepositoryRef] = field(default_factory=list)
    docs: dict[str, list[DocumentVersion]] = field(default_factory=dict)
    fail_check_in: Exception | None = None
    cancelled: list[str] = field(default_factory=list)

    async def list_repositories(self) -> list[RepositoryRef]:
        self.calls.append("listRepositories")
        return list(self.repos)

    async def create_repository(self, spec: dict[str, Any]) -> RepositoryRef:
        self.calls.append("createRepository")
        repo = RepositoryRef(id=f"repo-{len(self.repos)}", root_folder_id="root", external_id=spec["externalId"])
        self.repos.append(repo)
        return repo

    def _version(
        self, name: str, label: str, file_name: str, comment: str | None, description: str | None
    ) -> DocumentVersion:
        return DocumentVersion(
            f"{name}-{label}", label, f"series-{name}", file_name, 1, "text/plain", comment, None, description
        )

    async def create_document(self, repo, name, file_name, mime, content, description=None) -> DocumentVersion:
        self.calls.append("createDocument")
        if name in self.docs:
            raise NameConflict("exists", self.docs[name][-1].object_id)
        self.docs[name] = [self._version(name, "1.0", file_name, None, description)]
        return self.docs[name][-1]

    async def check_out(self, repo, object_id: str) -> str:
        self.calls.append("checkOut")
        if all(v.object_id != object_id for v in self.docs.get(object_id.rsplit("-", 1)[0], [])):
            raise DmsRejected(f"DMS checkOut answered 404 objectNotFound: {object_id}", 404, "objectNotFound")
        return object_id + "-pwc"

    async def check_in(self, repo, pwc_id, file_name, mime, content, comment, description=None) -> DocumentVersion:
        self.calls.append("checkIn")
        if self.fail_check_in:
            raise self.fail_check_in
        name = pwc_id.rsplit("-", 2)[0]
        label = f"{len(self.docs[name]) + 1}.0"
        self.docs[name].append(self._version(name, label, file_name, comment, description))
        return self.docs[name][-1]

    async def cancel_check_out(self, repo, pwc_id) -> None:
        self.calls.append("cancelCheckOut")
        self.cancelled.append(pwc_id)

    async def find_by_name(self, repo, name) -> DocumentVersion | None:
        self.calls.append("getObjectByPath")
        return self.docs[name][-1] if name in self.docs else None

    async def versions_by_name(self, repo, name) -> list[DocumentVersion] | None:
        self.calls.append("getAllVersions")
        return list(reversed(self.docs[name])) if name in self.docs else None

    async def delete(self, repo, object_id) -> bool:
        self.calls.append("delete")
        return self.docs.pop(object_id.rsplit("-", 1)[0], None) is not None


class FakeClients:
    def __init__(self, dms: FakeDms, tenants: set[uuid.UUID]) -> None:
        self.dms, self.tenants = dms, tenants

    def for_tenant(self, tenant_id: uuid.UUID) -> DmsApi:  # mypy checks the fake against the protocol
        if tenant_id not in self.tenants:
            raise UnknownTenant(str(tenant_id))
        return self.dms


@pytest.fixture
def dms() -> FakeDms:
    return FakeDms()


@pytest.fixture
def handlers(dms: FakeDms) -> Handlers:
    return Handlers(CommandSettings(max_file_size=1024), FakeClients(dms, {TENANT}), TenantRepositories(), http=None)  # type: ignore[arg-type]


SOURCE = "urn:test:producer"


def delivery(command_id: str = "cmd-1", attempt: int = 1, redelivered: bool = False) -> Delivery:
    return Delivery(command_id, attempt, redelivered, SOURCE, shard=3)


def fresh(handlers: Handlers) -> Handlers:
    """The same DMS seen by a replica that knows nothing yet (another replica, or after a restart)."""
    handlers.forget_everything()
    return handlers


async def test_first_upload_creates_the_repository_once_and_version_one(handlers: Handlers, dms: FakeDms) -> None:
    doc = uuid.uuid4()
    result = await handlers.handle_upload(upload_command(TENANT, doc, "a.txt", "text/plain", b"one"), delivery())
    assert (result.version_label, result.object_id, result.file_name) == ("1.0", f"{doc}-1.0", "a.txt")
    assert dms.calls == ["listRepositories", "createRepository", "createDocument"]


async def test_later_uploads_take_two_dms_calls_once_the_document_is_known(handlers: Handlers, dms: FakeDms) -> None:
    doc = uuid.uuid4()
    first = await handlers.handle_upload(upload_command(TENANT, doc, "a.txt", "text/plain", b"one"), delivery("c1"))
    dms.calls.clear()
    second = await handlers.handle_upload(upload_command(TENANT, doc, "a.txt", "text/plain", b"two"), delivery("c2"))
    third = await handlers.handle_upload(upload_command(TENANT, doc, "b.txt", "text/plain", b"3"), delivery("c3"))
    assert (first.version_label, second.version_label, third.version_label) == ("1.0", "2.0", "3.0")
    assert dms.calls == ["checkOut", "checkIn"] * 2
    versions = dms.docs[str(doc)]
    assert versions[0].description == command_marker(SOURCE, "c1")  # the first version is marked too
    assert versions[-1].description == versions[-1].checkin_comment == command_marker(SOURCE, "c3")


async def test_a_replica_that_does_not_know_the_document_looks_it_up_once(handlers: Handlers, dms: FakeDms) -> None:
    doc = uuid.uuid4()
    await handlers.handle_upload(upload_command(TENANT, doc, "a.txt", "text/plain", b"one"), delivery("c1"))
    dms.calls.clear()
    await fresh(handlers).handle_upload(upload_command(TENANT, doc, "a.txt", "text/plain", b"two"), delivery("c2"))
    assert dms.calls == ["createDocument", "getAllVersions", "checkOut", "checkIn"]
    dms.calls.clear()
    big = b"x" * 300 * 1024
    handlers._settings = handlers._settings.model_copy(update={"max_file_size": len(big)})
    await fresh(handlers).handle_upload(upload_command(TENANT, doc, "a.txt", "text/plain", big), delivery("c3"))
    assert dms.calls == ["getAllVersions", "checkOut", "checkIn"]  # a large file's content is sent once


async def test_a_redelivered_command_returns_its_earlier_version_instead_of_writing_again(
    handlers: Handlers, dms: FakeDms
) -> None:
    doc = uuid.uuid4()
    await handlers.handle_upload(upload_command(TENANT, doc, "a.txt", "text/plain", b"one"), delivery("c1"))
    first = await handlers.handle_upload(upload_command(TENANT, doc, "a.txt", "text/plain", b"2"), delivery("c2"))
    again = await handlers.handle_upload(
        upload_command(TENANT, doc, "a.txt", "text/plain", b"2"), delivery("c2", redelivered=True)
    )
    assert again.object_id == first.object_id and again.version_label == "2.0"
    assert len(dms.docs[str(doc)]) == 2


async def test_a_duplicate_arriving_after_a_later_command_finds_its_own_version(
    handlers: Handlers, dms: FakeDms
) -> None:
    doc = uuid.uuid4()
    await handlers.handle_upload(upload_command(TENANT, doc, "a.txt", "text/plain", b"1"), delivery("c1"))
    mine = await handlers.handle_upload(upload_command(TENANT, doc, "a.txt", "text/plain", b"2"), delivery("c2"))
    await handlers.handle_upload(upload_command(TENANT, doc, "a.txt", "text/plain", b"3"), delivery("c3"))
    again = await handlers.handle_upload(
        upload_command(TENANT, doc, "a.txt", "text/plain", b"2"), delivery("c2", redelivered=True)
    )
    assert (again.object_id, again.version_label) == (mine.object_id, "2.0")
    assert len(dms.docs[str(doc)]) == 3


async def test_a_republished_command_reports_its_version_and_writes_nothing(handlers: Handlers, dms: FakeDms) -> None:
    """A producer that publishes the same CloudEvent again (not a redelivery: a new message)."""
    doc = uuid.uuid4()
    one = await handlers.handle_upload(upload_command(TENANT, doc, "a.txt", "text/plain", b"1"), delivery("A"))
    await handlers.handle_upload(upload_command(TENANT, doc, "a.txt", "text/plain", b"2"), delivery("B"))
    dms.calls.clear()
    again = await handlers.handle_upload(upload_command(TENANT, doc, "a.txt", "text/plain", b"1"), delivery("A"))
    assert (again.object_id, again.version_label) == (one.object_id, "1.0") and dms.calls == []
    again = await fresh(handlers).handle_upload(upload_command(TENANT, doc, "a.txt", "text/plain", b"1"), delivery("A"))
    assert (again.object_id, again.version_label) == (one.object_id, "1.0")
    assert [v.version_label for v in dms.docs[str(doc)]] == ["1.0", "2.0"]


async def test_a_republished_upload_after_a_delete_does_not_bring_the_document_back(
    handlers: Handlers, dms: FakeDms
) -> None:
    doc = uuid.uuid4()
    one = await handlers.handle_upload(upload_command(TENANT, doc, "a.txt", "text/plain", b"1"), delivery("A"))
    await handlers.handle_delete(delete_command(TENANT, doc), delivery("D"))
    again = await handlers.handle_upload(upload_command(TENANT, doc, "a.txt", "text/plain", b"1"), delivery("A"))
    assert again.object_id == one.object_id and str(doc) not in dms.docs
    deleted_again = await handlers.handle_delete(delete_command(TENANT, doc), delivery("D"))
    assert deleted_again.existed is True  # the same answer as the first time
    await handlers.handle_upload(upload_command(TENANT, doc, "a.txt", "text/plain", b"new"), delivery("C"))
    await handlers.handle_delete(delete_command(TENANT, doc), delivery("D"))  # republished: must not delete C
    assert [v.version_label for v in dms.docs[str(doc)]] == ["1.0"]


async def test_failed_check_in_cancels_the_checkout(handlers: Handlers, dms: FakeDms) -> None:
    doc = uuid.uuid4()
    await handlers.handle_upload(upload_command(TENANT, doc, "a.txt", "text/plain", b"one"), delivery("c1"))
    dms.fail_check_in = DmsUnavailable("503")
    with pytest.raises(DmsUnavailable):
        await handlers.handle_upload(upload_command(TENANT, doc, "a.txt", "text/plain", b"two"), delivery("c2"))
    assert dms.cancelled == [f"{doc}-1.0-pwc"]


async def test_validation_happens_before_any_dms_call(handlers: Handlers, dms: FakeDms) -> None:
    with pytest.raises(FileTooLarge):
        await handlers.handle_upload(
            upload_command(TENANT, uuid.uuid4(), "a.txt", "text/plain", b"x" * 2000), delivery()
        )
    assert dms.calls == []


async def test_unknown_tenant_is_refused(handlers: Handlers) -> None:
    with pytest.raises(UnknownTenant):
        await handlers.handle_upload(
            upload_command(uuid.uuid4(), uuid.uuid4(), "a.txt", "text/plain", b"x"), delivery()
        )


async def test_delete_is_idempotent_and_never_creates_a_repository(handlers: Handlers, dms: FakeDms) -> None:
    doc = uuid.uuid4()
    nothing = await handlers.handle_delete(delete_command(TENANT, doc), delivery())
    assert (nothing.existed, nothing.repository_id) == (False, None)
    assert "createRepository" not in dms.calls
    await handlers.handle_upload(upload_command(TENANT, doc, "a.txt", "text/plain", b"x"), delivery("c1"))
    assert (await handlers.handle_delete(delete_command(TENANT, doc), delivery("c2"))).existed is True
    assert (await handlers.handle_delete(delete_command(TENANT, doc), delivery("c3"))).existed is False


def test_inline_content_is_base64(handlers: Handlers) -> None:
    command = upload_command(TENANT, uuid.uuid4(), "a.txt", "text/plain", b"abc")
    assert base64.b64decode(command.data.content_base64 or "") == b"abc"


async def test_a_refused_upload_makes_no_dms_call(handlers: Handlers, dms: FakeDms) -> None:
    with pytest.raises(FileTooLarge):
        await handlers.handle_upload(
            upload_command(TENANT, uuid.uuid4(), "a.txt", "text/plain", b"x" * 2000), Delivery("c0", 1, False)
        )
    assert dms.calls == []


async def test_a_refusal_its_remembered_view_explains_is_checked_against_dms_at_once(
    handlers: Handlers, dms: FakeDms
) -> None:
    """The replica remembers version 1.0; meanwhile the document went away in DMS (someone deleted it, or a
    delete's answer was lost). checkOut answers 404: not a permanent failure on a stale view, but a fresh look
    (the document is gone) and a first version written in the same attempt."""
    doc = uuid.uuid4()
    await handlers.handle_upload(upload_command(TENANT, doc, "a.txt", "text/plain", b"one"), delivery("c1"))
    del dms.docs[str(doc)]
    dms.calls.clear()
    result = await handlers.handle_upload(upload_command(TENANT, doc, "a.txt", "text/plain", b"two"), delivery("c2"))
    assert result.version_label == "1.0"
    assert dms.calls == ["checkOut", "getAllVersions", "createDocument"]


async def test_a_404_on_a_view_just_read_from_dms_is_retried_not_failed(handlers: Handlers, dms: FakeDms) -> None:
    doc = uuid.uuid4()
    await handlers.handle_upload(upload_command(TENANT, doc, "a.txt", "text/plain", b"one"), delivery("c1"))
    real = dms.versions_by_name

    async def deleted_right_after_the_look(repo, name):  # the document goes between the look and the checkOut
        found = await real(repo, name)
        dms.docs.pop(name, None)
        return found

    dms.versions_by_name = deleted_right_after_the_look  # type: ignore[method-assign]
    with pytest.raises(DocumentLocked):  # transient: the next attempt looks again
        await fresh(handlers).handle_upload(upload_command(TENANT, doc, "a.txt", "text/plain", b"two"), delivery("c2"))
