"""Every wait of the worker's retry schedules comes from ``worker.backoff``: jittered within known bounds, so
replicas that failed together do not try again together."""

from __future__ import annotations

import itertools
import random

import pytest

from worker import backoff
from worker.amqp.connection import next_attempt
from worker.errors import DmsUnavailable
from worker.results.policy import decide
from worker.runtime.startup import backoff_delays


class TestJittered:
    """One wait: uniform between ``(1 - spread)`` and all of the nominal wait."""

    @pytest.mark.parametrize(("spread", "low"), [(backoff.SPREAD, 5.0), (backoff.RENEWAL_SPREAD, 9.0)])
    def test_stays_within_its_bounds_and_uses_them(self, spread: float, low: float) -> None:
        waits = [backoff.jittered(10.0, spread) for _ in range(2000)]
        assert all(low <= wait <= 10.0 for wait in waits)
        assert min(waits) < low + (10 - low) / 10 and max(waits) > 10 - (10 - low) / 10  # the whole range

    def test_no_wait_stays_no_wait(self) -> None:
        assert backoff.jittered(0.0) == 0.0

    def test_the_nominal_exponential_schedule_doubles_up_to_its_cap(self) -> None:
        assert list(itertools.islice(backoff.exponential(0.5, 4.0), 6)) == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


class TestReplicas:
    """Two replicas (two processes, each with its own generator seeded by the OS) take different schedules."""

    @staticmethod
    def replica() -> backoff.Jitter:
        rng = random.Random()  # what each process gets: seeded from os.urandom

        def jitter(nominal_s: float) -> float:
            return backoff.jittered(nominal_s, rng=rng)

        return jitter

    def test_start_up_broker_retries(self) -> None:
        a, b = (
            list(itertools.islice(backoff.with_jitter(backoff_delays(), j), 6))
            for j in (self.replica(), self.replica())
        )
        assert a != b
        for schedule in (a, b):
            assert all(n / 2 <= wait <= n for wait, n in zip(schedule, [1, 2, 4, 8, 16, 30], strict=True))

    def test_command_retries(self) -> None:
        delays_ms = [1_000, 5_000, 30_000, 120_000]
        a, b = (
            [decide(DmsUnavailable("503"), n, delays_ms, j).delay_ms for n in (1, 2, 3, 4)]
            for j in (self.replica(), self.replica())
        )
        assert a != b

    def test_broker_reconnects(self) -> None:
        a, b = (
            [next_attempt(0, 1, failures=f, jitter=j)[1] for f in range(1, 7)] for j in (self.replica(), self.replica())
        )
        assert a != b
