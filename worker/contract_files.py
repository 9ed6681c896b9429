"""Generates ``contracts/`` (JSON Schemas + AsyncAPI) from the pydantic models and the broker definitions
in ``deploy/rabbitmq/`` from the topology code, and spots drift."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from worker.broker_definitions import definitions
from worker.contracts import CLOUDEVENTS_CONTENT_TYPE, json_schemas
from worker.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
CONTRACTS_DIR = REPO_ROOT / "contracts"
DEFINITIONS_FILE = REPO_ROOT / "deploy" / "rabbitmq" / "definitions.json"


def asyncapi(settings: Settings | None = None) -> dict[str, Any]:
    s = settings or Settings(_env_file=None)

    def message(name: str, title: str) -> dict[str, Any]:
        return {
            "name": name,
            "title": title,
            "contentType": CLOUDEVENTS_CONTENT_TYPE,
            "payload": {"$ref": f"./{name}.schema.json"},
        }

    def exchange(name: str) -> dict[str, Any]:
        return {
            "amqp": {"is": "routingKey", "exchange": {"name": name, "type": "topic", "durable": True, "vhost": "/"}}
        }

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "dms-upload-worker",
            "version": "1.0.0",
            "description": "Upload/delete commands in, result events out. CloudEvents 1.0 structured mode; "
            "AMQP message_id = event id, type property = event type.",
        },
        "channels": {
            "commands": {
                "address": "{routingKey}",
                "description": f"Exchange {s.command_exchange!r} (topic). Routing keys: upload, delete. "
                f"Lands in the ingress quorum queue {s.command_queue!r}, is routed by document to "
                f"{s.command_queue}.shard.<n> (single active consumer each, so per-document order holds); "
                f"commands whose retries run out land in {s.dead_letter_queue!r}.",
                "parameters": {"routingKey": {"enum": ["upload", "delete"]}},
                "messages": {
                    "upload": message("upload-command", "Upload a document (new major version)"),
                    "delete": message("delete-command", "Delete a document with all versions"),
                },
                "bindings": exchange(s.command_exchange),
            },
            "results": {
                "address": "{routingKey}",
                "description": f"Exchange {s.result_exchange!r} (topic). Routing keys: upload.succeeded, "
                "upload.failed, delete.succeeded, delete.failed.",
                "parameters": {
                    "routingKey": {"enum": ["upload.succeeded", "upload.failed", "delete.succeeded", "delete.failed"]}
                },
                "messages": {
                    "uploadSucceeded": message("upload-succeeded", "Upload written to DMS"),
                    "deleteSucceeded": message("delete-succeeded", "Document deleted (or already absent)"),
                    "failed": message("command-failed", "Command failed for good or was dead-lettered"),
                },
                "bindings": exchange(s.result_exchange),
            },
        },
        "operations": {
            "consumeCommands": {"action": "receive", "channel": {"$ref": "#/channels/commands"}},
            "publishResults": {"action": "send", "channel": {"$ref": "#/channels/results"}},
        },
    }


def rendered() -> dict[Path, str]:
    files = {
        CONTRACTS_DIR / f"{name}.schema.json": json.dumps(schema, indent=2, sort_keys=True) + "\n"
        for name, schema in json_schemas().items()
    }
    files[CONTRACTS_DIR / "asyncapi.yaml"] = yaml.safe_dump(asyncapi(), sort_keys=False)
    files[DEFINITIONS_FILE] = json.dumps(definitions(Settings(_env_file=None)), indent=2) + "\n"
    return files


def stale() -> list[str]:
    return [
        str(path.relative_to(REPO_ROOT))
        for path, text in rendered().items()
        if not path.exists() or path.read_text() != text
    ]


def write() -> list[str]:
    changed = stale()
    for path, text in rendered().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return changed
