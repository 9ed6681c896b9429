"""Whether one DMS answers at all, as the calls to it find out, and when it is back.

A call that gets no answer (a connection refused, reset, or found dead by ``DMS_STALL_TIMEOUT_S``) makes DMS
*suspect*: a probe (one plain GET on a fresh connection; any HTTP status is an answer) asks at once. If it
gets no answer either, DMS is *down*: calls fail at once instead of hanging on a link that is gone, and the
probe asks again every ``PROBE_INTERVAL_S``. When an answer comes (a probe's or any call's), the event handed
to the commands that failed meanwhile is set: their retry backoff ends there, so work resumes within a probe
interval of the heal instead of after the longest backoff, and no command waits for a DMS that is back. One
lost answer on a link that is fine costs nothing more than its own retry: the first probe answers.

Knows nothing of commands or the broker: the event travels on the transient error (``retry_sooner``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger(__name__)

PROBE_INTERVAL_S = 1.0


class Reachability:
    def __init__(self, probe: Callable[[], Awaitable[object]], interval_s: float = PROBE_INTERVAL_S) -> None:
        self._probe = probe  # raises when there is no answer
        self._interval_s = interval_s
        self._down_since: float | None = None  # suspect or down since
        self._down = False  # a probe got no answer either: calls fail at once
        self._back = asyncio.Event()
        self._prober: asyncio.Task[None] | None = None

    @property
    def reachable(self) -> bool:
        return self._down_since is None

    def down_for_s(self) -> float:
        return 0.0 if self._down_since is None else time.monotonic() - self._down_since

    def back(self) -> asyncio.Event | None:
        """While suspect or down: the event set when DMS answers again (None while reachable)."""
        return None if self._down_since is None else self._back

    def down(self) -> asyncio.Event | None:
        """While down (a probe found no answer either): the event set when DMS answers again."""
        return self._back if self._down else None

    def answered(self) -> None:
        if self._down_since is None:
            return
        log.info("dms_reachable_again", down_for_s=round(self.down_for_s(), 1))
        self._down_since, self._down = None, False
        self._back.set()
        self._back = asyncio.Event()  # for the next time
        if self._prober is not None and self._prober is not asyncio.current_task():
            self._prober.cancel()
        self._prober = None

    def no_answer(self) -> None:
        if self._down_since is not None:
            return
        self._down_since = time.monotonic()
        self._prober = asyncio.get_running_loop().create_task(self._probe_until_back(), name="dms probe")

    async def _probe_until_back(self) -> None:
        while self._down_since is not None:
            try:
                await self._probe()
            except Exception:
                if not self._down:
                    log.warning("dms_unreachable", probe_every_s=self._interval_s)
                    self._down = True
                await asyncio.sleep(self._interval_s)
                continue
            self.answered()

    async def close(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober
            self._prober = None
