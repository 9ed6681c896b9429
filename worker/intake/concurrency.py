"""How many commands a replica runs against DMS at once: an adaptive limit at or under ``IN_FLIGHT_LIMIT``
(pure, no I/O; the dispatcher, ``worker.intake.dispatcher``, applies it).

A replica holds up to ``IN_FLIGHT_LIMIT`` deliveries (its prefetch, which bounds memory), but past the
point where DMS answers without queueing, running more of them at once adds no throughput, only waiting:
every command's round trip grows, another tenant's single upload's as much as the bulk's (Little's law).
So the replica follows the DMS round trip the way TCP Vegas and Netflix's concurrency-limits do. Each
window it compares the mean round trip of small requests (content over ``SAMPLED_BODY_LIMIT`` is timed by
its size, not by queueing, and is left out) with what the same requests took with nothing queued: for each
operation, its fastest single round trip of the last minute (a query and a write differ even at rest):

* mean above ``tolerance`` x fastest + ``slack_s``: requests are queueing; the limit shrinks in proportion
  (never below half, never under ``minimum``);
* DMS says it is overloaded (429 or 503) or does not answer (refused, timed out, cut off) for at least
  ``OVERLOADED_SHARE`` of a window's requests: the limit shrinks by a quarter, at most once a window. A few
  documents failing with 503 on their own (a locked or broken object, a scripted fault) among many answered
  requests are not overload: shrinking for them would make every other document wait for theirs;
* otherwise, if the limit was reached during the window, it grows by an eighth (at least 1), up to
  ``maximum``.

A DMS answering in constant time, however slow, never looks congested, so a latency-bound fleet keeps every
slot (the scaling case); a saturated one (DMS, or the replicas' own CPU) trades throughput for round
trips near the no-load figure (tests/bench/README.md, the fairness runs).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

SAMPLED_BODY_LIMIT = 1024 * 1024  # bytes: larger requests are timed by their size, not by queueing
OVERLOADED_STATUSES = frozenset({429, 503})
# Of a window's requests, answered 429/503 or not at all, before the limit shrinks. Not any single one: a few
# documents failing on their own (5 % of them failing 3 times each make ~13 % of createDocument calls 503s)
# are not DMS shedding load. Google's SRE book's client-side adaptive throttling reacts only once accepted
# requests fall under half of those sent (K = 2); a quarter here reacts sooner.
OVERLOADED_SHARE = 0.25
MIN_SAMPLES = 3  # a window with fewer round trips decides nothing


@dataclass
class AdaptiveLimit:
    maximum: int
    minimum: int = 8
    window_s: float = 0.5
    tolerance: float = 2.0
    slack_s: float = 0.05  # keeps answers of a few milliseconds from looking congested at the first jitter
    memory_windows: int = 120  # an operation's fastest round trip is remembered for this many windows (a minute)
    limit: int = field(init=False)
    # Per operation (a query and a content write take different times even when nothing queues): the
    # fastest round trip of each recent window, and this window's samples.
    _fastest: dict[str, deque[float]] = field(default_factory=dict, init=False)
    _samples: dict[str, list[float]] = field(default_factory=dict, init=False)
    _started: float | None = field(default=None, init=False)
    _reached: bool = field(default=False, init=False)
    _overloaded: int = field(default=0, init=False)  # this window's requests answered 429/503 or not at all
    _requests: int = field(default=0, init=False)  # this window's requests

    def __post_init__(self) -> None:
        self.minimum = max(1, min(self.minimum, self.maximum))
        self.limit = self.maximum

    def fastest_s(self, operation: str) -> float | None:
        """The operation's fastest round trip remembered (its no-load estimate), or None if never seen."""
        known = [*self._fastest.get(operation, ()), *self._samples.get(operation, ())]
        return min(known) if known else None

    def note_running(self, running: int) -> None:
        """The gate ran ``running`` commands at once just now."""
        if running >= self.limit:
            self._reached = True

    def observe(self, operation: str, seconds: float, status: int, body_bytes: int, now: float) -> bool:
        """One DMS request's round trip (status 0: no answer); True if the limit changed."""
        if self._started is None:
            self._started = now
        self._requests += 1
        if status in OVERLOADED_STATUSES or status == 0:  # refused, timed out or cut off: DMS is struggling
            self._overloaded += 1
        elif body_bytes <= SAMPLED_BODY_LIMIT:
            self._samples.setdefault(operation, []).append(seconds)
        if now - self._started < self.window_s:
            return False
        return self._close_window(now)

    def _close_window(self, now: float) -> bool:
        before = self.limit
        count = sum(len(times) for times in self._samples.values())
        overloaded = self._overloaded >= max(1.0, OVERLOADED_SHARE * self._requests)
        if overloaded:
            self.limit = max(self.minimum, math.floor(self.limit * 0.75))
        elif count >= MIN_SAMPLES:
            total_s = no_load_s = 0.0
            for operation, times in self._samples.items():
                remembered = self._fastest.setdefault(operation, deque(maxlen=self.memory_windows))
                remembered.append(min(times))
                total_s += sum(times)
                no_load_s += min(remembered) * len(times)
            self.limit = next_limit(
                self.limit,
                total_s / count,
                no_load_s / count,
                self._reached,
                self.minimum,
                self.maximum,
                self.tolerance,
                self.slack_s,
            )
        self._started, self._reached = now, False  # "reached" speaks for this window only
        if count >= MIN_SAMPLES or overloaded:
            self._samples, self._overloaded, self._requests = {}, 0, 0
        return self.limit != before


def next_limit(
    limit: int,
    mean_s: float,
    no_load_s: float,
    reached: bool,
    minimum: int,
    maximum: int,
    tolerance: float = 2.0,
    slack_s: float = 0.05,
) -> int:
    """The next window's limit from this window's mean round trip and what the same requests took with
    nothing queued (each operation's fastest remembered)."""
    acceptable = no_load_s * tolerance + slack_s
    if mean_s > acceptable:
        return max(minimum, math.floor(limit * max(0.5, acceptable / mean_s)))
    if reached:
        return min(maximum, limit + max(1, limit // 8))
    return limit
