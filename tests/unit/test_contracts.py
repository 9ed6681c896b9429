from __future__ import annotations

import json
import uuid

import jsonschema
import pytest

from worker import contract_files
from worker.command_publishing import delete_command, upload_command
from worker.contracts import json_schemas


def test_contract_files_match_the_models() -> None:
    stale = contract_files.stale()
    assert stale == [], f"contracts/ is out of date: run `python -m worker contracts --write` ({stale})"


@pytest.mark.parametrize(
    ("schema", "command"),
    [
        ("upload-command", upload_command(uuid.uuid4(), uuid.uuid4(), "a.pdf", "application/pdf", b"%PDF-")),
        ("delete-command", delete_command(uuid.uuid4(), uuid.uuid4())),
    ],
)
def test_published_commands_validate_against_the_schema_files(schema: str, command) -> None:
    document = json.loads((contract_files.CONTRACTS_DIR / f"{schema}.schema.json").read_text())
    jsonschema.validate(json.loads(command.model_dump_json(exclude_none=True)), document)


def test_schema_rejects_a_command_without_tenant() -> None:
    command = json.loads(delete_command(uuid.uuid4(), uuid.uuid4()).model_dump_json())
    del command["data"]["tenant_id"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(command, json_schemas()["delete-command"])
