"""Upload content without holding it in memory: ``content_url`` bodies are spooled to a temporary file while
their size is counted, their sha256 computed and their first bytes kept for type sniffing; DMS then gets
the file streamed. Inline content stays ``bytes`` behind the same interface.

Each process spools into its own directory, ``<SPOOL_DIR>/<pid>-<random>/``, and holds an ``flock`` on its
``.lock`` file while it runs. A file is removed when its command ends, however it ends; at start-up a
process removes every sibling directory whose lock it can take (its owner is gone: a crash's leftovers).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import io
import os
import re
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

import structlog

log = structlog.get_logger(__name__)

HEAD_BYTES = 16 * 1024  # what type sniffing and the HTML-as-text check read
WRITE_BYTES = 1024 * 1024  # spool writes (and hashing) happen off the event loop in pieces of this size
LOCK_FILE = ".lock"
PROCESS_DIRECTORY = re.compile(r"\d+-[0-9a-f]{8}")  # <pid>-<random>: only these are ever removed
UNLOCKED_GRACE_S = 60.0  # a directory without a lock file may be a process that is just starting


class SpoolUnavailable(Exception):
    """The spool directory cannot be used (missing, read-only, not a directory)."""


class InlineContent:
    """Content already in memory (inline base64): the ``ContentSource`` interface over ``bytes``."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)
        self.head = data[:HEAD_BYTES]
        self._sha256: str | None = None

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = hashlib.sha256(self.data).hexdigest()
        return self._sha256

    def open(self) -> BinaryIO:
        return io.BytesIO(self.data)

    def close(self) -> None:
        pass


class SpooledContent:
    """Content in a spool file; ``close`` removes the file (idempotent)."""

    def __init__(self, path: Path, size: int, sha256: str, head: bytes) -> None:
        self.path, self.size, self.sha256, self.head = path, size, sha256, head

    def open(self) -> BinaryIO:
        return self.path.open("rb")

    def close(self) -> None:
        self.path.unlink(missing_ok=True)


UploadContent = InlineContent | SpooledContent


class SpoolWriter:
    """Takes content chunk by chunk, in order: counts it, hashes it, keeps its head and appends it to a spool
    file, buffering ``WRITE_BYTES`` so each write and hash update runs once per MiB in a thread.
    ``finish`` hands the file over as ``SpooledContent``; ``discard`` removes it (use it on every failure)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = 0
        self._file: BinaryIO | None = path.open("xb")
        self._hash = hashlib.sha256()
        self._head = bytearray()
        self._buffer: list[bytes] = []
        self._buffered = 0

    async def write(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        if len(self._head) < HEAD_BYTES:
            self._head += data[: HEAD_BYTES - len(self._head)]
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered >= WRITE_BYTES:
            await self._flush()

    async def finish(self) -> SpooledContent:
        await self._flush()
        file = self._open_file()
        await asyncio.to_thread(file.close)
        self._file = None
        return SpooledContent(self.path, self.size, self._hash.hexdigest(), bytes(self._head))

    def discard(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        self._buffer.clear()
        self.path.unlink(missing_ok=True)

    async def _flush(self) -> None:
        if not self._buffered:
            return
        piece = b"".join(self._buffer)
        self._buffer.clear()
        self._buffered = 0
        await asyncio.to_thread(self._write, piece)

    def _write(self, piece: bytes) -> None:
        file = self._open_file()
        self._hash.update(piece)  # hashlib lets go of the GIL for large updates
        file.write(piece)

    def _open_file(self) -> BinaryIO:
        if self._file is None:
            raise ValueError(f"spool file {self.path.name} was already finished or discarded")
        return self._file


class Spool:
    """This process's spool directory. ``Spool.open`` creates it, checks it is writable and removes the
    directories crashed processes left behind; ``close`` removes it."""

    def __init__(self, directory: Path, lock: BinaryIO) -> None:
        self.directory = directory
        self._lock = lock

    @classmethod
    def open(cls, root: Path | None = None) -> Spool:
        root = root if root is not None else default_root()
        try:
            root.mkdir(parents=True, exist_ok=True)
            directory = root / f"{os.getpid()}-{secrets.token_hex(4)}"
            directory.mkdir(mode=0o700)
            lock = (directory / LOCK_FILE).open("wb")
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            probe = directory / ".probe"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise SpoolUnavailable(
                f"the spool directory {root} is not writable ({exc.strerror or type(exc).__name__}): set "
                "DMS_WORKER_SPOOL_DIR to a writable directory (on Kubernetes, mount an emptyDir volume there)"
            ) from None
        spool = cls(directory, lock)
        removed = remove_leftovers(root, keep=directory)
        if removed:
            log.info("spool_leftovers_removed", directories=removed, spool_dir=str(root))
        return spool

    def new_file(self) -> SpoolWriter:
        return SpoolWriter(self.directory / f"{secrets.token_hex(8)}.part")

    def files(self) -> list[Path]:
        """The spool files that exist now (for tests and diagnostics)."""
        return sorted(p for p in self.directory.iterdir() if p.name != LOCK_FILE)

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
        with contextlib.suppress(OSError):
            self._lock.close()


def default_root() -> Path:
    return Path(tempfile.gettempdir()) / "dms-upload-worker"


def remove_leftovers(root: Path, keep: Path) -> int:
    """Removes the process directories under ``root`` whose owner is gone (their lock can be taken)."""
    removed = 0
    for directory in root.iterdir():
        if directory == keep or not PROCESS_DIRECTORY.fullmatch(directory.name) or not directory.is_dir():
            continue
        if directory.is_symlink():
            continue
        lock_path = directory / LOCK_FILE
        try:
            if not lock_path.exists():
                if time.time() - directory.stat().st_mtime < UNLOCKED_GRACE_S:
                    continue  # another process may be between mkdir and taking its lock
            else:
                with lock_path.open("rb") as lock:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises while its owner runs
        except OSError:
            continue
        shutil.rmtree(directory, ignore_errors=True)
        removed += 1
    return removed
