from __future__ import annotations

import json
import uuid

import pytest

from tests.reading import read
from worker.commands.parsing import command_from_json, decode_body
from worker.contracts import MAX_FILE_NAME_CHARS, Command, DeleteCommand, UploadCommand
from worker.errors import InvalidCommand
from worker.producer import delete_command, upload_command

# Fixed, not random: DOC is in a test id, which every pytest-xdist process must collect alike.
TENANT, DOC = uuid.UUID("7f3c2a9e-5b1d-4e8a-9c6f-2d4b8e1a3c57"), uuid.UUID("c1e8b4d2-9a7f-4c3e-8b5d-6f2a1e9c4b80")


def parse_command(body: bytes) -> Command:
    """What the consumer's read does before it checks the envelope (tests/reading.py runs all of it)."""
    return command_from_json(decode_body(body))


def test_round_trip_of_published_commands() -> None:
    upload = upload_command(TENANT, DOC, "a.txt", "text/plain", b"hi")
    parsed = parse_command(upload.model_dump_json().encode())
    assert isinstance(parsed, UploadCommand) and parsed.data.document_id == DOC and parsed.id == upload.id
    assert isinstance(parse_command(delete_command(TENANT, DOC).model_dump_json().encode()), DeleteCommand)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"type": "dms.rename"}', "unknown command type"),
        (
            b'{"type": "dms.delete", "specversion": "1.0", "id": "x", "source": "s", "data": {"tenant_id": "nope",'
            b' "document_id": "' + str(DOC).encode() + b'"}}',
            "data.tenant_id",
        ),
    ],
)
def test_malformed_commands_say_why(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidCommand, match=reason):
        parse_command(body)


def test_upload_needs_exactly_one_content_source() -> None:
    raw = json.loads(upload_command(TENANT, DOC, "a.txt", "text/plain", b"hi").model_dump_json())
    raw["data"]["content_url"] = "https://files.example/a.txt"
    with pytest.raises(InvalidCommand, match="exactly one"):
        parse_command(json.dumps(raw).encode())


def test_validation_errors_do_not_echo_huge_input() -> None:
    raw = json.loads(upload_command(TENANT, DOC, "a.txt", "text/plain", b"hi").model_dump_json())
    raw["data"]["sha256"] = "z" * 100_000
    with pytest.raises(InvalidCommand) as caught:
        parse_command(json.dumps(raw).encode())
    assert len(caught.value.message) < 500


def test_best_effort_ids_from_an_invalid_command() -> None:
    body = json.dumps({"type": "dms.upload", "data": {"tenant_id": str(TENANT), "document_id": "bad"}}).encode()
    invalid = read(body)
    assert invalid.ids == {"command_type": "dms.upload", "tenant_id": TENANT} and invalid.command is None
    garbage = read(b"garbage")
    assert garbage.ids == {} and isinstance(garbage.error, InvalidCommand)


def test_long_file_names_are_accepted_for_shortening_up_to_an_abuse_bound() -> None:
    raw = json.loads(upload_command(TENANT, DOC, "a.txt", "text/plain", b"hi").model_dump_json())
    raw["data"]["file_name"] = "n" * 10_000 + ".txt"
    parsed = parse_command(json.dumps(raw).encode())
    assert isinstance(parsed, UploadCommand) and len(parsed.data.file_name) == 10_004
    raw["data"]["file_name"] = "n" * (MAX_FILE_NAME_CHARS + 1)
    with pytest.raises(InvalidCommand, match="file_name"):
        parse_command(json.dumps(raw).encode())
