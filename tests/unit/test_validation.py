from __future__ import annotations

import hashlib
import io
import zipfile

import pytest

from worker import validation
from worker.errors import FileTooLarge, IntegrityMismatch, InvalidCommand, UnsupportedFileType
from worker.settings import DEFAULT_EXTENSIONS, DEFAULT_MIME_TYPES

PDF = b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
EXE = b"MZ\x90\x00\x03\x00\x00\x00" + b"\x00" * 64
ELF = b"\x7fELF\x02\x01\x01" + b"\x00" * 64


def docx_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", "<document/>")
    return buffer.getvalue()


def check(name: str, mime: str, content: bytes) -> None:
    validation.check_file_type(name, mime, content, DEFAULT_EXTENSIONS, DEFAULT_MIME_TYPES)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd.txt", "passwd.txt"),
        ("C:\\Users\\me\\plan.xlsx", "plan.xlsx"),
        ("bad\x00name\x1f.txt", "badname.txt"),
        ("  spaced .txt  ", "spaced .txt"),
        ("what?<>|*.docx", "what.docx"),
        ("Überblick – Plan.pdf", "Überblick – Plan.pdf"),
        ("rtl\u202etxt.exe", "rtltxt.exe"),
    ],
)
def test_file_names_lose_paths_and_control_characters(raw: str, expected: str) -> None:
    assert validation.sanitise_file_name(raw, 255) == expected


def test_long_file_names_are_cut_keeping_the_extension() -> None:
    name = validation.sanitise_file_name("a" * 400 + ".pdf", 100)
    assert len(name) == 100 and name.endswith(".pdf")


@pytest.mark.parametrize("raw", ["", "   ", "../", "\x00\x01", "..."])
def test_file_names_without_usable_characters_are_refused(raw: str) -> None:
    with pytest.raises(InvalidCommand):
        validation.sanitise_file_name(raw, 255)


def test_size_limit_is_inclusive() -> None:
    validation.check_size(10, 10, None)
    with pytest.raises(FileTooLarge):
        validation.check_size(11, 10, None)


def test_declared_size_must_match() -> None:
    with pytest.raises(IntegrityMismatch):
        validation.check_size(5, 10, 6)


def test_sha256_is_returned_and_checked_case_insensitively() -> None:
    digest = hashlib.sha256(b"abc").hexdigest()
    assert validation.check_sha256(b"abc", digest.upper()) == digest
    with pytest.raises(IntegrityMismatch):
        validation.check_sha256(b"abd", digest)


@pytest.mark.parametrize(
    ("name", "mime", "content"),
    [
        ("a.pdf", "application/pdf", PDF),
        ("a.png", "image/png", PNG),
        ("a.txt", "text/plain; charset=utf-8", b"hello"),
        ("a.csv", "text/csv", b"a,b\n1,2\n"),
        ("a.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document", docx_bytes()),
        ("a.zip", "application/zip", docx_bytes()),
        ("A.PDF", "Application/PDF", PDF),
    ],
)
def test_business_documents_pass(name: str, mime: str, content: bytes) -> None:
    check(name, validation.normalise_mime(mime), content)


@pytest.mark.parametrize(
    ("name", "mime", "content", "reason"),
    [
        ("setup.exe", "application/octet-stream", EXE, "extension"),
        ("a.pdf", "application/x-msdownload", PDF, "MIME"),
        ("invoice.pdf", "application/pdf", EXE, "executable"),
        ("notes.txt", "text/plain", ELF, "executable"),
        ("photo.png", "image/png", PDF, "looks like pdf"),
        ("a.pdf", "application/pdf", b"just text", "unknown data"),
        ("noext", "text/plain", b"x", "extension"),
    ],
)
def test_wrong_or_disguised_types_are_refused(name: str, mime: str, content: bytes, reason: str) -> None:
    with pytest.raises(UnsupportedFileType, match=reason):
        check(name, mime, content)


def test_tiny_limits_never_overflow() -> None:
    assert validation.sanitise_file_name("0.0", 1) == "0"
    assert validation.sanitise_file_name("report.pdf", 5) == "r.pdf"
