"""Message contracts: CloudEvents 1.0 (structured JSON mode) for commands and result events.

The JSON Schema files and the AsyncAPI document in ``contracts/`` are generated from these models
(``python -m worker contracts --write``); a test fails when they drift apart.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Annotated, Any, Final, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, PrivateAttr, model_validator

CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json"

UPLOAD: Final = "dms.upload"
DELETE: Final = "dms.delete"
COMMAND_TYPES = (UPLOAD, DELETE)
UPLOAD_SUCCEEDED: Final = "dms.upload.succeeded"
UPLOAD_FAILED: Final = "dms.upload.failed"
DELETE_SUCCEEDED: Final = "dms.delete.succeeded"
DELETE_FAILED: Final = "dms.delete.failed"
UPLOAD_RETRYING: Final = "dms.upload.retrying"
DELETE_RETRYING: Final = "dms.delete.retrying"
TENANT_OFFBOARDED: Final = "dms.tenant.offboarded"  # from the operator's `tenant offboard`, not from a command
# What the catch-all results queue binds: every command's outcome, and the end of a tenant's offboarding.
OUTCOME_ROUTING_KEYS: Final = ("*.succeeded", "*.failed", "tenant.offboarded")

# Longer names are shortened, not refused (the worker keeps the extension); this bound only stops abuse.
MAX_FILE_NAME_CHARS: Final = 65_536

Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")]


def routing_key(event_type: str) -> str:
    """``dms.upload.succeeded`` travels with routing key ``upload.succeeded``."""
    return event_type.removeprefix("dms.")


class UploadData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant_id: uuid.UUID = Field(description="SAP Cloud ALM tenant UUID; the repository's externalId")
    document_id: uuid.UUID = Field(description="Technical document UUID; becomes cmis:name")
    file_name: str = Field(
        min_length=1,
        max_length=MAX_FILE_NAME_CHARS,
        description="Becomes cmis:contentStreamFileName, sanitised and shortened to the worker's limit",
    )
    mime_type: str = Field(min_length=3, max_length=255, description="Declared MIME type")
    content_base64: str | None = Field(default=None, description="Inline content, standard base64")
    content_url: HttpUrl | None = Field(default=None, description="Content by reference (allowlisted hosts)")
    size: int | None = Field(default=None, ge=0, description="Declared size in bytes; verified")
    sha256: Sha256Hex | None = Field(default=None, description="Declared SHA-256 (hex); verified")

    # The decoded inline content, once decoded: the base64 text (1.33x the file) is then let go.
    _decoded: bytes | None = PrivateAttr(default=None)

    def inline_content(self, decode: Callable[[str], bytes]) -> bytes | None:
        """Inline content decoded once and kept for later attempts; None for content by reference."""
        if self._decoded is None and self.content_base64 is not None:
            self._decoded = decode(self.content_base64)
            self.content_base64 = None
        return self._decoded

    @model_validator(mode="after")
    def _exactly_one_content_source(self) -> UploadData:
        if (self.content_base64 is None) == (self.content_url is None):
            raise ValueError("exactly one of content_base64 and content_url is required")
        return self


class DeleteData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant_id: uuid.UUID
    document_id: uuid.UUID


class ErrorInfo(BaseModel):
    code: str = Field(description="Stable machine-readable error code, e.g. file_too_large")
    message: str = Field(description="Human-readable explanation")


class UploadSucceededData(BaseModel):
    command_id: str
    tenant_id: uuid.UUID
    document_id: uuid.UUID
    repository_id: str
    object_id: str = Field(description="CMIS object ID of the version written")
    version_label: str = Field(description="1.0 for the first upload, then 2.0, 3.0, ...")
    version_series_id: str
    file_name: str
    size: int
    sha256: Sha256Hex
    mime_type: str
    attempts: int


class DeleteSucceededData(BaseModel):
    command_id: str
    tenant_id: uuid.UUID
    document_id: uuid.UUID
    repository_id: str | None
    existed: bool = Field(description="False when there was nothing to delete (idempotent success)")
    attempts: int


class FailedData(BaseModel):
    command_id: str
    command_type: str | None = None
    tenant_id: uuid.UUID | None = None
    document_id: uuid.UUID | None = None
    error: ErrorInfo
    retried: bool = Field(description="Whether the command was retried before this outcome")
    dead_lettered: bool = Field(default=False, description="The command now sits in the dead-letter queue")
    attempts: int


class RetryingData(BaseModel):
    """A progress notice, not an outcome: the command met a transient error and is tried again."""

    command_id: str
    command_type: str | None = None
    tenant_id: uuid.UUID | None = None
    document_id: uuid.UUID | None = None
    error: ErrorInfo
    attempt: int = Field(description="The attempt that failed (1 for the first)")
    next_attempt_in_ms: int = Field(description="The backoff before the next attempt")


class TenantOffboardedData(BaseModel):
    """The end of ``python -m worker tenant offboard --yes``: what this run deleted. A run that continues an
    interrupted one (``resumed``) counts only what it deleted itself."""

    tenant_id: uuid.UUID = Field(description="The tenant offboarded; its repository's externalId")
    repository_id: str | None = Field(
        description="The DMS repository deleted (admin API id); null when the tenant had none left"
    )
    documents_deleted: int = Field(ge=0, description="Documents this run deleted from ROOT, each with all versions")
    versions_deleted: int = Field(ge=0, description="Versions those documents had")
    resumed: bool = Field(description="An earlier run had begun (its tombstone was there): this one finished it")
    forced: bool = Field(description="Run with --force although commands for the tenant were queued or in flight")
    duration_s: float = Field(ge=0, description="How long this run took, listing and deleting")


DataT = TypeVar("DataT")


class CloudEvent(BaseModel, Generic[DataT]):
    """CloudEvents 1.0 structured-mode envelope."""

    model_config = ConfigDict(extra="allow")  # CloudEvents extension attributes

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(min_length=1)
    source: str = Field(min_length=1)
    type: str = Field(min_length=1)
    time: dt.datetime | None = None
    subject: str | None = None
    datacontenttype: str = "application/json"
    # CloudEvents distributed-tracing extension: the W3C trace context of whoever published the event.
    traceparent: str | None = Field(default=None, description="W3C traceparent (distributed-tracing extension)")
    tracestate: str | None = Field(default=None, description="W3C tracestate (distributed-tracing extension)")
    data: DataT


class UploadCommand(CloudEvent[UploadData]):
    type: Literal["dms.upload"] = UPLOAD


class DeleteCommand(CloudEvent[DeleteData]):
    type: Literal["dms.delete"] = DELETE


class UploadSucceeded(CloudEvent[UploadSucceededData]):
    type: Literal["dms.upload.succeeded"] = UPLOAD_SUCCEEDED


class DeleteSucceeded(CloudEvent[DeleteSucceededData]):
    type: Literal["dms.delete.succeeded"] = DELETE_SUCCEEDED


class CommandFailed(CloudEvent[FailedData]):
    type: Literal["dms.upload.failed", "dms.delete.failed"]


class CommandRetrying(CloudEvent[RetryingData]):
    type: Literal["dms.upload.retrying", "dms.delete.retrying"]


class TenantOffboarded(CloudEvent[TenantOffboardedData]):
    type: Literal["dms.tenant.offboarded"] = TENANT_OFFBOARDED


Command = UploadCommand | DeleteCommand

SCHEMA_MODELS: dict[str, type[BaseModel]] = {
    "upload-command": UploadCommand,
    "delete-command": DeleteCommand,
    "upload-succeeded": UploadSucceeded,
    "delete-succeeded": DeleteSucceeded,
    "command-failed": CommandFailed,
    "command-retrying": CommandRetrying,
    "tenant-offboarded": TenantOffboarded,
}


def json_schemas() -> dict[str, dict[str, Any]]:
    return {name: model.model_json_schema() for name, model in SCHEMA_MODELS.items()}
