"""Reads CMIS browser-binding POST bodies (multipart or urlencoded) the way OpenCMIS does.

Control names are case-insensitive; the one part with a filename is the content; text fields are decoded
as ISO-8859-1 unless ``_charset_`` or a per-part charset says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.multipart import content_disposition_filename, parse_content_disposition

from worker.emulator.store import CmisFault


@dataclass
class CmisForm:
    controls: dict[str, str] = field(default_factory=dict)  # lower-cased names
    content: bytes | None = None
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

    @property
    def file(self) -> tuple[bytes, str, str] | None:
        if self.content is None:
            return None
        file_name = self.get("filename") or self.content_file_name or ""
        mime = self.get("contenttype") or self.content_type or "application/octet-stream"
        return self.content, mime, file_name


async def read_form(request: web.Request, max_content: int) -> CmisForm:
    form = CmisForm()
    if request.content_type != "multipart/form-data":
        posted = await request.post()
        form.controls = {k.lower(): str(v) for k, v in posted.items()}
        return form
    boundary = request.content_type and _content_type_param(request.headers.get("Content-Type", ""), "boundary")
    if not boundary:
        raise CmisFault("invalidArgument", "multipart/form-data without a boundary")
    # Parsed here rather than with aiohttp's MultipartReader, which asserts on a leading `_charset_` part
    # when the boundary is long (its own client's boundaries are).
    body = await _read_capped(request, max_content + 64 * 1024)
    raw: dict[str, tuple[bytes, str | None]] = {}
    for headers, value in _split_parts(body, boundary.encode("latin-1")):
        disposition, params = parse_content_disposition(headers.get("content-disposition"))
        if disposition != "form-data":
            continue
        file_name = content_disposition_filename(params, "filename")
        if file_name is not None or "filename" in params:
            if form.content is not None:
                raise CmisFault("invalidArgument", "More than one content stream part")
            if len(value) > max_content:
                raise CmisFault("constraint", f"Content size exceeds the maximum allowed size {max_content}")
            form.content = value
            form.content_file_name = file_name or ""
            form.content_type = headers.get("content-type", "application/octet-stream")
        elif params.get("name"):
            charset = _content_type_param(headers.get("content-type", ""), "charset")
            raw[params["name"].lower()] = (value, charset)
    default_charset = raw.get("_charset_", (b"ISO-8859-1", None))[0].decode("ascii", "replace").strip()
    for name, (value, charset) in raw.items():
        try:
            form.controls[name] = value.decode(charset or default_charset)
        except (LookupError, UnicodeDecodeError) as exc:
            raise CmisFault("invalidArgument", f"Cannot decode form field {name}") from exc
    return form


def _content_type_param(content_type: str, wanted: str) -> str | None:
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == wanted:
            return value.strip('"')
    return None


def _split_parts(body: bytes, boundary: bytes) -> list[tuple[dict[str, str], bytes]]:
    parts = []
    for chunk in body.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break  # closing delimiter
        head, sep, value = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise CmisFault("invalidArgument", "Malformed multipart part")
        headers = {}
        try:
            head_text = head.decode("utf-8")  # raw UTF-8 file names, as browsers send them
        except UnicodeDecodeError:
            head_text = head.decode("latin-1")
        for line in head_text.split("\r\n"):
            name, colon, header_value = line.partition(":")
            if colon:
                headers[name.strip().lower()] = header_value.strip()
        parts.append((headers, value.removesuffix(b"\r\n")))
    return parts


async def _read_capped(request: web.Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.content.iter_chunked(256 * 1024):
        total += len(chunk)
        if total > limit:
            raise CmisFault("constraint", f"Content size exceeds the maximum allowed size {limit}")
        chunks.append(chunk)
    return b"".join(chunks)
