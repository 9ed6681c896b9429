"""Start-up waits for the broker: backoff 1, 2, 4 ... 30 s; only an unreachable broker is retried."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import aiormq.exceptions
import pytest

from worker.runtime import startup


def test_the_backoff_doubles_up_to_thirty_seconds() -> None:
    delays = startup.backoff_delays()
    assert [next(delays) for _ in range(8)] == [1, 2, 4, 8, 16, 30, 30, 30]


class FakeWorker:
    def __init__(self, failure: BaseException | None) -> None:
        self.failure = failure

    async def start(self) -> None:
        if self.failure is not None:
            raise self.failure


async def test_it_retries_until_the_broker_answers() -> None:
    failures: list[BaseException | None] = [ConnectionRefusedError(), TimeoutError(), None]
    made: list[FakeWorker] = []

    def make() -> Any:
        made.append(FakeWorker(failures[len(made)]))
        return made[-1]

    worker = await startup.start_when_broker_answers(make, asyncio.Event(), iter([0.0] * 5))
    assert cast(Any, worker) is made[-1] and len(made) == 3


async def test_wrong_credentials_end_at_once() -> None:
    refused = aiormq.exceptions.ProbableAuthenticationError("ACCESS_REFUSED")
    with pytest.raises(aiormq.exceptions.ProbableAuthenticationError):
        await startup.start_when_broker_answers(lambda: cast(Any, FakeWorker(refused)), asyncio.Event(), iter([0.0]))


async def test_a_stop_while_waiting_ends_the_wait() -> None:
    stop = asyncio.Event()
    stop.set()
    worker = await startup.start_when_broker_answers(
        lambda: cast(Any, FakeWorker(ConnectionRefusedError())), stop, iter([30.0])
    )
    assert worker is None
