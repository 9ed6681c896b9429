"""Where the emulator keeps file content: in memory, or in a directory that survives a restart.

Content larger than ``LARGE_CONTENT`` never sits in memory: the form reader writes it to a temporary file as
it arrives (an ``Upload`` with a ``path``), the store adopts that file, and a download streams it back.
So a benchmark of large files measures the worker, not the emulator."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

LARGE_CONTENT = 1024 * 1024  # larger uploads go to a file
SCAN_BYTES = 1024 * 1024


@dataclass
class Upload:
    """Content received with a request: ``data`` in memory, or a temporary file at ``path`` (then the store
    takes the file over, or ``discard`` removes it)."""

    size: int
    data: bytes | None = None
    path: Path | None = None

    @classmethod
    def of(cls, data: bytes) -> Upload:
        return cls(len(data), data=data)

    def contains(self, needle: bytes) -> bool:
        if self.data is not None:
            return needle in self.data
        if self.path is None:
            return False
        tail = b""
        with self.path.open("rb") as file:
            while chunk := file.read(SCAN_BYTES):
                if needle in tail + chunk:
                    return True
                tail = chunk[-(len(needle) - 1) :]
        return False

    def read(self) -> bytes:
        return self.data if self.data is not None else (self.path.read_bytes() if self.path else b"")

    def discard(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


class ContentStore(Protocol):
    def put(self, upload: Upload) -> str: ...

    def get(self, content_id: str) -> bytes: ...

    def file(self, content_id: str) -> Path | None:
        """Where the content lies on disk, if it does (then it is served from there)."""

    def discard(self, content_id: str) -> None: ...

    def upload_dir(self) -> Path:
        """Where the form reader puts large uploads (the same file system, so adopting one is a rename)."""


class MemoryContentStore:
    """Small content in memory; large content in files in a private temporary directory, removed with the store."""

    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}
        self._dir: Path | None = None

    def put(self, upload: Upload) -> str:
        content_id = secrets.token_hex(16)
        if upload.path is not None:
            os.replace(upload.path, self.upload_dir() / content_id)
        else:
            self._blobs[content_id] = upload.data or b""
        return content_id

    def get(self, content_id: str) -> bytes:
        path = self.file(content_id)
        return path.read_bytes() if path is not None else self._blobs[content_id]

    def file(self, content_id: str) -> Path | None:
        if content_id in self._blobs or self._dir is None:
            return None
        path = self._dir / content_id
        return path if path.exists() else None

    def discard(self, content_id: str) -> None:
        self._blobs.pop(content_id, None)
        if self._dir is not None:
            (self._dir / content_id).unlink(missing_ok=True)

    def upload_dir(self) -> Path:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="dms-emulator-"))
            weakref.finalize(self, shutil.rmtree, self._dir, True)
        return self._dir


class DirectoryContentStore:
    """One file per content stream, written atomically (temp file + rename)."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory / "content"
        self._dir.mkdir(parents=True, exist_ok=True)

    def put(self, upload: Upload) -> str:
        content_id = secrets.token_hex(16)
        if upload.path is not None:
            os.replace(upload.path, self._dir / content_id)
            return content_id
        tmp = self._dir / f".{content_id}.tmp"
        tmp.write_bytes(upload.data or b"")
        os.replace(tmp, self._dir / content_id)
        return content_id

    def get(self, content_id: str) -> bytes:
        return (self._dir / content_id).read_bytes()

    def file(self, content_id: str) -> Path | None:
        return self._dir / content_id

    def discard(self, content_id: str) -> None:
        (self._dir / content_id).unlink(missing_ok=True)

    def upload_dir(self) -> Path:
        return self._dir
