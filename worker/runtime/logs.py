"""Structured logging (structlog, JSON by default) with a last-line defence against leaking secrets.

Library loggers (aio_pika, aiormq, aiohttp, asyncio) go through the same processors and renderer, so a
deployment with ``LOG_JSON=true`` gets nothing but JSON lines. A warning or error repeated word for word is
written at most once per ``REPEAT_WINDOW_S``; the next one says how many were left out (``repeated``).
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import Any, TextIO

import structlog

from worker import tracing

_SECRET_KEYS = re.compile(r"secret|token|password|authorization|credential", re.IGNORECASE)
_BEARER = re.compile(r"(?i)(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_known_secrets: set[str] = set()

REPEAT_WINDOW_S = 60.0
_LIMITED_LEVELS = {"warning", "error", "critical", "exception"}
_VOLATILE_KEYS = {"timestamp", "_record", "_from_structlog", "exc_info", "exception"}


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


class RepeatLimiter:
    """A structlog processor: an identical warning (same level, event and fields) passes at most once per
    window; the one that passes after a quiet spell carries ``repeated`` = how many were dropped."""

    def __init__(self, window_s: float = REPEAT_WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._window_s = window_s
        self._clock = clock
        self._seen: dict[str, tuple[float, int]] = {}  # key -> (when it last passed, dropped since)

    def __call__(self, _logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        level = str(event_dict.get("level", method)).lower()
        if level not in _LIMITED_LEVELS:
            return event_dict
        key = repr(sorted((k, repr(v)) for k, v in event_dict.items() if k not in _VOLATILE_KEYS))
        now = self._clock()
        passed = self._seen.get(key)
        if passed is not None and now - passed[0] < self._window_s:
            self._seen[key] = (passed[0], passed[1] + 1)
            raise structlog.DropEvent
        if passed is not None and passed[1]:
            event_dict["repeated"] = passed[1]
        if len(self._seen) > 1000:  # forget what has been quiet for a window; bounds the memory
            self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self._window_s}
        self._seen[key] = (now, 0)
        return event_dict


class _LibraryRecords(logging.Filter):
    """Runs the limiter for stdlib records before they are formatted (a formatter cannot drop a record)."""

    def __init__(self, limiter: RepeatLimiter) -> None:
        super().__init__()
        self._limiter = limiter

    def filter(self, record: logging.LogRecord) -> bool:
        fields = {"level": record.levelname.lower(), "logger": record.name, "event": record.getMessage()}
        try:
            passed = self._limiter(None, record.levelname.lower(), fields)
        except structlog.DropEvent:
            return False
        if "repeated" in passed:
            record.repeated = passed["repeated"]
        return True


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (tests swap it)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def configure(level: str = "INFO", json_output: bool = True, stream: TextIO | None = None) -> None:
    renderer: Any = structlog.processors.JSONRenderer() if json_output else structlog.dev.ConsoleRenderer()
    limiter = RepeatLimiter()
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            tracing.add_trace_ids,
            structlog.processors.add_log_level,
            limiter,
            stamp,
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Library loggers: the same look, through structlog's ProcessorFormatter.
    handler: logging.Handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.addFilter(_LibraryRecords(limiter))
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(allow=["repeated"]),
                stamp,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact_secrets,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(numeric_level)
