from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import jsonschema
import pytest
import yaml

from worker import contract_files
from worker.amqp.names import HEADERS
from worker.contracts import json_schemas
from worker.producer import delete_command, upload_command

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_contract_files_match_the_models() -> None:
    stale = contract_files.stale(REPO_ROOT)
    assert stale == [], f"contracts/ is out of date: run `python -m worker contracts --write` ({stale})"


def test_the_contract_files_are_made_from_the_defaults_whatever_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A deployment's own names (``DMS_WORKER_COMMAND_EXCHANGE``) must not make the checked-in files look stale."""
    monkeypatch.setenv("DMS_WORKER_COMMAND_EXCHANGE", "elsewhere.commands")
    monkeypatch.setenv("DMS_WORKER_SHARD_COUNT", "3")
    assert contract_files.stale(REPO_ROOT) == []


@pytest.mark.parametrize(
    ("schema", "command"),
    [
        ("upload-command", upload_command(uuid.uuid4(), uuid.uuid4(), "a.pdf", "application/pdf", b"%PDF-")),
        ("delete-command", delete_command(uuid.uuid4(), uuid.uuid4())),
    ],
)
def test_published_commands_validate_against_the_schema_files(schema: str, command) -> None:
    document = json.loads((REPO_ROOT / contract_files.CONTRACTS_DIR / f"{schema}.schema.json").read_text())
    jsonschema.validate(json.loads(command.model_dump_json(exclude_none=True)), document)


def test_schema_rejects_a_command_without_tenant() -> None:
    command = json.loads(delete_command(uuid.uuid4(), uuid.uuid4()).model_dump_json())
    del command["data"]["tenant_id"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(command, json_schemas()["delete-command"])


def test_the_asyncapi_document_lists_every_amqp_header() -> None:
    document = yaml.safe_load((REPO_ROOT / contract_files.CONTRACTS_DIR / "asyncapi.yaml").read_text())
    assert document["components"]["schemas"]["commandHeaders"]["properties"].keys() == HEADERS.keys()
    for channel in ("uploadCommands", "deleteCommands"):
        for message in document["channels"][channel]["messages"].values():
            assert message["headers"] == {"$ref": "#/components/schemas/commandHeaders"}
        assert document["channels"][channel]["bindings"]["amqp"]["exchange"]["type"] == "x-modulus-hash"


def test_the_asyncapi_document_has_no_unfilled_placeholders() -> None:
    # Only the channel address uses braces ({tenantId}.{lane}); a Python expression in braces is an f-string
    # that lost its f.
    text = (Path(__file__).resolve().parents[2] / "contracts" / "asyncapi.yaml").read_text()
    assert not re.search(r"\{[A-Za-z_.]+\(", text)
    assert "dms.commands.shard.0 .." in text
