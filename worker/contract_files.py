"""Generates ``contracts/`` (JSON Schemas + AsyncAPI) from the pydantic models and the broker definitions
in ``deploy/rabbitmq/`` from the topology code, and spots drift.

Paths are relative to a repository root the caller names (``python -m worker contracts --root DIR``,
default the current directory): an installed package cannot know where a checkout is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from worker.amqp.definitions import definitions
from worker.amqp.names import HEADERS, MODULUS_HASH_EXCHANGE, command_exchange_name, shard_queue_name
from worker.amqp.routing import LANES
from worker.contracts import CLOUDEVENTS_CONTENT_TYPE, json_schemas
from worker.settings import TopologySettings

CONTRACTS_DIR = Path("contracts")
DEFINITIONS_FILE = Path("deploy") / "rabbitmq" / "definitions.json"


def asyncapi(settings: TopologySettings | None = None) -> dict[str, Any]:
    s = settings or TopologySettings()

    def message(name: str, title: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "name": name,
            "title": title,
            "contentType": CLOUDEVENTS_CONTENT_TYPE,
            **({"headers": headers} if headers else {}),
            "payload": {"$ref": f"./{name}.schema.json"},
        }

    command_headers = {"$ref": "#/components/schemas/commandHeaders"}

    def exchange(name: str, kind: str = "topic") -> dict[str, Any]:
        return {"amqp": {"is": "routingKey", "exchange": {"name": name, "type": kind, "durable": True, "vhost": "/"}}}

    def command_channel(kind: str, message_name: str, title: str) -> dict[str, Any]:
        name = command_exchange_name(s.command_exchange, kind)
        return {
            "address": "{tenantId}.{lane}",
            "description": f"Exchange {name!r} ({MODULUS_HASH_EXCHANGE}): {kind} commands only, so broker "
            "permissions can grant one without the other. The routing key is the tenant UUID, a dot, and the "
            f"document's lane: the document UUID as a 128-bit number modulo {LANES} (its last hex "
            f"digit, as a decimal number). The broker hashes it to one of {shard_queue_name(s.command_queue, 0)} .. "
            f"{shard_queue_name(s.command_queue, s.shard_count - 1)} (quorum, single active consumer each), "
            "the same queue for every command of a document. A command whose exchange, routing key or AMQP "
            "type disagrees with its body fails as invalid_command. Commands whose retries run out land in "
            f"{s.dead_letter_queue!r}.",
            "parameters": {
                "tenantId": {"description": "data.tenant_id"},
                "lane": {"enum": [str(n) for n in range(LANES)], "description": "data.document_id as int mod lanes"},
            },
            "messages": {kind: message(message_name, title, command_headers)},
            "bindings": exchange(name, MODULUS_HASH_EXCHANGE),
        }

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "dms-upload-worker",
            "version": "2.0.0",
            "description": "Upload/delete commands in, result events out. CloudEvents 1.0 structured mode; "
            "the command's identity is its CloudEvent source + id; AMQP type property = event type.",
        },
        "channels": {
            "uploadCommands": command_channel("upload", "upload-command", "Upload a document (new major version)"),
            "deleteCommands": command_channel("delete", "delete-command", "Delete a document with all versions"),
            "results": {
                "address": "{routingKey}",
                "description": f"Exchange {s.result_exchange!r} (topic). Routing keys: upload.succeeded, "
                "upload.failed, delete.succeeded, delete.failed (outcomes: one per command, confirmed, the "
                "catch-all results queue binds them), upload.retrying, delete.retrying (progress notices "
                "before each retry: best effort, not confirmed, dropped when nobody binds them), and "
                "tenant.offboarded (published once by the operator's `python -m worker tenant offboard --yes` "
                "when the tenant's documents and repository are gone; confirmed; the catch-all binds it).",
                "parameters": {
                    "routingKey": {
                        "enum": [
                            "upload.succeeded",
                            "upload.failed",
                            "delete.succeeded",
                            "delete.failed",
                            "upload.retrying",
                            "delete.retrying",
                            "tenant.offboarded",
                        ]
                    }
                },
                "messages": {
                    "uploadSucceeded": message("upload-succeeded", "Upload written to DMS"),
                    "deleteSucceeded": message("delete-succeeded", "Document deleted (or already absent)"),
                    "failed": message("command-failed", "Command failed for good or was dead-lettered"),
                    "retrying": message("command-retrying", "Command met a transient error; next attempt soon"),
                    "tenantOffboarded": message(
                        "tenant-offboarded", "A tenant's documents and repository were deleted (offboarding)"
                    ),
                },
                "bindings": exchange(s.result_exchange),
            },
        },
        "operations": {
            "consumeUploads": {"action": "receive", "channel": {"$ref": "#/channels/uploadCommands"}},
            "consumeDeletes": {"action": "receive", "channel": {"$ref": "#/channels/deleteCommands"}},
            "publishResults": {"action": "send", "channel": {"$ref": "#/channels/results"}},
        },
        "components": {
            "schemas": {
                "commandHeaders": {
                    "type": "object",
                    "description": "AMQP headers the worker writes on dead-letter copies and replays "
                    "(worker.amqp.names); a producer's values for them are ignored.",
                    "properties": HEADERS,
                }
            }
        },
    }


def rendered() -> dict[Path, str]:
    """Relative path -> text, for every generated file."""
    files = {
        CONTRACTS_DIR / f"{name}.schema.json": json.dumps(schema, indent=2, sort_keys=True) + "\n"
        for name, schema in json_schemas().items()
    }
    files[CONTRACTS_DIR / "asyncapi.yaml"] = yaml.safe_dump(asyncapi(), sort_keys=False)
    files[DEFINITIONS_FILE] = json.dumps(definitions(TopologySettings()), indent=2) + "\n"
    return files


def stale(root: Path) -> list[str]:
    """The generated files under ``root`` that are missing or differ from what the code says."""
    return [
        str(path)
        for path, text in rendered().items()
        if not (root / path).exists() or (root / path).read_text() != text
    ]


def write(root: Path) -> list[str]:
    changed = stale(root)
    for path, text in rendered().items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return changed
