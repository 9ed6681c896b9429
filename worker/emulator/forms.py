"""Reads CMIS browser-binding POST bodies (multipart or urlencoded) the way OpenCMIS does.

Control names are case-insensitive; the one part with a filename is the content; text fields are decoded
as ISO-8859-1 unless ``_charset_`` or a per-part charset says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import BodyPartReader, web

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
    raw: dict[str, tuple[bytes, str | None]] = {}
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise CmisFault("invalidArgument", "Nested multipart is not supported")
        if part.filename is not None:
            if form.content is not None:
                raise CmisFault("invalidArgument", "More than one content stream part")
            form.content = await _read_capped(part, max_content)
            form.content_file_name = part.filename
            form.content_type = part.headers.get("Content-Type", "application/octet-stream")
        elif part.name:
            charset = part.get_charset(default="") or None
            raw[part.name.lower()] = (bytes(await part.read()), charset)
    default_charset = raw.get("_charset_", (b"ISO-8859-1", None))[0].decode("ascii", "replace")
    for name, (value, charset) in raw.items():
        try:
            form.controls[name] = value.decode(charset or default_charset)
        except (LookupError, UnicodeDecodeError) as exc:
            raise CmisFault("invalidArgument", f"Cannot decode form field {name}") from exc
    return form


async def _read_capped(part: BodyPartReader, max_content: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while chunk := await part.read_chunk(256 * 1024):
        total += len(chunk)
        if total > max_content:
            raise CmisFault("constraint", f"Content size exceeds the maximum allowed size {max_content}")
        chunks.append(chunk)
    return b"".join(chunks)
