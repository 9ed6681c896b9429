"""The producer side of large files: an inline upload the broker would refuse is refused first, with a pointer
to content_url; the publish CLI sends a reference with the file's size and sha256."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest

from worker.cli import build_parser, command_from_args
from worker.cli_errors import UsageError
from worker.contracts import UploadCommand
from worker.producer import (
    DEFAULT_MAX_MESSAGE_SIZE,
    MessageTooLarge,
    check_fits_inline,
    inline_message_size,
    upload_command,
    upload_command_by_url,
)

TENANT = uuid.uuid4()


def test_the_largest_inline_file_fits_and_one_byte_more_does_not() -> None:
    largest = max(n for n in range(12_000_000, 13_000_000, 3) if inline_message_size(n) <= DEFAULT_MAX_MESSAGE_SIZE)
    check_fits_inline(largest)
    with pytest.raises(MessageTooLarge, match="content_url"):
        check_fits_inline(largest + 3)
    command = upload_command(TENANT, uuid.uuid4(), "a.txt", "text/plain", b"x" * largest)
    assert len(command.model_dump_json(exclude_none=True)) <= DEFAULT_MAX_MESSAGE_SIZE


def test_an_inline_upload_over_the_broker_limit_is_refused_before_it_is_encoded() -> None:
    with pytest.raises(MessageTooLarge, match=r"more than the broker takes \(1000 bytes.*--url"):
        upload_command(TENANT, uuid.uuid4(), "a.txt", "text/plain", b"x" * 1000, max_message_size=1000)
    upload_command(TENANT, uuid.uuid4(), "a.txt", "text/plain", b"x" * 1000, max_message_size=None)


def test_an_upload_by_reference_carries_the_url_and_the_declared_integrity() -> None:
    command = upload_command_by_url(
        TENANT, uuid.uuid4(), "big.pdf", "application/pdf", "https://blobs.example/b", size=5
    )
    assert (str(command.data.content_url), command.data.content_base64, command.data.size) == (
        "https://blobs.example/b",
        None,
        5,
    )


def test_the_publish_cli_sends_a_reference_or_refuses_a_file_too_large_inline(tmp_path: Path) -> None:
    path = tmp_path / "big.pdf"
    path.write_bytes(b"%PDF" + b"x" * 5000)
    args = build_parser().parse_args(["publish", str(path), "--tenant", str(TENANT)])
    with pytest.raises(UsageError, match="content_url instead"):
        command_from_args(args, max_message_size=4096)
    args = build_parser().parse_args(["publish", str(path), "--tenant", str(TENANT), "--url", "http://blobs/big.pdf"])
    command = command_from_args(args, max_message_size=4096)
    assert isinstance(command, UploadCommand)
    assert (command.data.file_name, command.data.size, command.data.sha256) == (
        "big.pdf",
        5004,
        hashlib.sha256(path.read_bytes()).hexdigest(),
    )
    assert str(command.data.content_url) == "http://blobs/big.pdf" and command.data.mime_type == "application/pdf"
