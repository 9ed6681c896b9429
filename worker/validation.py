"""Pure checks run before any DMS call: file name, size, integrity and file type (declared and sniffed)."""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Collection

import filetype

from worker.errors import FileTooLarge, IntegrityMismatch, InvalidCommand, UnsupportedFileType

# Sniffed kinds that are never business documents, whatever the file is called.
EXECUTABLE_KINDS = {"exe", "elf", "dex", "dcm", "macho", "class", "swf", "crx", "deb", "rpm", "nes", "wasm"}
ZIP_CONTAINER_KINDS = {"zip", "docx", "xlsx", "pptx", "odt", "ods", "odp", "epub"}
# Extension -> the sniffed kinds its content may have. Extensions not listed here are text-like or
# formats the sniffer does not know (e.g. legacy OLE .doc/.xls): they pass if nothing dangerous is found.
EXPECTED_KINDS: dict[str, set[str]] = {
    "pdf": {"pdf"},
    "png": {"png"},
    "jpg": {"jpg"},
    "jpeg": {"jpg"},
    "gif": {"gif"},
    "bmp": {"bmp"},
    "tif": {"tif"},
    "tiff": {"tif"},
    "zip": ZIP_CONTAINER_KINDS,
    "docx": ZIP_CONTAINER_KINDS,
    "xlsx": ZIP_CONTAINER_KINDS,
    "pptx": ZIP_CONTAINER_KINDS,
    "vsdx": ZIP_CONTAINER_KINDS,
    "odt": ZIP_CONTAINER_KINDS,
    "ods": ZIP_CONTAINER_KINDS,
    "odp": ZIP_CONTAINER_KINDS,
}
_FORBIDDEN_NAME_CHARS = set('<>:"|?*')


def sanitise_file_name(name: str, max_length: int) -> str:
    """The file name to store: no path parts, no control or reserved characters, at most ``max_length``."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(
        ch for ch in base if unicodedata.category(ch) not in {"Cc", "Cf"} and ch not in _FORBIDDEN_NAME_CHARS
    ).strip(" .")
    if not cleaned:
        raise InvalidCommand(f"file name {name[:80]!r} has no usable characters")
    if len(cleaned) <= max_length:
        return cleaned
    stem, dot, ext = cleaned.rpartition(".")
    room = max_length - len(ext) - 1
    if dot and 0 < len(ext) < 16 and room >= 1:
        return stem[:room] + "." + ext
    return cleaned[:max_length]


def extension_of(file_name: str) -> str:
    _, dot, ext = file_name.rpartition(".")
    return ext.lower() if dot else ""


def check_size(actual: int, maximum: int, declared: int | None) -> None:
    if actual > maximum:
        raise FileTooLarge(f"file is {actual} bytes; the limit is {maximum} bytes")
    if declared is not None and declared != actual:
        raise IntegrityMismatch(f"declared size {declared} does not match the content's {actual} bytes")


def check_sha256(content: bytes, declared: str | None) -> str:
    actual = hashlib.sha256(content).hexdigest()
    if declared is not None and declared.lower() != actual:
        raise IntegrityMismatch("declared sha256 does not match the content")
    return actual


def normalise_mime(mime_type: str) -> str:
    return mime_type.split(";", 1)[0].strip().lower()


def check_file_type(
    file_name: str,
    declared_mime: str,
    content: bytes,
    allowed_extensions: Collection[str],
    allowed_mime_types: Collection[str],
) -> None:
    ext = extension_of(file_name)
    if ext not in {e.lower() for e in allowed_extensions}:
        raise UnsupportedFileType(f"file extension {ext or '(none)'!r} is not allowed")
    mime = normalise_mime(declared_mime)
    if mime not in {m.lower() for m in allowed_mime_types}:
        raise UnsupportedFileType(f"MIME type {mime!r} is not allowed")
    sniffed = sniff_kind(content)
    if sniffed in EXECUTABLE_KINDS:
        raise UnsupportedFileType(f"content is an executable ({sniffed}), not a {ext} document")
    expected = EXPECTED_KINDS.get(ext)
    if expected is not None and sniffed not in expected:
        raise UnsupportedFileType(f"content looks like {sniffed or 'unknown data'}, not a {ext} file")


def sniff_kind(content: bytes) -> str | None:
    """The content's real type from its leading bytes (``None`` when unknown, e.g. plain text)."""
    head = content[:8192]
    if head.startswith(b"MZ"):
        return "exe"
    if head.startswith(b"\xcf\xfa\xed\xfe") or head.startswith(b"\xfe\xed\xfa\xcf"):
        return "macho"
    kind = filetype.guess(head)
    return None if kind is None else str(kind.extension)
