"""The spool: files counted, hashed and removed; a crashed process's directory removed at the next start; a
directory that cannot be written said at once."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from worker.commands import spool as spool_module
from worker.commands.spool import HEAD_BYTES, InlineContent, Spool, SpoolUnavailable


async def test_a_spooled_file_is_counted_hashed_and_removed_on_close(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path)
    data = os.urandom(3 * 1024 * 1024 + 17)
    writer = spool.new_file()
    for start in range(0, len(data), 100_000):
        await writer.write(data[start : start + 100_000])
    content = await writer.finish()
    assert (content.size, content.sha256, content.head) == (
        len(data),
        hashlib.sha256(data).hexdigest(),
        data[:HEAD_BYTES],
    )
    for _ in range(2):  # every send gets a fresh stream from the first byte
        with content.open() as file:
            assert file.read() == data
    content.close()
    content.close()
    assert spool.files() == []
    spool.close()
    assert not spool.directory.exists()


async def test_a_discarded_writer_leaves_nothing(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path)
    writer = spool.new_file()
    await writer.write(b"x" * (2 * 1024 * 1024))
    writer.discard()
    assert spool.files() == []
    spool.close()


def test_inline_content_is_a_content_source_over_bytes() -> None:
    content = InlineContent(b"hello")
    assert (content.size, content.sha256, content.head) == (5, hashlib.sha256(b"hello").hexdigest(), b"hello")
    assert content.open().read() == b"hello"


def test_a_crashed_process_leaves_its_directory_to_the_next_start(tmp_path: Path) -> None:
    # A process that opens a spool, writes a file and dies without cleaning up (os._exit: no finally, no atexit).
    code = (
        "import os, sys; from pathlib import Path; from worker.commands.spool import Spool; "
        "s = Spool.open(Path(sys.argv[1])); (s.directory / 'x.part').write_bytes(b'left over'); os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    (left,) = list(tmp_path.iterdir())
    running = Spool.open(tmp_path)  # a live process's directory is never touched
    assert not left.exists() and running.directory.exists()
    unrelated = tmp_path / "not-ours"
    unrelated.mkdir()
    Spool.open(tmp_path).close()
    assert running.directory.exists() and unrelated.exists()
    running.close()


def test_a_spool_dir_that_is_a_file_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(SpoolUnavailable, match=r"spool directory .*file is not writable.*DMS_WORKER_SPOOL_DIR"):
        Spool.open(tmp_path / "file")


def test_a_directory_that_cannot_be_written_is_one_clear_error(tmp_path: Path) -> None:
    read_only = tmp_path / "ro"
    read_only.mkdir(mode=0o500)
    if os.access(read_only, os.W_OK):
        pytest.skip("running as root: permissions are not enforced")
    with pytest.raises(SpoolUnavailable, match=r"spool directory .*ro is not writable.*DMS_WORKER_SPOOL_DIR"):
        Spool.open(read_only)


def test_the_default_directory_is_under_the_temp_dir() -> None:
    assert spool_module.default_root().name == "dms-upload-worker"
