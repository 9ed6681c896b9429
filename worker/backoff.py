"""Waits with jitter: the one place every retry schedule and renewal time of the worker draws its waits from.

Replicas that fail together (a broker restart, a DMS outage, tokens fetched in the same second after a
rollout) would otherwise try again together, in lockstep, and meet the recovering service as one crowd. So
every wait is drawn from ``[(1 - spread) x nominal, nominal]``: at most the nominal schedule, which the
settings and the README state, and (with the default spread of 0.5, "equal jitter") at least half of it, so
the schedule stays easy to reason about and tests keep a known upper bound. Users:

* command retries (``worker.results.policy``): ``RETRY_DELAYS_MS``, never under a ``Retry-After``;
* broker reconnects (``worker.amqp.connection``) and the start-up broker retries (``worker.runtime.startup``);
* publishes resent until confirmed (``worker.amqp.confirms``);
* token and destination renewal ahead of expiry (``worker.dms.tokens``, ``worker.dms.destination_service``),
  with a spread of a tenth.

Why no library (stamina, tenacity, backoff): they own a retry loop around one call. None of these schedules
is such a loop: aio-pika's robust connection asks for its next interval, a command in retry is parked in the
dispatcher and gives its place up, a token is renewed ahead of expiry. What they share is the wait, which is
this function.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator

SPREAD = 0.5  # backoffs: between half and all of the nominal wait
RENEWAL_SPREAD = 0.1  # renewals ahead of expiry: between 90 % and all of the nominal lifetime

# One generator per process, seeded from the OS: two replicas draw different waits.
_RANDOM = random.Random()

Jitter = Callable[[float], float]  # nominal seconds -> the wait actually taken


def jittered(nominal_s: float, spread: float = SPREAD, rng: random.Random = _RANDOM) -> float:
    """A wait drawn uniformly from ``[(1 - spread) x nominal_s, nominal_s]``."""
    if nominal_s <= 0:
        return 0.0
    return rng.uniform((1 - spread) * nominal_s, nominal_s)


def renewal(nominal_s: float) -> float:
    """When to renew something that stays good for ``nominal_s`` (a token, a looked-up destination)."""
    return jittered(nominal_s, RENEWAL_SPREAD)


def exponential(first_s: float, cap_s: float, factor: float = 2.0) -> Iterator[float]:
    """The nominal schedule ``first_s``, ``first_s x factor``, ... at most ``cap_s``, without end (pure)."""
    delay = first_s
    while True:
        yield min(delay, cap_s)
        delay *= factor


def with_jitter(nominals: Iterable[float], jitter: Jitter = jittered) -> Iterator[float]:
    """Each nominal wait of a schedule, jittered."""
    return (jitter(nominal) for nominal in nominals)
