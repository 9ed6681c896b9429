"""Pure mapping from a DMS HTTP error answer to the worker's typed errors (decides retry vs. fail)."""

from __future__ import annotations

import re
from typing import Any

from worker.errors import (
    DmsRejected,
    DmsUnavailable,
    DocumentLocked,
    FileTooLarge,
    NameConflict,
    RateLimited,
    VersionLimitReached,
    VirusDetected,
    WorkerError,
)

VIRUS_MARKER = "virus found"
_EXISTING_ID = re.compile(r"with Id (?P<id>[^\s,;]+)")


def parse_retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # HTTP-date form: fall back to our own backoff


def error_for(operation: str, status: int, body: Any, retry_after: str | None = None) -> WorkerError:
    """The error a failed DMS call stands for. ``body`` is the parsed JSON (or text) of the answer."""
    exception = body.get("exception") if isinstance(body, dict) else None
    message = str(body.get("message", "")) if isinstance(body, dict) else str(body or "")[:500]
    summary = (
        f"DMS {operation} answered {status}"
        + (f" {exception}" if exception else "")
        + (f": {message}" if message else "")
    )
    if status in {408, 429}:
        return RateLimited(summary, retry_after=parse_retry_after(retry_after))
    if status >= 500:
        return DmsUnavailable(summary, retry_after=parse_retry_after(retry_after))
    if status == 413:
        return FileTooLarge(summary)
    if status == 409:
        if VIRUS_MARKER in message.lower():
            return VirusDetected("DMS virus scan refused the file: " + message)
        if exception == "nameConstraintViolation":
            match = _EXISTING_ID.search(message)
            return NameConflict(summary, match.group("id") if match else None)
        if operation == "checkOut" and exception in {"updateConflict", "versioning", "constraint"}:
            return DocumentLocked(summary)
        if "maximum number of versions" in message.lower():
            return VersionLimitReached(summary, status, exception)
    return DmsRejected(summary, status, exception)
