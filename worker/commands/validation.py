"""Pure checks run before any DMS call: file name, size, integrity, file type (declared and sniffed) and
active content (SVG with script, HTML disguised as text, archives that would expand past a limit).

Content is ``bytes`` or a seekable binary file (a spool file): type sniffing reads only the first bytes, the
SVG script scan reads the file in chunks and an archive's central directory is read where it lies, so a
large upload is never held whole."""

from __future__ import annotations

import codecs
import functools
import html
import io
import re
import unicodedata
import zipfile
from collections.abc import Collection, Iterator
from typing import BinaryIO

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
    """The file name to store: no path parts, no control or reserved characters, at most ``max_length``.

    Names of any length are shortened, never refused: the stem is cut and a short extension kept."""
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
    # The cleaned name starts with neither a space nor a dot, so stripping the cut end never empties it.
    if dot and 0 < len(ext) < 16 and room >= 1:
        return stem[:room].rstrip(" .") + "." + ext
    return cleaned[:max_length].rstrip(" .")


def extension_of(file_name: str) -> str:
    _, dot, ext = file_name.rpartition(".")
    return ext.lower() if dot else ""


def check_size(actual: int, maximum: int, declared: int | None) -> None:
    if actual > maximum:
        raise FileTooLarge(f"file is {actual} bytes; the limit is {maximum} bytes")
    if declared is not None and declared != actual:
        raise IntegrityMismatch(f"declared size {declared} does not match the content's {actual} bytes")


def check_declared_sha256(actual: str, declared: str | None) -> str:
    """``actual`` (hex, computed as the content streamed) if it matches what the command declares."""
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
    if ext not in _lowered(tuple(allowed_extensions)):
        raise UnsupportedFileType(f"file extension {ext or '(none)'!r} is not allowed")
    mime = normalise_mime(declared_mime)
    if mime not in _lowered(tuple(allowed_mime_types)):
        raise UnsupportedFileType(f"MIME type {mime!r} is not allowed")
    expected = EXPECTED_KINDS.get(ext)
    if expected is None and not may_be_executable(content):
        return  # only an executable is refused here, and no executable's signature matches
    sniffed = sniff_kind(content)
    if sniffed in EXECUTABLE_KINDS:
        raise UnsupportedFileType(f"content is an executable ({sniffed}), not a {ext} document")
    if expected is not None and sniffed not in expected:
        raise UnsupportedFileType(f"content looks like {sniffed or 'unknown data'}, not a {ext} file")


@functools.lru_cache(maxsize=8)
def _lowered(allowed: tuple[str, ...]) -> frozenset[str]:
    """The allowed list as a set, once per configuration rather than once per upload."""
    return frozenset(value.lower() for value in allowed)


SNIFF_BYTES = 8192
_OWN_SIGNATURES = {"exe": (b"MZ",), "macho": (b"\xcf\xfa\xed\xfe", b"\xfe\xed\xfa\xcf")}
_EXECUTABLE_MATCHERS = [matcher for matcher in filetype.TYPES if matcher.extension in EXECUTABLE_KINDS]


def sniff_kind(content: bytes) -> str | None:
    """The content's real type from its leading bytes (``None`` when unknown, e.g. plain text): the first of
    the sniffer's ~90 signatures that matches."""
    head = content[:SNIFF_BYTES]
    for kind, signatures in _OWN_SIGNATURES.items():
        if head.startswith(signatures):
            return kind
    found = filetype.guess(head)
    return None if found is None else str(found.extension)


def may_be_executable(content: bytes) -> bool:
    """Whether an executable's signature matches (then ``sniff_kind`` says which kind comes first). A name
    with no expected kind is refused only for an executable, so this is all it needs when the answer is no:
    a dozen signatures instead of ~90 (a tenth of the CPU an upload of a text file costs the worker)."""
    head = content[:SNIFF_BYTES]
    if any(head.startswith(signatures) for signatures in _OWN_SIGNATURES.values()):
        return True
    return filetype.match(head, _EXECUTABLE_MATCHERS) is not None


# -- active content ---------------------------------------------------------------------------------

# Names and types shown as plain text: HTML inside them is disguised (an .xml may be XHTML, which runs script).
TEXT_EXTENSIONS = {"txt", "text", "csv", "tsv", "md", "markdown", "log", "json", "xml"}
TEXT_MIME_TYPES = {
    "text/plain", "text/csv", "text/tab-separated-values", "text/markdown", "application/json", "application/xml",
    "text/xml",
}  # fmt: skip
SNIFF_CHARS = 4096
# What may precede a document's first element: whitespace, the XML declaration, comments, a doctype.
_PROLOGUE = re.compile(r"(?:\s+|<\?xml[^>]*>|<!--.*?-->|<!doctype\s+svg[^\[>]*(?:\[.*?\])?\s*>)*", re.I | re.S)
_HTML_START = re.compile(r"<(!doctype\s+html|html|head|body|script|iframe)[\s/>]", re.I)
_SVG_START = re.compile(r"<(?:[\w.-]+:)?svg[\s/>]", re.I)
_TAG = re.compile(r"<[^<>]*")  # a tag up to its '>' (linear: a run stops at the next '<')
_TAG_NAME = re.compile(r"</?(?:[\w.-]+:)?([\w-]+)")
_EVENT_HANDLER = re.compile(r"[\s/\"'](on[a-z]+)\s*=|attributename\s*=\s*[\"']?\s*(on[a-z]+)", re.I)
SCRIPT_ELEMENTS = {"script", "handler", "iframe", "embed", "object"}  # handler: SVG Tiny's script element
SCRIPT_URL_SCHEMES = ("javascript:", "vbscript:", "data:text/html")
_INVISIBLE = re.compile(r"[\s\x00-\x1f]+")  # browsers ignore these inside a URL scheme
ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")  # first local header; an empty archive's directory end
SVG_CHUNK_BYTES = 1024 * 1024  # an SVG is scanned for script this much at a time
MAX_SVG_TAG_CHARS = 4 * 1024 * 1024  # a longer tag is not scanned but refused (it could hide a handler)


def _as_file(content: bytes | BinaryIO) -> BinaryIO:
    return io.BytesIO(content) if isinstance(content, bytes) else content


def check_active_content(
    file_name: str, mime: str, content: bytes | BinaryIO, allow_active_content: bool, max_archive_expanded_size: int
) -> None:
    """Refuses (``UnsupportedFileType``) an archive whose declared expansion passes the limit, and, unless
    active content is allowed, SVG with script and HTML under a text name or type. Errs towards refusing:
    a script-like tag inside an SVG comment counts too. ``content`` may be a seekable file, read in chunks."""
    file = _as_file(content)
    expanded = declared_expansion(file)
    if expanded is not None and expanded > max_archive_expanded_size:
        raise UnsupportedFileType(
            f"zip archive would expand to {expanded} bytes; the limit is {max_archive_expanded_size} bytes"
        )
    if allow_active_content:
        return
    ext = extension_of(file_name)
    file.seek(0)
    head = text_head(file.read(SNIFF_CHARS * 4))
    if ext == "svg" or mime == "image/svg+xml" or sniffs_as_svg(head):
        found = script_in_svg_file(file)
        if found is not None:
            raise UnsupportedFileType(f"SVG with script ({found}) is active content, which is not allowed")
    if ext in TEXT_EXTENSIONS or mime in TEXT_MIME_TYPES:
        marker = html_marker(head)
        if marker is not None:
            raise UnsupportedFileType(f"content is HTML ({marker}) under a text name or type: active content")


def declared_expansion(content: bytes | BinaryIO) -> int | None:
    """The total uncompressed size a zip's central directory declares (never expanded). ``None`` when the
    content is no zip, or its directory cannot be read: then it declares nothing, and the tools that expand
    archives (which read that directory) cannot open it either; such bytes are stored as they are."""
    file = _as_file(content)
    file.seek(0)
    if not file.read(4).startswith(ZIP_SIGNATURES):
        return None
    try:
        with zipfile.ZipFile(file) as archive:
            return sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError, NotImplementedError):
        return None


def text_head(content: bytes, chars: int | None = SNIFF_CHARS) -> str:
    """The content as text (BOM honoured, undecodable bytes replaced), its first ``chars`` characters."""
    data = content if chars is None else content[: chars * 4]
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = data.decode("utf-16", errors="replace")
    else:
        text = data.decode("utf-8", errors="replace").removeprefix("\ufeff")
    return text if chars is None else text[:chars]


def _first_element_at(head: str) -> int:
    match = _PROLOGUE.match(head)
    return match.end() if match else 0


def sniffs_as_svg(head: str) -> bool:
    return _SVG_START.match(head, _first_element_at(head)) is not None


def html_marker(head: str) -> str | None:
    """The HTML opening (``<!doctype html``, ``<html``, ``<body``, ``<script``...) the text starts with."""
    match = _HTML_START.match(head, _first_element_at(head))
    return None if match is None else "<" + match.group(1).lower().split()[0]


def script_in_svg(svg: str) -> str | None:
    """What makes this SVG run script: a script-like element, an event-handler attribute or a script URL."""
    for tag in _TAG.finditer(svg):
        found = _script_in_tag(tag.group())
        if found is not None:
            return found
    return None


def script_in_svg_file(file: BinaryIO) -> str | None:
    """``script_in_svg`` over a file read in chunks: the same tags, never the whole text at once."""
    for tag in _tags_in_chunks(file):
        if len(tag) > MAX_SVG_TAG_CHARS:
            return f"a tag longer than {MAX_SVG_TAG_CHARS} characters, too long to check"
        found = _script_in_tag(tag)
        if found is not None:
            return found
    return None


def _tags_in_chunks(file: BinaryIO) -> Iterator[str]:
    """Every ``_TAG`` of the file's text (BOM honoured, undecodable bytes replaced); a tag that reaches the end
    of a chunk is carried into the next. A tag past ``MAX_SVG_TAG_CHARS`` is cut there and ends the scan."""
    file.seek(0)
    encoding = "utf-16" if file.read(2) in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
    file.seek(0)
    decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
    carry = ""
    while True:
        data = file.read(SVG_CHUNK_BYTES)
        text = carry + decoder.decode(data, final=not data)
        carry = ""
        for tag in _TAG.finditer(text):
            if data and tag.end() == len(text):  # may go on in the next chunk
                carry = tag.group()
                if len(carry) > MAX_SVG_TAG_CHARS:
                    yield carry
                    return
                break
            yield tag.group()
        if not data:
            return


def _script_in_tag(text: str) -> str | None:
    name = _TAG_NAME.match(text)
    if name is not None and name.group(1).lower() in SCRIPT_ELEMENTS:
        return f"<{name.group(1).lower()}> element"
    handler = _EVENT_HANDLER.search(text)
    if handler is not None:
        return f"event handler {(handler.group(1) or handler.group(2)).lower()[:40]}"
    if ":" in text or "&" in text:
        url = _INVISIBLE.sub("", html.unescape(text)).lower()
        scheme = next((s for s in SCRIPT_URL_SCHEMES if s in url), None)
        if scheme is not None:
            return f"{scheme} URL"
    return None
