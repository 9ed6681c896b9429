"""Starts the worker once the broker answers: a failed try is logged once (``broker_unreachable`` with the
attempt and the wait) and retried after a backoff of 1, 2, 4 ... up to 30 s (each wait jittered down to half:
``worker.backoff``), until it works or the process is told to stop, also in the middle of a try that hangs.
Only an unreachable broker is retried; wrong credentials or a missing plugin end at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import aiormq.exceptions
import structlog

from worker import backoff
from worker.runtime.app import Worker
from worker.tasks import cancel_and_wait

log = structlog.get_logger(__name__)

# aiormq's AMQPConnectionError is a ConnectionError; a failed DNS lookup is an OSError.
UNREACHABLE = (ConnectionError, OSError, TimeoutError)
NOT_RETRIED = (aiormq.exceptions.ProbableAuthenticationError,)


def backoff_delays(first_s: float = 1.0, cap_s: float = 30.0) -> Iterator[float]:
    """The nominal schedule 1, 2, 4, 8, 16, 30, 30, ... (pure); the waits taken are jittered."""
    return backoff.exponential(first_s, cap_s)


@contextlib.contextmanager
def _quiet(*logger_names: str) -> Iterator[None]:
    """Our own line says why a try failed; the libraries' lines for the same failure are left out."""
    loggers = [logging.getLogger(name) for name in logger_names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


async def _unless_stopped(start: Coroutine[Any, Any, None], stop: asyncio.Event) -> bool:
    """Runs ``start`` unless ``stop`` is set first (then cancels it and returns False)."""
    starting = asyncio.ensure_future(start)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if starting.done():
        starting.result()  # raises what the try raised
        return True
    await cancel_and_wait([starting])
    return False


async def start_when_broker_answers(
    make_worker: Callable[[], Worker], stop: asyncio.Event, delays: Iterator[float] | None = None
) -> Worker | None:
    """A started worker, or ``None`` when ``stop`` was set while waiting for the broker."""
    for attempt, delay in enumerate(delays or backoff.with_jitter(backoff_delays()), start=1):
        worker = make_worker()
        try:
            with _quiet("aiormq.connection", "aio_pika.robust_connection"):
                started = await _unless_stopped(worker.start(), stop)
            if not started:  # told to stop while a try hung (a silent address, a slow handshake)
                return None  # the cancelled start closed what it had opened, as a failed one does
        except NOT_RETRIED:
            raise  # the broker answered and refused us (before UNREACHABLE: it is a ConnectionError too)
        except UNREACHABLE as exc:
            log.warning("broker_unreachable", attempt=attempt, retry_in_s=delay, error=str(exc) or type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return None
            continue
        if attempt > 1:
            log.info("broker_reached", attempt=attempt)
        return worker
    return None
