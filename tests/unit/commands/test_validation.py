from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from worker.commands import validation
from worker.errors import FileTooLarge, IntegrityMismatch, InvalidCommand, UnsupportedFileType
from worker.settings import DEFAULT_EXTENSIONS, DEFAULT_MIME_TYPES

PDF = b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
EXE = b"MZ\x90\x00\x03\x00\x00\x00" + b"\x00" * 64
ELF = b"\x7fELF\x02\x01\x01" + b"\x00" * 64
DOCX_MIME = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


def docx_bytes() -> bytes:
    """The same bytes every time (entries dated 1980-01-01, not now): they are in test ids, which every
    pytest-xdist process must collect alike."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo("[Content_Types].xml"), "<Types/>")
        archive.writestr(zipfile.ZipInfo("word/document.xml"), "<document/>")
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


@pytest.mark.parametrize("length", [256, 10_000, 65_536])
def test_names_of_any_length_are_shortened_to_the_limit(length: int) -> None:
    name = validation.sanitise_file_name("Quarterly report " + "x" * (length - 21) + ".pdf", 255)
    assert len(name) == 255 and name.startswith("Quarterly report x") and name.endswith("x.pdf")


def test_a_cut_never_leaves_a_trailing_dot_or_space_before_the_extension() -> None:
    assert validation.sanitise_file_name("ab . . . . . . . . .pdf", 8) == "ab.pdf"
    assert validation.sanitise_file_name("ab . . . . . .", 5) == "ab"


def test_an_overlong_extension_is_cut_with_the_rest() -> None:
    assert validation.sanitise_file_name("a." + "x" * 300, 255) == "a." + "x" * 253


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
    assert validation.check_declared_sha256(hashlib.sha256(b"abc").hexdigest(), digest.upper()) == digest
    with pytest.raises(IntegrityMismatch):
        validation.check_declared_sha256(hashlib.sha256(b"abd").hexdigest(), digest)


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


# One sample of every signature the sniffer knows, each as the start of a file, plus text and a few mixtures.
SIGNATURE_SAMPLES = [
    b"plain text, nothing else",
    b"",
    PDF,
    PNG,
    EXE,
    ELF,
    b"\xca\xfe\xba\xbe" + b"\x00" * 64,  # Java class
    b"\x00asm\x01\x00\x00\x00",  # WebAssembly
    b"dex\n035\x00" + b"\x00" * 64,
    b"\x00" * 128 + b"DICM" + b"\x00" * 64,  # DICOM: a signature away from the start
    b"\xcf\xfa\xed\xfe" + b"\x00" * 16,  # Mach-O
    b"PK\x03\x04" + b"\x00" * 64,
    b"!<arch>\ndebian-binary" + b"\x00" * 64,
    PDF + ELF,
    b"\x00" * 128 + b"DICM" + PDF,
]


@pytest.mark.parametrize("content", SIGNATURE_SAMPLES, ids=range(len(SIGNATURE_SAMPLES)))
@pytest.mark.parametrize("name", ["notes.txt", "data.csv", "data.json", "a.pdf", "photo.png", "plan.docx"])
def test_a_decision_is_what_the_first_matching_signature_decides(name: str, content: bytes) -> None:
    """The shortcut for names without an expected kind (only executables' signatures are tried) decides as
    the sniffer's first match does, for every kind of content."""
    sniffed = validation.sniff_kind(content)
    expected = validation.EXPECTED_KINDS.get(validation.extension_of(name))
    refused = sniffed in validation.EXECUTABLE_KINDS or (expected is not None and sniffed not in expected)
    mime = {"txt": "text/plain", "csv": "text/csv", "json": "application/json", "pdf": "application/pdf"}
    declared = mime.get(validation.extension_of(name), "application/octet-stream")
    declared = {"png": "image/png", "docx": DOCX_MIME}.get(validation.extension_of(name), declared)
    if refused:
        with pytest.raises(UnsupportedFileType):
            check(name, declared, content)
    else:
        check(name, declared, content)


def test_a_text_file_is_not_run_through_every_signature(monkeypatch: pytest.MonkeyPatch) -> None:
    def every_signature(_head: bytes) -> None:
        raise AssertionError("the full sniff ran for a text file")

    monkeypatch.setattr("filetype.guess", every_signature)
    check("notes.txt", "text/plain", b"hello " * 2000)
    with pytest.raises(AssertionError, match="full sniff"):  # a signature of an executable: the first match decides
        check("notes.txt", "text/plain", ELF)


def test_tiny_limits_never_overflow() -> None:
    assert validation.sanitise_file_name("0.0", 1) == "0"
    assert validation.sanitise_file_name("report.pdf", 5) == "r.pdf"


def zip_declaring(total: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", b" " * (total - len("<Types/>")))
    return buffer.getvalue()


def active(name: str, mime: str, content: bytes, allow: bool = False, max_expanded: int = 1000) -> None:
    validation.check_active_content(name, mime, content, allow, max_expanded)


SVG = '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink">{}</svg>'


class TestSvgWithScript:
    """SVG (by name, type or content) that can run script is refused unless active content is allowed."""

    @pytest.mark.parametrize(
        ("body", "finding"),
        [
            ("<script>alert(1)</script>", "<script> element"),
            ("<SCRIPT type='text/ecmascript'>alert(1)</SCRIPT>", "<script> element"),
            ("<svg:script>alert(1)</svg:script>", "<script> element"),
            ('<foreignObject><iframe src="https://evil.test"/></foreignObject>', "<iframe> element"),
            ('<handler type="application/ecmascript">alert(1)</handler>', "<handler> element"),
            ('<rect onload="alert(1)"/>', "event handler onload"),
            ("<rect\nONMOUSEOVER = alert(1) />", "event handler onmouseover"),
            ('<rect/onclick="alert(1)"/>', "event handler onclick"),
            ('<set attributeName="onmouseover" to="alert(1)"/>', "event handler onmouseover"),
            ('<a xlink:href="javascript:alert(1)"><text>x</text></a>', "javascript: URL"),
            ('<a href=" JaVa&#x09;Script:alert(1)">x</a>', "javascript: URL"),
            ('<a href="&#106;avascript:alert(1)">x</a>', "javascript: URL"),
            ('<image href="data:text/html;base64,PHNjcmlwdD4="/>', "data:text/html URL"),
        ],
    )
    def test_script_in_an_svg_is_refused(self, body: str, finding: str) -> None:
        with pytest.raises(UnsupportedFileType, match=f"SVG with script \\({finding}\\)"):
            active("drawing.svg", "image/svg+xml", SVG.format(body).encode())

    @pytest.mark.parametrize(
        ("name", "mime", "prologue"),
        [
            ("drawing.svg", "application/octet-stream", ""),  # by extension
            ("drawing.bin", "image/svg+xml", ""),  # by declared type
            ("drawing.xml", "application/xml", '\ufeff<?xml version="1.0"?>\n<!-- made by hand -->\n'),  # by content
            ("drawing.txt", "text/plain", '<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "x.dtd" [<!ENTITY a "b">]>'),
        ],
    )
    def test_svg_is_recognised_by_name_type_or_content(self, name: str, mime: str, prologue: str) -> None:
        with pytest.raises(UnsupportedFileType, match="SVG with script"):
            active(name, mime, (prologue + SVG.format("<script>alert(1)</script>")).encode())

    def test_script_at_the_very_end_of_a_large_svg_is_found(self) -> None:
        content = SVG.format('<rect width="1"/>' * 50_000 + "<script>alert(1)</script>").encode()
        with pytest.raises(UnsupportedFileType, match="script"):
            active("big.svg", "image/svg+xml", content)

    @pytest.mark.parametrize(
        "body",
        [
            '<circle cx="5" cy="5" r="4" fill="red"/>',
            '<a xlink:href="https://example.com/help"><text x="1">JavaScript: the good parts</text></a>',
            '<text x="1" font-family="Iconic" data-online="1">click on = here; onload=never</text>',
            '<foreignObject width="9" height="9"><div xmlns="http://www.w3.org/1999/xhtml">label</div></foreignObject>',
            '<g transform="rotate(45)" stroke-dasharray="3 1"><title>scripture &amp; objectives</title></g>',
        ],
    )
    def test_svg_without_script_passes(self, body: str) -> None:
        active("drawing.svg", "image/svg+xml", SVG.format(body).encode())

    def test_allowed_when_active_content_is_allowed(self) -> None:
        active("drawing.svg", "image/svg+xml", SVG.format("<script>alert(1)</script>").encode(), allow=True)


class TestHtmlDisguisedAsText:
    """Content that opens as an HTML document under a text name or text type is refused."""

    @pytest.mark.parametrize(
        ("name", "mime", "content", "marker"),
        [
            ("notes.txt", "text/plain", b"<!DOCTYPE html><p>hi", "<!doctype"),
            ("notes.txt", "text/plain", b"\xef\xbb\xbf \r\n\t<HTML lang=en><body>hi", "<html"),
            ("data.csv", "text/csv", b"<script>alert(1)</script>\na,b", "<script"),
            ("readme.md", "text/markdown", b"<!-- generated -->\n<body onload=x>", "<body"),
            ("feed.xml", "application/xml", b'<?xml version="1.0"?><html xmlns="urn:x">', "<html"),
            ("data.json", "application/json", b"<iframe src=//evil.test>", "<iframe"),
            ("page.bin", "text/plain", b"<head><title>x</title></head>", "<head"),  # by declared type alone
            ("notes.txt", "text/plain", "<html>".encode("utf-16"), "<html"),  # with its BOM
        ],
    )
    def test_html_under_a_text_name_or_type_is_refused(self, name: str, mime: str, content: bytes, marker: str) -> None:
        with pytest.raises(UnsupportedFileType, match=f"HTML \\({marker}\\)"):
            active(name, mime, content)

    @pytest.mark.parametrize(
        ("name", "mime", "content"),
        [
            ("notes.txt", "text/plain", b"Export the page as html, or paste <html><script> into the editor."),
            ("notes.txt", "text/plain", b"<html5 notes> are not a tag we know"),
            ("readme.md", "text/markdown", b'<div align="center"><img src="logo.png"></div>\n# Title\n'),
            ("data.csv", "text/csv", b"tag,meaning\n<html>,root element\n"),
            ("data.xml", "application/xml", b'<?xml version="1.0"?><invoice><html>escaped</html></invoice>'),
        ],
    )
    def test_text_that_only_mentions_html_passes(self, name: str, mime: str, content: bytes) -> None:
        active(name, mime, content)

    def test_allowed_when_active_content_is_allowed(self) -> None:
        active("notes.txt", "text/plain", b"<!doctype html><script>x</script>", allow=True)


class TestArchiveExpansion:
    """Zip content (archives and OOXML/ODF documents, whatever the name) is judged by its declared expansion."""

    def test_the_limit_is_inclusive(self) -> None:
        active("a.zip", "application/zip", zip_declaring(1000), max_expanded=1000)
        with pytest.raises(UnsupportedFileType, match="would expand to 1001 bytes; the limit is 1000 bytes"):
            active("a.zip", "application/zip", zip_declaring(1001), max_expanded=1000)

    @pytest.mark.parametrize(
        ("name", "mime"),
        [
            ("a.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
            ("a.odt", "application/vnd.oasis.opendocument.text"),
            ("a.txt", "text/plain"),
        ],
    )
    def test_documents_that_are_zips_have_the_same_limit(self, name: str, mime: str) -> None:
        with pytest.raises(UnsupportedFileType, match="expand"):
            active(name, mime, zip_declaring(5000), max_expanded=1000)

    def test_allowing_active_content_does_not_lift_the_limit(self) -> None:
        with pytest.raises(UnsupportedFileType, match="expand"):
            active("a.zip", "application/zip", zip_declaring(5000), allow=True, max_expanded=1000)

    @pytest.mark.parametrize("content", [b"PK\x03\x04" + b"\xff" * 40, b"PK\x05\x06truncated", docx_bytes()[:-30]])
    def test_a_zip_whose_directory_cannot_be_read_declares_nothing_and_passes(self, content: bytes) -> None:
        assert validation.declared_expansion(content) is None
        active("a.zip", "application/zip", content, max_expanded=0)

    def test_an_empty_zip_and_non_zip_content_pass(self) -> None:
        buffer = io.BytesIO()
        zipfile.ZipFile(buffer, "w").close()
        active("a.zip", "application/zip", buffer.getvalue(), max_expanded=0)
        active("a.pdf", "application/pdf", PDF, max_expanded=0)


class TestSvgScannedInChunks:
    """A spooled SVG is scanned chunk by chunk: the same findings as over the whole text, tags cut by a chunk
    boundary included; a tag too long to scan is refused."""

    @pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64])
    @pytest.mark.parametrize(
        "body",
        [
            "<rect/>" * 30 + '<rect onload="alert(1)"/>',
            "<!-- " + "x" * 100 + " --><script>1</script>",
            '<a xlink:href="java&#x73;cript:alert(1)">x</a>',
            "<circle r='4'/>" * 20,
            "\u00e9\u4e2d" * 40 + "<rect onclick='x'/>",
        ],
    )
    def test_chunks_find_what_the_whole_text_finds(
        self, monkeypatch: pytest.MonkeyPatch, chunk: int, body: str
    ) -> None:
        monkeypatch.setattr(validation, "SVG_CHUNK_BYTES", chunk)
        for encoding in ("utf-8", "utf-8-sig", "utf-16"):
            data = SVG.format(body).encode(encoding)
            whole = validation.script_in_svg(validation.text_head(data, None))
            assert validation.script_in_svg_file(io.BytesIO(data)) == whole, (encoding, chunk)

    def test_a_script_far_into_a_large_file_is_found(self, tmp_path: Path) -> None:
        path = tmp_path / "big.svg"
        with path.open("wb") as file:
            file.write(b'<svg xmlns="http://www.w3.org/2000/svg">')
            for _ in range(5):
                file.write(b'<path d="M0 0 L1 1"/>' * 100_000)
            file.write(b"<script>alert(1)</script></svg>")
        with path.open("rb") as file, pytest.raises(UnsupportedFileType, match="<script> element"):
            validation.check_active_content("big.svg", "image/svg+xml", file, False, 1000)

    def test_a_tag_too_long_to_scan_is_refused(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(validation, "MAX_SVG_TAG_CHARS", 100)
        monkeypatch.setattr(validation, "SVG_CHUNK_BYTES", 16)
        data = SVG.format('<path d="' + "1 " * 200 + '"/>').encode()
        with pytest.raises(UnsupportedFileType, match="too long to check"):
            validation.check_active_content("a.svg", "image/svg+xml", io.BytesIO(data), False, 1000)
        monkeypatch.setattr(validation, "MAX_SVG_TAG_CHARS", 1000)
        validation.check_active_content("a.svg", "image/svg+xml", io.BytesIO(data), False, 1000)

    def test_a_zip_is_judged_from_its_file(self, tmp_path: Path) -> None:
        path = tmp_path / "a.docx"
        path.write_bytes(zip_declaring(5000))
        with path.open("rb") as file:
            assert validation.declared_expansion(file) == 5000
