"""The adaptive concurrency limit follows the DMS round trip (pure)."""

from __future__ import annotations

from worker.intake.concurrency import SAMPLED_BODY_LIMIT, AdaptiveLimit, next_limit


def run_window(
    limit: AdaptiveLimit, start: float, seconds: float, running: int, body: int = 100, operation: str = "create"
) -> float:
    """Ten round trips of ``seconds`` over one window; returns the time after it."""
    now = start
    for _ in range(10):
        limit.note_running(running)
        now += limit.window_s / 9
        limit.observe(operation, seconds, 201, body, now)
    return now


def test_a_constant_round_trip_however_slow_keeps_every_slot() -> None:
    limit = AdaptiveLimit(maximum=65)
    now = 0.0
    for _ in range(50):
        now = run_window(limit, now, 1.0, running=65)
    assert limit.limit == 65


def test_queueing_shrinks_the_limit_and_relief_grows_it_back() -> None:
    limit = AdaptiveLimit(maximum=64, minimum=8)
    now = run_window(limit, 0.0, 0.1, running=10)  # no load: 100 ms
    assert limit.limit == 64
    for _ in range(10):
        now = run_window(limit, now, 0.6, running=64)  # six times the no-load round trip
    assert 8 <= limit.limit <= 30
    shrunk = limit.limit
    for _ in range(20):
        now = run_window(limit, now, 0.11, running=limit.limit)  # round trips back to normal, limit reached
    assert limit.limit > shrunk


def test_the_limit_grows_only_when_it_was_reached() -> None:
    limit = AdaptiveLimit(maximum=64)
    now = run_window(limit, 0.0, 0.1, running=10)
    limit.limit = 20
    for _ in range(5):
        now = run_window(limit, now, 0.1, running=5)  # only 5 of 20 used: growing would prove nothing
    assert limit.limit == 20


def test_large_bodies_are_not_taken_for_queueing() -> None:
    limit = AdaptiveLimit(maximum=64)
    now = run_window(limit, 0.0, 0.1, running=10)
    for _ in range(10):
        now = run_window(limit, now, 5.0, running=64, body=SAMPLED_BODY_LIMIT + 1)
    assert limit.limit == 64


def test_an_overloaded_or_silent_dms_shrinks_it_by_a_quarter_per_window() -> None:
    limit = AdaptiveLimit(maximum=64, minimum=8)
    limit.observe("create", 0.1, 429, 0, 0.0)
    limit.observe("create", 0.1, 503, 0, 0.6)
    assert limit.limit == 48
    limit.observe("create", 30.0, 0, 0, 1.2)  # no answer (timed out)
    assert limit.limit == 36
    for i in range(20):
        limit.observe("create", 0.1, 429, 0, 1.8 + i * 0.6)
    assert limit.limit == 8  # never under the minimum


def test_a_few_documents_failing_on_their_own_are_not_overload() -> None:
    """4 of 40 requests answered 503 (10 %, documents' own failures): every slot stays; 10 of 40 (25 %) shrink."""
    limit = AdaptiveLimit(maximum=64, minimum=8)
    now = 0.0
    for window in range(10):
        for i in range(40):
            limit.note_running(64)
            now += limit.window_s / 39
            limit.observe("create", 0.1, 503 if i % 10 == 0 else 201, 100, now)
        assert limit.limit == 64, window
    for i in range(40):
        now += limit.window_s / 39
        limit.observe("create", 0.1, 503 if i % 4 == 0 else 201, 100, now)
    assert limit.limit == 48


def test_operations_that_differ_at_rest_are_not_taken_for_queueing() -> None:
    # One upload: a fast query, then a slower write; both constant, nothing queues.
    limit = AdaptiveLimit(maximum=65)
    now = 0.0
    for _ in range(40):
        for _ in range(5):
            limit.note_running(65)
            now += 0.05
            limit.observe("versions", 0.01, 200, 0, now)
            limit.observe("create", 0.3, 201, 1000, now)
    assert limit.limit == 65
    assert limit.fastest_s("versions") == 0.01 and limit.fastest_s("create") == 0.3


def test_thin_windows_decide_nothing_and_forget_that_the_limit_was_reached() -> None:
    limit = AdaptiveLimit(maximum=64)
    now = run_window(limit, 0.0, 0.1, running=10)
    limit.limit = 20
    limit.note_running(20)  # reached, in a window with too few round trips to judge
    limit.observe("create", 0.1, 201, 100, now + 0.6)
    assert limit.limit == 20
    for t in (0.7, 0.8, 0.9, 1.2):  # the next window judges, but "reached" was the earlier window's
        limit.observe("create", 0.1, 201, 100, now + t)
    assert limit.limit == 20
    limit.note_running(20)
    for t in (1.3, 1.4, 1.5, 1.8):
        limit.observe("create", 0.1, 201, 100, now + t)
    assert limit.limit == 22  # reached in a window that judged: it grows


def test_next_limit_shrinks_in_proportion_but_never_below_half() -> None:
    assert next_limit(64, mean_s=0.5, no_load_s=0.1, reached=True, minimum=8, maximum=64) == 32
    assert next_limit(64, mean_s=0.3, no_load_s=0.1, reached=True, minimum=8, maximum=64) == 53
    assert next_limit(40, mean_s=0.2, no_load_s=0.1, reached=True, minimum=8, maximum=64) == 45
    assert next_limit(64, mean_s=0.2, no_load_s=0.1, reached=True, minimum=8, maximum=64) == 64
    assert next_limit(10, mean_s=5.0, no_load_s=0.1, reached=True, minimum=8, maximum=64) == 8
