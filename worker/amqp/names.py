"""Every AMQP name the worker puts on the wire besides the configured ones: message headers and the rules
that derive queue and exchange names from the configured command queue.

The configured names (command and result exchanges, command, dead-letter and results queues) are settings
(``worker.settings``); everything derived from them, and every header we read or write, is spelled here
and nowhere else.
"""

from __future__ import annotations

from typing import Any, Final

# -- headers we write ------------------------------------------------------------------------------

ATTEMPT_HEADER: Final = "x-attempt"
FIRST_ATTEMPT_HEADER: Final = "x-first-attempt-at"
DEAD_LETTERED_AT_HEADER: Final = "x-dead-lettered-at"
ERROR_CODE_HEADER: Final = "x-error-code"
ERROR_MESSAGE_HEADER: Final = "x-error-message"
REPLAY_HEADER: Final = "x-replay-count"
ORIGINAL_EXCHANGE_HEADER: Final = "x-original-exchange"
ORIGINAL_ROUTING_KEY_HEADER: Final = "x-original-routing-key"

WORKER_ONLY_HEADERS: Final = (
    ATTEMPT_HEADER,
    FIRST_ATTEMPT_HEADER,
    DEAD_LETTERED_AT_HEADER,
    ERROR_CODE_HEADER,
    ERROR_MESSAGE_HEADER,
    ORIGINAL_EXCHANGE_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER,
)
"""Headers only the worker writes (on dead-letter copies). A producer's values for them are ignored, and
replay drops them: they never steer retries or routing."""

# -- headers a producer may write, which the worker reads and carries on (W3C trace context) ----------

TRACEPARENT_HEADER: Final = "traceparent"
TRACESTATE_HEADER: Final = "tracestate"
TRACE_HEADERS: Final = (TRACEPARENT_HEADER, TRACESTATE_HEADER)
"""Also the names of the CloudEvents distributed-tracing attributes, which win over the headers."""

HEADERS: Final[dict[str, dict[str, Any]]] = {
    ATTEMPT_HEADER: {"type": "integer", "minimum": 1, "description": "Dead-letter copies: attempts made."},
    FIRST_ATTEMPT_HEADER: {
        "type": "string",
        "format": "date-time",
        "description": "Dead-letter copies: when the command was first dead-lettered.",
    },
    DEAD_LETTERED_AT_HEADER: {
        "type": "string",
        "format": "date-time",
        "description": "Dead-letter copies: when the command was dead-lettered.",
    },
    ERROR_CODE_HEADER: {"type": "string", "description": "Dead-letter copies: the error code of the last attempt."},
    ERROR_MESSAGE_HEADER: {
        "type": "string",
        "maxLength": 1000,
        "description": "Dead-letter copies: the error message of the last attempt.",
    },
    ORIGINAL_EXCHANGE_HEADER: {
        "type": "string",
        "description": "Dead-letter copies: the command exchange the command came through (replay returns it there).",
    },
    ORIGINAL_ROUTING_KEY_HEADER: {
        "type": "string",
        "description": "Dead-letter copies: the command's routing key (replay publishes it with the same key).",
    },
    REPLAY_HEADER: {
        "type": "integer",
        "minimum": 1,
        "description": "Replayed commands: how often ops replayed them from the dead-letter queue.",
    },
    TRACEPARENT_HEADER: {
        "type": "string",
        "description": "W3C trace context of the producer's span, if the CloudEvent carries no traceparent "
        "attribute; the worker's spans and the result event continue that trace.",
    },
    TRACESTATE_HEADER: {"type": "string", "description": "W3C trace state that goes with traceparent."},
}
"""Our headers as JSON Schema (the AsyncAPI document lists them from here)."""

# -- headers RabbitMQ writes when it dead-letters a message itself (x-delivery-limit) ---------------

DEATH_HEADER: Final = "x-death"
BROKER_DEATH_HEADERS: Final = (
    DEATH_HEADER,
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
)

# -- names derived from the configured command queue -----------------------------------------------


MODULUS_HASH_EXCHANGE: Final = "x-modulus-hash"
"""RabbitMQ's exchange type that sends routing key K to bound queue number ``phash2(K) mod queues``."""


def command_exchange_name(prefix: str, kind: str) -> str:
    """``kind`` is ``upload`` or ``delete``: one exchange each, so broker permissions can tell them apart."""
    return f"{prefix}.{kind}"


def shard_queue_name(command_queue: str, shard: int) -> str:
    return f"{command_queue}.shard.{shard}"


def members_exchange_name(command_queue: str) -> str:
    """The fanout exchange replicas announce themselves and the shards they hold on."""
    return f"{command_queue}.members"


def census_exchange_name(command_queue: str) -> str:
    """The fanout exchange replicas answer "how many commands of this tenant do you hold?" on."""
    return f"{command_queue}.census"


TOMBSTONE_INFIX: Final = "offboarded"


def tombstone_exchange_name(command_exchange: str, tenant_id: str) -> str:
    """A durable exchange whose existence says the tenant was offboarded (``worker.amqp.tombstones``)."""
    return f"{command_exchange}.{TOMBSTONE_INFIX}.{tenant_id}"
