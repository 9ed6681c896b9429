from __future__ import annotations

from worker.dms.http_errors import error_for
from worker.errors import (
    DmsRejected,
    DmsUnavailable,
    DocumentLocked,
    NameConflict,
    RateLimited,
    VersionLimitReached,
    VirusDetected,
)


def test_name_conflict_carries_the_existing_object_id() -> None:
    body = {"exception": "nameConstraintViolation", "message": "exists : Child abc with Id obj-123"}
    error = error_for("createDocument", 409, body)
    assert isinstance(error, NameConflict) and error.existing_object_id == "obj-123"


def test_name_conflict_without_an_id_still_classifies() -> None:
    error = error_for("createDocument", 409, {"exception": "nameConstraintViolation", "message": "dup"})
    assert isinstance(error, NameConflict) and error.existing_object_id is None


def test_virus_message_is_permanent_virus_detected() -> None:
    body = {"exception": "constraint", "message": "Malware Service Exception: Virus found in the file!"}
    assert isinstance(error_for("createDocument", 409, body), VirusDetected)


def test_second_checkout_is_a_transient_lock() -> None:
    body = {"exception": "updateConflict", "message": "already checked out"}
    assert isinstance(error_for("checkOut", 409, body), DocumentLocked)


def test_version_cap_is_permanent() -> None:
    body = {"exception": "constraint", "message": "Maximum number of versions (500) reached"}
    assert isinstance(error_for("checkIn", 409, body), VersionLimitReached)


def test_429_and_5xx_are_transient_and_keep_retry_after() -> None:
    limited = error_for("createDocument", 429, {}, retry_after="7")
    assert isinstance(limited, RateLimited) and limited.retry_after == 7.0
    assert isinstance(error_for("createDocument", 503, "Service Unavailable"), DmsUnavailable)
    undated = error_for("x", 429, {}, retry_after="Wed, 21 Oct 2015 07:28:00 GMT")
    assert isinstance(undated, RateLimited) and undated.retry_after is None


def test_other_client_errors_are_permanent_rejections_with_the_cmis_name() -> None:
    error = error_for("createDocument", 400, {"exception": "invalidArgument", "message": "bad"})
    assert isinstance(error, DmsRejected) and error.exception == "invalidArgument" and error.status == 400
    assert "invalidArgument" in error.message
