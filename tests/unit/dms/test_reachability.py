"""DMS reachability: marked down by a call that got no answer, probed until it answers, then the event that
ends the failed commands' backoff is set (once per outage)."""

from __future__ import annotations

import asyncio

from worker.dms.reachability import Reachability


class Probe:
    def __init__(self) -> None:
        self.answers = False
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1
        if not self.answers:
            raise ConnectionError("no answer")


async def test_reachable_until_a_call_gets_no_answer() -> None:
    reach = Reachability(Probe(), interval_s=0.01)
    assert reach.reachable and reach.back() is None
    reach.answered()  # an answer while reachable changes nothing
    assert reach.reachable


async def test_one_lost_answer_on_a_fine_link_is_cleared_by_the_first_probe() -> None:
    probe = Probe()
    probe.answers = True
    reach = Reachability(probe, interval_s=10)
    reach.no_answer()
    back = reach.back()
    assert back is not None and reach.down() is None  # suspect: calls still go out
    await asyncio.wait_for(back.wait(), 1)
    assert reach.reachable and probe.calls == 1


async def test_probed_until_it_answers_then_the_waiting_are_woken_once() -> None:
    probe = Probe()
    reach = Reachability(probe, interval_s=0.01)
    reach.no_answer()
    back = reach.back()
    assert back is not None and not back.is_set() and not reach.reachable
    await asyncio.sleep(0.005)
    assert reach.down() is back  # the first probe got no answer either: calls fail at once
    reach.no_answer()  # more failures in the same outage share its event and its one prober
    assert reach.back() is back
    await asyncio.sleep(0.05)
    assert probe.calls >= 2 and not back.is_set()
    probe.answers = True
    await asyncio.wait_for(back.wait(), 1)
    assert reach.reachable and reach.back() is None
    calls = probe.calls
    await asyncio.sleep(0.05)
    assert probe.calls == calls  # no probing while reachable
    reach.no_answer()  # the next outage has an event of its own
    assert reach.back() is not None and reach.back() is not back
    await reach.close()


async def test_any_call_answering_ends_the_outage_before_the_probe_does() -> None:
    reach = Reachability(Probe(), interval_s=10)
    reach.no_answer()
    back = reach.back()
    reach.answered()
    assert back is not None and back.is_set() and reach.reachable
    await reach.close()
