"""Structured logging (structlog, JSON by default) with a last-line defence against leaking secrets."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

_SECRET_KEYS = re.compile(r"secret|token|password|authorization|credential", re.IGNORECASE)
_BEARER = re.compile(r"(?i)(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_known_secrets: set[str] = set()


def register_secret(value: str) -> None:
    """Values that must never appear in a log line, wherever they hide (e.g. inside a URL)."""
    if len(value) >= 4:
        _known_secrets.add(value)


def redact_text(text: str) -> str:
    text = _BEARER.sub(r"\1 [REDACTED]", text)
    for secret in _known_secrets:
        text = text.replace(secret, "[REDACTED]")
    return text


def redact_secrets(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event_dict.items()):
        if _SECRET_KEYS.search(key) and key not in {"token_fetches"}:
            event_dict[key] = "[REDACTED]"
        elif isinstance(value, str):
            event_dict[key] = redact_text(value)
    return event_dict


def configure(level: str = "INFO", json_output: bool = True, stream: TextIO | None = None) -> None:
    renderer: Any = structlog.processors.JSONRenderer() if json_output else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
