"""The worker's error tree: permanent errors fail a command at once, transient ones are retried.

Every error carries a stable machine-readable ``code`` (used in result events, metrics and dead-letter
headers) and a human message. Messages never include secrets or tokens. ``worker.results.policy`` turns
the split into ack / retry / dead-letter, in that one place.

* WorkerError                     internal_error
  + PermanentError                permanent_error        failed event, ack, no retry
  | + InvalidCommand              invalid_command
  | + UnknownTenant               unknown_tenant         the one exception: to the DLQ (at once), to replay later
  | + FileTooLarge                file_too_large
  | + UnsupportedFileType         unsupported_file_type
  | + IntegrityMismatch           integrity_mismatch
  | + ContentUnavailable          content_unavailable
  | + VirusDetected               virus_detected
  | + DmsRejected                 dms_rejected           DMS 4xx (``worker.dms.http_errors`` maps them)
  |   + NameConflict              name_conflict
  |   + VersionLimitReached       version_limit_reached
  + TransientError                transient_error        retried in place; the DLQ when attempts run out
    + DmsUnavailable              dms_unavailable
    + RateLimited                 rate_limited
    + TokenRejected               token_rejected
    + DocumentLocked              document_locked
    + ContentFetchFailed          content_fetch_failed
    + InternalError               internal_error         any unexpected exception (a bug)
"""

from __future__ import annotations

import asyncio


class WorkerError(Exception):
    """Base of every error the worker reports in a result event."""

    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class PermanentError(WorkerError):
    """Retrying cannot help: bad input or a refusal by DMS. The command fails with no retry."""

    code = "permanent_error"


class TransientError(WorkerError):
    """The same command may succeed later: network, DMS 5xx/429, token trouble, broker loss.

    ``retry_sooner``: an event that ends the retry backoff early when set (DMS answering again after an
    outage, see ``worker.dms.reachability``)."""

    code = "transient_error"

    def __init__(
        self, message: str, retry_after: float | None = None, retry_sooner: asyncio.Event | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.retry_sooner = retry_sooner


# -- permanent -------------------------------------------------------------------------------------


class InvalidCommand(PermanentError):
    code = "invalid_command"


class UnknownTenant(PermanentError):
    """No destination can be resolved for the tenant. Not retried, but dead-lettered rather than acked away:
    a missing Secret, binding or BTP destination is fixed by configuration, and then the DLQ is replayed."""

    code = "unknown_tenant"


class FileTooLarge(PermanentError):
    code = "file_too_large"


class UnsupportedFileType(PermanentError):
    code = "unsupported_file_type"


class IntegrityMismatch(PermanentError):
    """The content does not match the declared size or sha256."""

    code = "integrity_mismatch"


class ContentUnavailable(PermanentError):
    """``content_url`` was refused (not allowlisted) or answered with a client error."""

    code = "content_unavailable"


class VirusDetected(PermanentError):
    code = "virus_detected"


class DmsRejected(PermanentError):
    """DMS refused the request for a reason retrying will not change (4xx)."""

    code = "dms_rejected"

    def __init__(self, message: str, status: int, exception: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.exception = exception


class NameConflict(DmsRejected):
    """A document with this cmis:name already exists in the folder (409 nameConstraintViolation)."""

    code = "name_conflict"

    def __init__(self, message: str, existing_object_id: str | None) -> None:
        super().__init__(message, 409, "nameConstraintViolation")
        self.existing_object_id = existing_object_id


class VersionLimitReached(DmsRejected):
    code = "version_limit_reached"


# -- transient -------------------------------------------------------------------------------------


class DmsUnavailable(TransientError):
    """Network failure, timeout or 5xx from DMS."""

    code = "dms_unavailable"


class RateLimited(TransientError):
    code = "rate_limited"


class TokenRejected(TransientError):
    """The token service refused us, or DMS kept answering 401 after a fresh token."""

    code = "token_rejected"


class DocumentLocked(TransientError):
    """The document is checked out by someone else (409 on checkOut)."""

    code = "document_locked"


class ContentFetchFailed(TransientError):
    """``content_url`` could not be reached or answered 5xx."""

    code = "content_fetch_failed"


class InternalError(TransientError):
    """An unexpected exception (a bug): retried like a transient fault so it ends in the DLQ, not lost."""

    code = "internal_error"
