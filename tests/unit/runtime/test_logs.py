from __future__ import annotations

import json
import logging
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
import structlog

from worker.runtime import logs


@pytest.fixture(autouse=True)
def _forget_the_configuration() -> Iterator[None]:
    """The configured loggers hold the captured stderr, which is closed after the test."""
    yield
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


def test_secret_keys_bearer_tokens_and_registered_values_are_redacted(capsys) -> None:
    logs.configure("INFO", json_output=True)
    logs.register_secret("super-secret-value")
    log = structlog.get_logger("t")
    log.info(
        "something",
        client_secret="abc",
        access_token="tok",
        header="Authorization: Bearer eyJhbGciOi.payload.sig",
        url="amqp://guest:super-secret-value@host/",
    )
    structlog.reset_defaults()  # the configured logger holds the captured stderr
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["client_secret"] == "[REDACTED]" and line["access_token"] == "[REDACTED]"
    assert "eyJhbGciOi" not in line["header"]
    assert "super-secret-value" not in line["url"]


class TestLibraryLoggers:
    """Library loggers (aio_pika, aiormq, asyncio...) come out in the same format as our own lines."""

    def test_a_library_warning_with_a_traceback_is_one_json_line(self, capsys) -> None:
        logs.configure("INFO", json_output=True)
        try:
            raise ConnectionRefusedError("connect call failed")
        except ConnectionRefusedError:
            logging.getLogger("aiormq.connection").warning("Connection to %s failed", "amqp://h/", exc_info=True)
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1
        line = json.loads(lines[0])
        assert line["event"] == "Connection to amqp://h/ failed" and line["level"] == "warning"
        assert line["logger"] == "aiormq.connection" and "ConnectionRefusedError" in line["exception"]

    def test_library_lines_are_redacted_too(self, capsys) -> None:
        logs.configure("INFO", json_output=True)
        logs.register_secret("library-secret-value")
        logging.getLogger("aio_pika").error("cannot reach amqp://guest:library-secret-value@host/")
        assert "library-secret-value" not in capsys.readouterr().err

    def test_below_the_level_nothing_is_written(self, capsys) -> None:
        logs.configure("WARNING", json_output=True)
        logging.getLogger("aiohttp.access").info("GET /metrics")
        assert capsys.readouterr().err == ""


class TestRepeatLimiter:
    """An identical warning passes once per window; the next one after the window counts what was dropped."""

    def test_repeats_within_the_window_are_dropped_and_counted(self) -> None:
        now = [0.0]
        limiter = logs.RepeatLimiter(window_s=10, clock=lambda: now[0])

        def warn(**fields: str) -> MutableMapping[str, Any] | None:
            try:
                return limiter(None, "warning", {"event": "broker_unreachable", "level": "warning", **fields})
            except structlog.DropEvent:
                return None

        assert warn(error="refused") is not None
        now[0] = 1.0
        assert warn(error="refused") is None and warn(error="refused") is None
        assert warn(error="timeout") is not None  # different fields: a different warning
        now[0] = 11.0
        passed = warn(error="refused")
        assert passed is not None and passed["repeated"] == 2
        now[0] = 22.0
        assert "repeated" not in (warn(error="refused") or {"repeated": "dropped"})

    def test_info_lines_are_never_limited(self) -> None:
        limiter = logs.RepeatLimiter(window_s=10, clock=lambda: 0.0)
        for _ in range(3):
            assert limiter(None, "info", {"event": "worker_started", "level": "info"})

    def test_a_library_warning_every_second_is_written_once_per_window(self, capsys) -> None:
        logs.configure("INFO", json_output=True)
        for _ in range(5):
            logging.getLogger("aio_pika.robust_connection").warning("Connection attempt failed")
            structlog.get_logger("t").warning("shard_assignment_round_failed", error="ConnectionError()")
        lines = capsys.readouterr().err.strip().splitlines()
        assert [json.loads(line)["event"] for line in lines] == [
            "Connection attempt failed",
            "shard_assignment_round_failed",
        ]
