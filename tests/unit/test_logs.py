from __future__ import annotations

import json

import structlog

from worker import logs


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
