"""The mistakes people make with the CLI, each turned into one line that names the problem and the fix.

Exit codes: 0 done (with ``--wait``: the command succeeded); 1 a runtime failure (the broker cannot be
reached, the command failed, an unexpected error); 2 a usage error (arguments or configuration); 3 ``--wait``
gave up before the result came. ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

import aio_pika.exceptions
import aiormq.exceptions
from pydantic import ValidationError
from pydantic_settings import SettingsError
from yarl import URL

from worker.amqp.topology import BrokerLacksFeature, BrokerOutOfResources
from worker.commands.spool import SpoolUnavailable
from worker.producer import MessageTooLarge

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_TIMEOUT = 0, 1, 2, 3

_PLATFORM_VARIABLES = {"vcap_services": "VCAP_SERVICES", "service_binding_root": "SERVICE_BINDING_ROOT"}
_FIELD = re.compile(r'field "(\w+)"')


class CliError(Exception):
    """Ends the command with ``str(self)`` on one line of stderr and ``exit_code``."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class UsageError(CliError):
    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


def variable_of(field: str) -> str:
    return _PLATFORM_VARIABLES.get(field, f"DMS_WORKER_{field.upper()}")


def safe_url(url: str) -> str:
    """The broker URL without its password."""
    parsed = URL(url)
    return str(parsed.with_password("***")) if parsed.password else url


def _settings_problem(exc: SettingsError | ValidationError) -> UsageError:
    if isinstance(exc, ValidationError):
        first = exc.errors(include_input=False, include_url=False)[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        where = ".".join(str(part) for part in first["loc"][1:])
        message = str(first["msg"]).removeprefix("Value error, ")
        detail = f"invalid: {message}" + (f" (at {where})" if where else "")
    else:
        found = _FIELD.search(str(exc))
        field = found.group(1) if found else "?"
        cause = exc.__cause__
        detail = f"not valid JSON ({cause})" if isinstance(cause, json.JSONDecodeError) else "not in the expected form"
    return UsageError(f"{variable_of(field)} is {detail}: fix it (the README's Configuration table shows the form)")


def explain(exc: BaseException, amqp_urls: Sequence[str] = ()) -> CliError:
    """One line for ``exc``; unknown errors say so and point at ``--debug``."""
    if isinstance(exc, CliError):
        return exc
    if isinstance(exc, SettingsError | ValidationError):
        return _settings_problem(exc)
    broker = f"the broker at {', '.join(safe_url(url) for url in amqp_urls)}" if amqp_urls else "the broker"
    if isinstance(exc, aiormq.exceptions.ProbableAuthenticationError):
        return CliError(f"{broker} refused the user name or password: fix DMS_WORKER_AMQP_URL")
    if isinstance(exc, aiormq.exceptions.ChannelNotFoundEntity):
        return CliError(
            f"{exc.args[0] if exc.args else exc}: start the worker once (it declares the exchanges and queues) "
            "or check the DMS_WORKER_*_EXCHANGE / *_QUEUE names"
        )
    if isinstance(exc, aio_pika.exceptions.DeliveryError):
        return CliError(
            "the broker could not route the command (no queue bound): start the worker once so it declares "
            "its queues, or check DMS_WORKER_COMMAND_EXCHANGE"
        )
    if isinstance(exc, BrokerLacksFeature | BrokerOutOfResources):
        return CliError(str(exc))
    if isinstance(exc, SpoolUnavailable | MessageTooLarge):
        return UsageError(str(exc))
    if isinstance(exc, ConnectionError | OSError | TimeoutError | aiormq.exceptions.AMQPConnectionError):
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        return CliError(
            f"cannot reach {broker} ({reason}): start RabbitMQ or fix DMS_WORKER_AMQP_URL (or DMS_WORKER_AMQP_URLS)"
        )
    text = str(exc).splitlines()[0] if str(exc) else ""
    return CliError(f"unexpected {type(exc).__name__}: {text} (run with --debug for the traceback)")
