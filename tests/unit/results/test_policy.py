from __future__ import annotations

import pytest

from worker.errors import DmsUnavailable, FileTooLarge, RateLimited, UnknownTenant, VirusDetected, WorkerError
from worker.results.policy import Outcome, decide

DELAYS = [1000, 5000, 30000]


def nominal(delay_s: float) -> float:
    """No jitter: the configured schedule itself."""
    return delay_s


def test_success_is_acked_with_a_success_event() -> None:
    assert decide(None, 1, DELAYS).outcome is Outcome.SUCCEEDED


@pytest.mark.parametrize("error", [FileTooLarge("x"), VirusDetected("x")])
def test_permanent_errors_fail_at_once_whatever_the_attempt(error: WorkerError) -> None:
    assert decide(error, 1, DELAYS).outcome is Outcome.FAILED
    assert decide(error, 4, DELAYS).outcome is Outcome.FAILED


def test_transient_errors_walk_the_backoff_schedule_then_dead_letter() -> None:
    error = DmsUnavailable("503")
    assert [decide(error, attempt, DELAYS, nominal).delay_ms for attempt in (1, 2, 3)] == DELAYS
    assert all(decide(error, a, DELAYS).outcome is Outcome.RETRY for a in (1, 2, 3))
    assert decide(error, 4, DELAYS).outcome is Outcome.DEAD_LETTER


def test_retry_after_raises_the_delay_to_a_configured_step() -> None:
    assert decide(RateLimited("429", retry_after=3), 1, DELAYS, nominal).delay_ms == 5000
    assert decide(RateLimited("429", retry_after=0.5), 1, DELAYS, nominal).delay_ms == 1000
    assert decide(RateLimited("429", retry_after=999), 1, DELAYS, nominal).delay_ms == 30000


def test_the_delays_taken_are_jittered_between_half_and_all_of_each_step() -> None:
    error = DmsUnavailable("503")
    taken = [[decide(error, attempt, DELAYS).delay_ms or 0 for attempt in (1, 2, 3)] for _ in range(200)]
    for schedule in taken:
        assert all(step // 2 <= delay <= step for delay, step in zip(schedule, DELAYS, strict=True))
    assert len({tuple(schedule) for schedule in taken}) > 100  # not one schedule for everybody


def test_jitter_never_goes_under_the_retry_after_it_honours() -> None:
    def least(delay_s: float) -> float:
        return delay_s / 2  # the lowest the default jitter can go

    assert decide(RateLimited("429", retry_after=3), 1, DELAYS, least).delay_ms == 3000  # not 2500
    assert decide(RateLimited("429", retry_after=0.2), 1, DELAYS, least).delay_ms == 500
    assert decide(RateLimited("429", retry_after=999), 1, DELAYS, least).delay_ms == 30000  # the largest step, whole


def test_no_retries_configured_means_dead_letter_after_one_attempt() -> None:
    assert decide(DmsUnavailable("x"), 1, []).outcome is Outcome.DEAD_LETTER


def test_an_unclassified_worker_error_does_not_loop() -> None:
    assert decide(WorkerError("bug"), 1, DELAYS).outcome is Outcome.FAILED


def test_a_tenant_without_a_destination_goes_to_the_dlq_at_once() -> None:
    """The one permanent error that is dead-lettered: configuration fixes it, then the DLQ is replayed."""
    assert decide(UnknownTenant("no destination"), 1, DELAYS).outcome is Outcome.DEAD_LETTER
    assert decide(UnknownTenant("no destination"), 1, DELAYS).delay_ms is None
