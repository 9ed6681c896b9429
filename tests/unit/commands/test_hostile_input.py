"""Property-based tests: whatever arrives, the pure stages answer with a typed error or a safe value."""

from __future__ import annotations

import contextlib
import hashlib
import io
import ipaddress
import json
import uuid
import zipfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from tests.reading import read
from worker.amqp.routing import command_destination
from worker.commands import validation
from worker.commands.content import decode_inline, host_allowed
from worker.errors import FileTooLarge, InvalidCommand, PermanentError, UnsupportedFileType
from worker.intake.consumer import Incoming
from worker.producer import upload_command
from worker.settings import DEFAULT_EXTENSIONS, DEFAULT_MIME_TYPES, Settings

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)


def refused_cleanly(incoming: Incoming) -> InvalidCommand:
    """A command the consumer's read refused with a reason of its own, not by way of a parser bug (which it
    would also turn into ``invalid_command``, as "command could not be read")."""
    assert incoming.command is None and isinstance(incoming.error, InvalidCommand)
    assert not incoming.error.message.startswith("command could not be read"), incoming.error.message
    assert incoming.error.code == "invalid_command" and len(incoming.error.message) < 2000
    return incoming.error


# The consumer's real read path (CommandConsumer.read): size limit, JSON, the command model, the envelope.
@given(st.binary(max_size=2000), st.sampled_from(["", "dms.commands.upload", None]), st.text(max_size=80))
def test_arbitrary_bytes_are_refused_cleanly_by_the_consumers_read(
    body: bytes, exchange: str | None, routing_key: str
) -> None:
    incoming = read(body, exchange=exchange, routing_key=routing_key)
    if incoming.command is None:
        refused_cleanly(incoming)


@given(json_values, st.sampled_from(["dms.upload", "dms.delete", "dms.other", None]), st.booleans())
def test_arbitrary_json_data_is_refused_cleanly_by_the_consumers_read(
    data: object, event_type: str | None, amqp_type_agrees: bool
) -> None:
    body = json.dumps({"specversion": "1.0", "id": "x", "source": "s", "type": event_type, "data": data}).encode()
    incoming = read(body, exchange="dms.commands.upload", type=event_type if amqp_type_agrees else "dms.upload")
    refused_cleanly(incoming)  # no data of these shapes is a whole command
    assert incoming.ids.get("command_id") == "x"  # what a failed event names


@settings(max_examples=40)  # three reads each
@given(st.builds(lambda tenant, document: (tenant, document), st.uuids(), st.uuids()), json_values)
def test_valid_commands_in_hostile_envelopes_are_refused_cleanly(
    ids: tuple[uuid.UUID, uuid.UUID], junk: object
) -> None:
    tenant, document = ids
    body = upload_command(tenant, document, "a.txt", "text/plain", b"x").model_dump_json().encode()
    exchange, routing_key = command_destination("dms.commands", "dms.upload", tenant, document)
    assert read(body, exchange=exchange, routing_key=routing_key).command is not None  # the envelope as sent
    refused_cleanly(read(body, exchange=exchange, routing_key=json.dumps(junk)[:255]))
    refused_cleanly(read(body, exchange=exchange, routing_key=routing_key, type="dms.delete"))


def test_a_body_over_the_limit_is_refused_before_it_is_decoded() -> None:
    settings = Settings(_env_file=None, max_file_size=1000)
    error = refused_cleanly(read(b"[" * 10_000_000, settings))
    assert "at most" in error.message and "content_url" in error.message


@given(st.text(max_size=300), st.integers(min_value=1, max_value=255))
def test_sanitised_names_have_no_path_or_control_characters(name: str, limit: int) -> None:
    try:
        cleaned = validation.sanitise_file_name(name, limit)
    except InvalidCommand:
        return
    assert cleaned and len(cleaned) <= limit
    assert "/" not in cleaned and "\\" not in cleaned and cleaned not in {".", ".."}
    assert all(ord(ch) >= 32 and ch != "\x7f" for ch in cleaned)


@given(st.text(max_size=400))
def test_any_base64_text_decodes_or_is_refused(text: str) -> None:
    with contextlib.suppress(InvalidCommand, FileTooLarge):
        assert len(decode_inline(text, 200)) <= 200


@given(st.text(max_size=40), st.text(max_size=40), st.binary(max_size=300))
def test_type_check_answers_only_with_unsupported_file_type(name: str, mime: str, content: bytes) -> None:
    with contextlib.suppress(UnsupportedFileType):
        validation.check_file_type(name, mime, content, DEFAULT_EXTENSIONS, DEFAULT_MIME_TYPES)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)))
def test_no_ip_address_is_reachable_unless_listed(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    host = f"[{address}]" if address.version == 6 else str(address)
    assert host_allowed(URL(f"http://{host}/x"), ["files.example"]) is False


@given(
    st.sampled_from(["a.svg", "a.txt", "a.zip", "a.docx", "a.xml", "a"]),
    st.sampled_from(["image/svg+xml", "text/plain", "application/zip", "application/octet-stream"]),
    st.sampled_from([b"", b"PK\x03\x04", b"PK\x05\x06", b"<svg>", b"<?xml version='1.0'?>", b"\xff\xfe"]),
    st.binary(max_size=300),
)
def test_active_content_check_answers_only_with_unsupported_file_type(
    name: str, mime: str, prefix: bytes, content: bytes
) -> None:
    with contextlib.suppress(UnsupportedFileType):
        validation.check_active_content(name, mime, prefix + content, False, 1000)


def test_a_zip_bomb_is_judged_by_its_header_and_never_expanded() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bomb.txt", b"\0" * 200_000_000)  # 200 MB of zeros, ~200 KB compressed
    bomb = buffer.getvalue()
    assert len(bomb) < 1_000_000
    validation.check_file_type("archive.zip", "application/zip", bomb, DEFAULT_EXTENSIONS, DEFAULT_MIME_TYPES)
    try:
        validation.check_active_content("archive.zip", "application/zip", bomb, True, 100 * 1024 * 1024)
    except UnsupportedFileType as exc:
        assert "would expand to 200000000 bytes" in exc.message
    else:
        raise AssertionError("accepted a zip declaring 200 MB")


def test_lying_declarations_are_permanent_errors() -> None:
    for call in (
        lambda: validation.check_size(10, 100, 11),
        lambda: validation.check_declared_sha256(hashlib.sha256(b"x").hexdigest(), "0" * 64),
    ):
        try:
            call()
        except PermanentError as exc:
            assert exc.code == "integrity_mismatch"
        else:
            raise AssertionError("accepted a lie")


def test_uuid_fields_refuse_path_like_values() -> None:
    body = {
        "specversion": "1.0",
        "id": "x",
        "source": "s",
        "type": "dms.delete",
        "data": {"tenant_id": str(uuid.uuid4()), "document_id": "../../other-tenant"},
    }
    assert "document_id" in refused_cleanly(read(json.dumps(body).encode())).message
