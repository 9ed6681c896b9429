"""The emulator's domain state: tenants' repositories, version series, versions and their rules.

Plain synchronous code with no HTTP in it; every rule DMS enforces (unique names, one private working
copy, major/minor labels, version cap, virus scan, size cap) lives here and raises ``CmisFault``.
"""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from worker.testing.emulator.content import ContentStore, Upload

EICAR_SIGNATURE = b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!"
VIRUS_MESSAGE = "Malware Service Exception: Virus found in the file!"
MAX_VERSIONS = 500
PWC_LABEL = "pwc"

# CMIS 1.1 section 5.2.10: exception name -> HTTP status.
CMIS_STATUS = {
    "invalidArgument": 400,
    "filterNotValid": 400,
    "permissionDenied": 403,
    "streamNotSupported": 403,
    "objectNotFound": 404,
    "notSupported": 405,
    "constraint": 409,
    "contentAlreadyExists": 409,
    "nameConstraintViolation": 409,
    "updateConflict": 409,
    "versioning": 409,
    "runtime": 500,
    "storage": 500,
}


class CmisFault(Exception):
    """A CMIS error; the HTTP layer renders it as ``{"exception": ..., "message": ...}``."""

    def __init__(self, exception: str, message: str) -> None:
        super().__init__(message)
        self.exception = exception
        self.message = message
        self.status = CMIS_STATUS[exception]


class AdminFault(Exception):
    """An admin REST API error, rendered as ``{"message": ...}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _upload(content: bytes | Upload) -> Upload:
    return Upload.of(content) if isinstance(content, bytes) else content


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Version:
    object_id: str
    label: str
    is_major: bool
    content_id: str
    length: int
    mime_type: str
    file_name: str
    created_ms: int
    comment: str | None = None
    is_pwc: bool = False
    description: str | None = None  # cmis:description, per version


@dataclass
class VersionSeries:
    series_id: str
    name: str
    versions: list[Version] = field(default_factory=list)  # oldest first
    pwc: Version | None = None
    checked_out_by: str | None = None

    @property
    def latest(self) -> Version:
        return self.versions[-1]


@dataclass
class Repository:
    id: str
    cmis_repository_id: str
    zone: str
    external_id: str | None
    name: str
    description: str
    params: dict[str, Any]
    created_ms: int
    series_by_name: dict[str, VersionSeries] = field(default_factory=dict)
    objects: dict[str, tuple[VersionSeries, Version]] = field(default_factory=dict)
    recycle_bin: list[VersionSeries] = field(default_factory=list)

    @property
    def root_folder_id(self) -> str:
        return self.cmis_repository_id

    @property
    def versioned(self) -> bool:
        return _truthy(self.params.get("isVersionEnabled"))

    @property
    def virus_scan(self) -> bool:
        return _truthy(self.params.get("isVirusScanEnabled"))


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def next_label(series: VersionSeries, major: bool) -> str:
    """CMIS labels: a major check-in gives N+1.0, a minor one N.M+1."""
    if not series.versions:
        return "1.0" if major else "0.1"
    last_major, last_minor = (int(p) for p in series.latest.label.split("."))
    return f"{last_major + 1}.0" if major else f"{last_major}.{last_minor + 1}"


class DmsState:
    """All repositories of all zones (a zone stands for one subaccount's XSUAA tenant)."""

    def __init__(self, content: ContentStore, max_content_size: int) -> None:
        self.content = content
        self.max_content_size = max_content_size
        self.repositories: dict[str, Repository] = {}

    # -- admin API -------------------------------------------------------------------------------

    def create_repository(self, zone: str, body: dict[str, Any]) -> Repository:
        spec = body.get("repository")
        if not isinstance(spec, dict):
            raise AdminFault(400, 'Request body must be {"repository": {...}}')
        display_name = spec.get("displayName")
        if not display_name or not spec.get("repositoryType"):
            raise AdminFault(400, "displayName and repositoryType are mandatory")
        if len(str(display_name)) > 100:
            raise AdminFault(400, "displayName must not exceed 100 characters")
        external_id = spec.get("externalId")
        if external_id is not None:
            for repo in self.zone_repositories(zone):
                if repo.external_id == external_id:
                    raise AdminFault(409, f"Repository with externalId {external_id} already exists")
        params = {k: v for k, v in spec.items() if k not in {"displayName", "description", "externalId"}}
        repo = Repository(
            id=str(uuid.uuid4()),
            cmis_repository_id=secrets.token_hex(12),
            zone=zone,
            external_id=external_id,
            name=str(display_name),
            description=str(spec.get("description") or ""),
            params=params,
            created_ms=now_ms(),
        )
        self.repositories[repo.id] = repo
        return repo

    def zone_repositories(self, zone: str) -> list[Repository]:
        return [r for r in self.repositories.values() if r.zone == zone]

    def repository(self, zone: str, repo_id: str) -> Repository:
        repo = self.repositories.get(repo_id)
        if repo is None or repo.zone != zone:
            raise AdminFault(404, f"There is no repository with the given ID:{repo_id}")
        return repo

    def delete_repository(self, zone: str, repo_id: str) -> None:
        repo = self.repository(zone, repo_id)
        for series in repo.series_by_name.values():
            self._drop_content(series)
        del self.repositories[repo.id]

    # -- CMIS object services --------------------------------------------------------------------

    def get_object(self, repo: Repository, object_id: str) -> tuple[VersionSeries, Version]:
        found = repo.objects.get(object_id)
        if found is None:
            raise CmisFault("objectNotFound", f"Object {object_id} not found")
        return found

    def get_by_name(self, repo: Repository, name: str) -> VersionSeries:
        series = repo.series_by_name.get(name)
        if series is None:
            raise CmisFault("objectNotFound", f"Object with path /{name} not found")
        return series

    def create_document(
        self,
        repo: Repository,
        name: str,
        content: bytes | Upload,
        mime_type: str,
        file_name: str,
        versioning_state: str | None,
        description: str | None = None,
    ) -> Version:
        if not name:
            raise CmisFault("invalidArgument", "Property cmis:name is required")
        if name in repo.series_by_name:
            existing = repo.series_by_name[name].latest.object_id
            raise CmisFault(
                "nameConstraintViolation",
                f"Object with name {name} already exists in folder : Child {name} with Id {existing}",
            )
        state = (versioning_state or "major").lower()
        if repo.versioned and state == "none":
            raise CmisFault("constraint", "versioningState none is not allowed for a versionable type")
        if state not in {"none", "major", "minor", "checkedout"}:
            raise CmisFault("invalidArgument", f"Unknown versioningState {versioning_state}")
        if state == "checkedout":
            raise CmisFault("notSupported", "versioningState checkedout is not supported")
        self._check_content(repo, content)
        series = VersionSeries(series_id=secrets.token_urlsafe(16), name=name)
        major = state != "minor" or not repo.versioned
        version = self._new_version(series, next_label(series, major), major, content, mime_type, file_name)
        version.description = description
        series.versions.append(version)
        repo.series_by_name[name] = series
        repo.objects[version.object_id] = (series, version)
        return version

    def check_out(self, repo: Repository, object_id: str, user: str) -> Version:
        series, version = self.get_object(repo, object_id)
        if not repo.versioned:
            raise CmisFault("constraint", "The repository is not version-enabled")
        if version.is_pwc:
            raise CmisFault("versioning", "Object is a private working copy")
        if series.pwc is not None:
            raise CmisFault("updateConflict", f"Document {series.name} is already checked out")
        latest = series.latest
        pwc = Version(
            object_id=secrets.token_urlsafe(16),
            label=PWC_LABEL,
            is_major=False,
            content_id=latest.content_id,
            length=latest.length,
            mime_type=latest.mime_type,
            file_name=latest.file_name,
            created_ms=now_ms(),
            is_pwc=True,
        )
        series.pwc = pwc
        series.checked_out_by = user
        repo.objects[pwc.object_id] = (series, pwc)
        return pwc

    def set_content(
        self, repo: Repository, object_id: str, content: bytes | Upload, mime: str, file_name: str
    ) -> Version:
        _series, version = self.get_object(repo, object_id)
        if repo.versioned and not version.is_pwc:
            raise CmisFault("versioning", "Content can only be set on a private working copy (pwconly)")
        upload = _upload(content)
        self._check_content(repo, upload)
        version.content_id = self.content.put(upload)
        version.length, version.mime_type, version.file_name = upload.size, mime, file_name
        return version

    def check_in(
        self,
        repo: Repository,
        object_id: str,
        major: bool,
        comment: str | None,
        content: tuple[bytes | Upload, str, str] | None,
        description: str | None = None,
    ) -> Version:
        series, pwc = self.get_object(repo, object_id)
        if not pwc.is_pwc or series.pwc is not pwc:
            raise CmisFault("versioning", f"Object {object_id} is not a private working copy")
        if len(series.versions) >= MAX_VERSIONS:
            raise CmisFault("constraint", f"Maximum number of versions ({MAX_VERSIONS}) reached")
        if content is not None:
            self._check_content(repo, content[0])
            data, mime, file_name = content
            version = self._new_version(series, next_label(series, major), major, data, mime, file_name)
        else:
            version = Version(
                object_id=secrets.token_urlsafe(16),
                label=next_label(series, major),
                is_major=major,
                content_id=pwc.content_id,
                length=pwc.length,
                mime_type=pwc.mime_type,
                file_name=pwc.file_name,
                created_ms=now_ms(),
            )
        version.comment = comment
        # Properties not sent with the check-in carry over from the version checked out.
        version.description = description if description is not None else series.latest.description
        del repo.objects[pwc.object_id]
        series.pwc, series.checked_out_by = None, None
        series.versions.append(version)
        repo.objects[version.object_id] = (series, version)
        return version

    def cancel_check_out(self, repo: Repository, object_id: str) -> None:
        series, pwc = self.get_object(repo, object_id)
        if not pwc.is_pwc:
            raise CmisFault("versioning", f"Object {object_id} is not a private working copy")
        del repo.objects[pwc.object_id]
        series.pwc, series.checked_out_by = None, None

    def delete(self, repo: Repository, object_id: str, all_versions: bool) -> None:
        series, version = self.get_object(repo, object_id)
        if version.is_pwc:
            self.cancel_check_out(repo, object_id)
            return
        if all_versions or len(series.versions) == 1:
            for v in [*series.versions, *([series.pwc] if series.pwc else [])]:
                repo.objects.pop(v.object_id, None)
            del repo.series_by_name[series.name]
            repo.recycle_bin.append(series)
            return
        series.versions.remove(version)
        del repo.objects[version.object_id]

    def versions_newest_first(self, repo: Repository, object_id: str) -> list[Version]:
        series, _ = self.get_object(repo, object_id)
        newest_first = list(reversed(series.versions))
        return [series.pwc, *newest_first] if series.pwc else newest_first

    # -- internals -------------------------------------------------------------------------------

    def _check_content(self, repo: Repository, content: bytes | Upload) -> None:
        upload = _upload(content)
        if upload.size > self.max_content_size:
            raise CmisFault(
                "constraint",
                f"Content size {upload.size} exceeds the maximum allowed size {self.max_content_size}",
            )
        if repo.virus_scan and upload.contains(EICAR_SIGNATURE):
            raise CmisFault("constraint", VIRUS_MESSAGE)

    def _new_version(
        self, series: VersionSeries, label: str, major: bool, content: bytes | Upload, mime: str, file_name: str
    ) -> Version:
        upload = _upload(content)
        return Version(
            object_id=secrets.token_urlsafe(16),
            label=label,
            is_major=major,
            content_id=self.content.put(upload),
            length=upload.size,
            mime_type=mime,
            file_name=file_name,
            created_ms=now_ms(),
        )

    def _drop_content(self, series: VersionSeries) -> None:
        for v in series.versions:
            self.content.discard(v.content_id)
