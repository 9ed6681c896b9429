"""Network faults between the worker and DMS, with the emulator behind a network namespace of the test's own
(tests/integration/netns.py): its link cut by DROP (connections hang: no RST, no ICMP), then healed. Checked
against the recorded history (tests/integration/history.py), plus how soon results resume after the heal."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from worker.contracts import Command
from worker.producer import upload_command
from worker.testing.emulator import EmulatorConfig, RunningEmulator
from worker.testing.emulator.app import Emulator
from worker.testing.emulator.faults import FaultConfig

from .conftest import Stack, open_stack
from .history import check_history
from .netns import Namespace, available

pytestmark = [pytest.mark.integration, pytest.mark.network]


@pytest.fixture
def namespace() -> Iterator[Namespace]:
    with available():
        made = Namespace.create()
    try:
        yield made
    finally:
        made.delete()


@asynccontextmanager
async def emulator_behind(namespace: Namespace, config: EmulatorConfig) -> AsyncIterator[RunningEmulator]:
    emulator = Emulator(config)
    runner = web.AppRunner(emulator.make_app(), access_log=None)
    await runner.setup()
    sock = namespace.listen()
    await web.SockSite(runner, sock).start()
    port = int(sock.getsockname()[1])
    try:
        yield RunningEmulator(emulator, f"http://{namespace.peer_ip}:{port}/", port)
    finally:
        await runner.cleanup()


@pytest.mark.timeout(300)
async def test_dms_unreachable_for_a_while_loses_nothing_and_recovers_at_once(namespace: Namespace) -> None:
    documents, per_document, outage_s = 50, 20, 60.0
    async with AsyncExitStack() as exits:
        emulator = await exits.enter_async_context(
            emulator_behind(namespace, EmulatorConfig(faults=FaultConfig(answer_ms=25)))
        )
        stack = await open_stack(
            exits,
            emulator=emulator,
            retry_delays_ms=[1_000, 5_000, 30_000, 120_000],  # the defaults
        )
        tenant = uuid.uuid4()
        docs = [uuid.uuid4() for _ in range(documents)]
        commands = [
            upload_command(tenant, doc, "a.txt", "text/plain", f"{doc}:{n}".encode())
            for n in range(per_document)
            for doc in docs
        ]
        arrivals: list[tuple[float, dict[str, Any]]] = []
        events: list[dict[str, Any]] = []

        async def publish() -> None:
            for command in commands:
                await stack.send(command)
                await asyncio.sleep(1 / 25)

        wanted, all_in = {c.id for c in commands}, asyncio.Event()

        async def collect() -> None:
            while True:
                (event,) = await stack.next_events(1, timeout=3600)
                events.append(event)
                arrivals.append((time.monotonic(), event))
                wanted.discard(event["data"]["command_id"])
                if not wanted:
                    all_in.set()

        publishing, collecting = asyncio.create_task(publish()), asyncio.create_task(collect())
        await asyncio.sleep(6)
        namespace.blackout()
        cut = time.monotonic()
        await asyncio.sleep(outage_s)
        namespace.heal()
        healed = time.monotonic()
        await publishing
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_in.wait(), 120)
        await asyncio.sleep(1)  # a repeat outcome would come now
        collecting.cancel()
        verdict = check_history(commands, events, emulator.emulator.state)
        after = sorted(t - healed for t, e in arrivals if t > healed and e["type"].endswith(".succeeded"))
        first = after[0] if after else None
        before = sum(1 for t, _ in arrivals if cut - 4 <= t < cut) / 4
        during = sum(1 for t, _ in arrivals if cut <= t < healed)
        rate_after = sum(1 for t in after if t <= 5) / 5
        print(
            f"\nDMS cut for {outage_s:.0f} s: {verdict}; {during} results during the cut; first result "
            f"{first if first is None else round(first, 2)} s after the heal; results/s: {before:.1f} before the cut, "
            f"{rate_after:.1f} in the 5 s after the heal; attempts: "
            f"{sorted(Counter(e['data']['attempts'] for e in events).items())}"
        )
        assert verdict.ok and not verdict.failed, verdict  # nothing lost, duplicated, reordered or failed
        assert first is not None and first <= 5.0
        assert rate_after >= 0.8 * before  # the backlog drains at least as fast as the link ran before


async def uploads_per_s(
    stack: Stack, documents: int, per_document: int
) -> tuple[float, list[Command], list[dict[str, Any]]]:
    tenant = uuid.uuid4()
    docs = [uuid.uuid4() for _ in range(documents)]
    commands: list[Command] = [
        upload_command(tenant, doc, "a.txt", "text/plain", f"{doc}:{n}".encode())
        for n in range(per_document)
        for doc in docs
    ]
    started = time.monotonic()
    for command in commands:
        await stack.send(command)
    events: list[dict[str, Any]] = []
    last = await stack.events_for({c.id for c in commands}, events, within=240)  # then it watches for repeats
    return len(commands) / (last - started), commands, events


@pytest.mark.timeout(360)
async def test_a_lossy_slow_link_to_dms_loses_nothing(namespace: Namespace) -> None:
    """5 % of packets lost each way on the link (nftables) and DMS answering in 200 +- 100 ms (this kernel has
    no netem, so the latency is the emulator's): 1,000 uploads all succeed, in order, one version each."""
    async with AsyncExitStack() as exits:
        config = EmulatorConfig(faults=FaultConfig(answer_ms=200, answer_jitter_ms=100, seed=5))
        emulator = await exits.enter_async_context(emulator_behind(namespace, config))
        stack = await open_stack(exits, emulator=emulator, retry_delays_ms=[1_000, 5_000, 30_000, 120_000])
        await uploads_per_s(stack, 10, 1)  # the repository and the connections exist before either run
        clean_rate, _, _ = await uploads_per_s(stack, 50, 20)
        namespace.lose_packets(5)
        lossy_rate, commands, events = await uploads_per_s(stack, 50, 20)
        verdict = check_history(commands, events, emulator.emulator.state)
        print(
            f"\n1,000 uploads over a link losing 5 % of packets, DMS at 200 +- 100 ms: {verdict}; "
            f"{lossy_rate:.1f} uploads/s against {clean_rate:.1f} on the clean link ({lossy_rate / clean_rate:.2f}x)"
        )
        assert verdict.ok and not verdict.failed, verdict
