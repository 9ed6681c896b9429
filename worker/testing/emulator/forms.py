"""Reads CMIS browser-binding POST bodies (multipart or urlencoded) the way OpenCMIS does.

Control names are case-insensitive; the one part with a filename is the content; text fields are decoded
as ISO-8859-1 unless ``_charset_`` or a per-part charset says otherwise. Multipart bodies are parsed as they
stream in: content over ``LARGE_CONTENT`` goes to a temporary file, never whole into memory.
"""

from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from aiohttp import web
from aiohttp.multipart import content_disposition_filename, parse_content_disposition

from worker.testing.emulator.content import LARGE_CONTENT, Upload
from worker.testing.emulator.store import CmisFault

MAX_PART_HEADERS = 16 * 1024


@dataclass
class CmisForm:
    controls: dict[str, str] = field(default_factory=dict)  # lower-cased names
    content: Upload | None = None
    content_file_name: str | None = None
    content_type: str | None = None

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.controls.get(name.lower(), default)

    def flag(self, name: str, default: bool) -> bool:
        value = self.get(name)
        return default if value is None else value.lower() == "true"

    def properties(self) -> dict[str, str]:
        """``propertyId[i]``/``propertyValue[i]`` pairs; indexes start at 0 without gaps."""
        result: dict[str, str] = {}
        index = 0
        while (prop_id := self.get(f"propertyId[{index}]")) is not None:
            result[prop_id] = self.get(f"propertyValue[{index}]") or ""
            index += 1
        return result

    def discard(self) -> None:
        """Removes the content's temporary file unless the store took it over."""
        if self.content is not None:
            self.content.discard()

    @property
    def file(self) -> tuple[Upload, str, str] | None:
        if self.content is None:
            return None
        file_name = self.get("filename") or self.content_file_name or ""
        mime = self.get("contenttype") or self.content_type or "application/octet-stream"
        return self.content, mime, file_name


async def read_form(request: web.Request, max_content: int, upload_dir: Path) -> CmisForm:
    form = CmisForm()
    content_type = request.headers.get("Content-Type", "")
    if content_type.partition(";")[0].strip().lower() != "multipart/form-data":
        posted = await request.post()
        form.controls = {k.lower(): str(v) for k, v in posted.items()}
        return form
    boundary = _content_type_param(content_type, "boundary")
    if not boundary:
        raise CmisFault("invalidArgument", "multipart/form-data without a boundary")
    # Parsed here rather than with aiohttp's MultipartReader, which asserts on a leading `_charset_` part
    # when the boundary is long (its own client's boundaries are).
    parser = MultipartStream(boundary.encode("latin-1"), max_content, upload_dir)
    limit, total = max_content + 64 * 1024, 0
    try:
        async for chunk in request.content.iter_chunked(256 * 1024):
            total += len(chunk)
            if total > limit:
                raise CmisFault("constraint", f"Content size exceeds the maximum allowed size {limit}")
            parser.feed(chunk)
        parts = parser.finish()
    except BaseException:
        parser.discard()
        raise
    raw: dict[str, tuple[bytes, str | None]] = {}
    for headers, value in parts:
        disposition, params = _disposition(headers.get("content-disposition"))
        if isinstance(value, Upload):
            form.content = value
            form.content_file_name = content_disposition_filename(params, "filename") or ""
            form.content_type = headers.get("content-type", "application/octet-stream")
        elif disposition == "form-data" and params.get("name"):
            charset = _content_type_param(headers.get("content-type", ""), "charset")
            raw[params["name"].lower()] = (value, charset)
    default_charset = raw.get("_charset_", (b"ISO-8859-1", None))[0].decode("ascii", "replace").strip()
    for name, (text, charset) in raw.items():
        try:
            form.controls[name] = text.decode(charset or default_charset)
        except (LookupError, UnicodeDecodeError) as exc:
            form.discard()
            raise CmisFault("invalidArgument", f"Cannot decode form field {name}") from exc
    return form


def _content_type_param(content_type: str, wanted: str) -> str | None:
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == wanted:
            return value.strip('"')
    return None


def _parse_headers(head: bytes) -> dict[str, str]:
    try:
        head_text = head.decode("utf-8")  # raw UTF-8 file names, as browsers send them
    except UnicodeDecodeError:
        head_text = head.decode("latin-1")
    headers = {}
    for line in head_text.split("\r\n"):
        name, colon, header_value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = header_value.strip()
    return headers


@functools.lru_cache(maxsize=1024)
def _disposition(header: str | None) -> tuple[str | None, dict[str, str]]:
    """aiohttp's RFC 6266 parse (``filename*`` and all), which is slow: a form repeats the same field
    headers request after request, so each distinct one is parsed once. The params are not to be changed."""
    return parse_content_disposition(header)


def _is_content_part(headers: dict[str, str]) -> bool:
    disposition, params = _disposition(headers.get("content-disposition"))
    return disposition == "form-data" and (
        content_disposition_filename(params, "filename") is not None or "filename" in params
    )


class MultipartStream:
    """A multipart/form-data body fed in pieces as they arrive. Text fields are kept as bytes; the content
    part (the one with a filename) stays in memory up to ``LARGE_CONTENT`` and goes to a file in
    ``upload_dir`` beyond it. ``finish`` returns ``(headers, bytes | Upload)`` per part."""

    def __init__(self, boundary: bytes, max_content: int, upload_dir: Path) -> None:
        self._delimiter = b"\r\n--" + boundary
        self._buffer = bytearray(b"\r\n")  # so the first delimiter looks like every other one
        self._state = "preamble"  # preamble -> (after_delimiter -> headers -> body)* -> done
        self._max_content = max_content
        self._upload_dir = upload_dir
        self._parts: list[tuple[dict[str, str], bytes | Upload]] = []
        self._headers: dict[str, str] = {}
        self._value = bytearray()
        self._is_content = False
        self._file: BinaryIO | None = None
        self._upload: Upload | None = None
        self._size = 0

    def feed(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while True:
            if self._state in {"preamble", "body"}:
                at = buffer.find(self._delimiter)
                if at == -1:
                    keep = len(self._delimiter) - 1  # a delimiter may start in these last bytes
                    if len(buffer) > keep:
                        self._part_data(buffer[: len(buffer) - keep])
                        del buffer[: len(buffer) - keep]
                    return
                self._part_data(buffer[:at])
                del buffer[: at + len(self._delimiter)]
                self._end_part()
                self._state = "after_delimiter"
            if self._state == "after_delimiter":
                if len(buffer) < 2:
                    return
                if buffer[:2] == b"--":
                    self._state = "done"
                    buffer.clear()
                    return
                self._state = "headers"
            if self._state == "headers":
                end = buffer.find(b"\r\n\r\n")
                if end == -1:
                    if len(buffer) > MAX_PART_HEADERS:
                        raise CmisFault("invalidArgument", "Malformed multipart part")
                    return
                self._start_part(_parse_headers(bytes(buffer[:end])))
                del buffer[: end + 4]
                self._state = "body"
            if self._state == "done":
                buffer.clear()
                return

    def finish(self) -> list[tuple[dict[str, str], bytes | Upload]]:
        if self._state == "body":  # no closing delimiter: the rest is the last part
            self._part_data(self._buffer)
            self._end_part()
        elif self._state == "headers":
            raise CmisFault("invalidArgument", "Malformed multipart part")
        self._state = "done"
        return self._parts

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        for upload in [self._upload, *(v for _, v in self._parts if isinstance(v, Upload))]:
            if upload is not None:
                upload.discard()

    def _start_part(self, headers: dict[str, str]) -> None:
        self._headers = headers
        self._is_content = _is_content_part(headers)
        if self._is_content and any(isinstance(v, Upload) for _, v in self._parts):
            raise CmisFault("invalidArgument", "More than one content stream part")
        self._value = bytearray()
        self._size = 0

    def _part_data(self, data: bytearray | bytes) -> None:
        if self._state != "body" or not data:
            return
        if not self._is_content:
            self._value += data
            return
        self._size += len(data)
        if self._size > self._max_content:
            raise CmisFault("constraint", f"Content size exceeds the maximum allowed size {self._max_content}")
        if self._file is None and self._size > LARGE_CONTENT:
            path = self._upload_dir / f".upload-{secrets.token_hex(8)}.part"
            self._upload = Upload(0, path=path)
            self._file = path.open("wb")
            self._file.write(self._value)
            self._value = bytearray()
        if self._file is not None:
            self._file.write(data)
        else:
            self._value += data

    def _end_part(self) -> None:
        if self._state != "body":
            return
        if not self._is_content:
            self._parts.append((self._headers, bytes(self._value)))
        elif self._file is not None and self._upload is not None:
            self._file.close()
            self._file = None
            self._upload.size = self._size
            self._parts.append((self._headers, self._upload))
            self._upload = None
        else:
            self._parts.append((self._headers, Upload.of(bytes(self._value))))
        self._value = bytearray()
