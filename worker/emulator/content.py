"""Where the emulator keeps file content: in memory, or in a directory that survives a restart."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Protocol


class ContentStore(Protocol):
    def put(self, data: bytes) -> str: ...

    def get(self, content_id: str) -> bytes: ...

    def discard(self, content_id: str) -> None: ...


class MemoryContentStore:
    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}

    def put(self, data: bytes) -> str:
        content_id = secrets.token_hex(16)
        self._blobs[content_id] = data
        return content_id

    def get(self, content_id: str) -> bytes:
        return self._blobs[content_id]

    def discard(self, content_id: str) -> None:
        self._blobs.pop(content_id, None)


class DirectoryContentStore:
    """One file per content stream, written atomically (temp file + rename)."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory / "content"
        self._dir.mkdir(parents=True, exist_ok=True)

    def put(self, data: bytes) -> str:
        content_id = secrets.token_hex(16)
        tmp = self._dir / f".{content_id}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, self._dir / content_id)
        return content_id

    def get(self, content_id: str) -> bytes:
        return (self._dir / content_id).read_bytes()

    def discard(self, content_id: str) -> None:
        (self._dir / content_id).unlink(missing_ok=True)
