"""``python -m tests.bench console``: the operator console on a large DLQ.

Fills a DLQ of its own with ``--count`` dead letters (uploads of 1 KB, three error codes over four tenants,
put there with the headers the worker writes), starts the console on it and measures:

- the index pass: how long the console takes to read the whole DLQ once (one ``basic.get`` per message,
  each held until the pass ends), and the broker CPU it costs;
- the groups page: ``GET /dead-letters`` (groups by error code x tenant, the first page of the list) once the
  index is built, median of 5, and the same page filtered by one error code and one tenant;
- the replay of the whole set as one job at an unlimited rate: dead letters replayed per second, and the
  broker CPU it costs (no worker runs: the replayed commands wait in the shard queues, which are deleted with
  the topology afterwards).

Broker CPU is the user + system time of the ``beam.smp`` listening on the AMQP port, so anything else that
uses the broker meanwhile counts too. ``--screenshot PATH`` also saves the dead-letters page as a PNG (how
the README's picture is made, with a small ``--count``).
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from pathlib import Path

import aio_pika
import aiohttp
from pydantic import TypeAdapter

from tests.bench.compare_bench import rabbitmq_pid
from tests.bench.worker_bench import cpu_seconds
from tests.integration.conftest import settings_for
from tests.integration.dead_letter_fill import fill_dlq
from worker.amqp import topology
from worker.amqp.names import members_exchange_name
from worker.console.app import running_console
from worker.settings import ConsoleUser, Settings

TOKEN = "bench-operator-token-0123456789"
CODES = ("dms_unavailable", "unknown_tenant", "rate_limited")
TENANTS = [uuid.uuid5(uuid.NAMESPACE_URL, f"urn:bench-tenant:{i}") for i in range(4)]


def kinds(count: int) -> list[tuple[uuid.UUID, str, int]]:
    """``count`` dead letters over every tenant x error code pair, the first pairs larger."""
    pairs = [(tenant, code) for code in CODES for tenant in TENANTS]
    weights = [len(pairs) - i for i in range(len(pairs))]
    shares = [count * w // sum(weights) for w in weights]
    shares[0] += count - sum(shares)
    return [(tenant, code, n) for (tenant, code), n in zip(pairs, shares, strict=True) if n]


async def timed_get(http: aiohttp.ClientSession, url: str) -> float:
    started = time.perf_counter()
    async with http.get(url, headers={"Authorization": f"Bearer {TOKEN}"}) as answer:
        assert answer.status == 200, answer.status
        await answer.read()
    return time.perf_counter() - started


async def screenshot(url: str, path: Path) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        await page.goto(url + "signin")
        await page.fill("input[name=token]", TOKEN)
        await page.click("button[type=submit]")
        await page.wait_for_url("**/dead-letters")
        await page.select_option("select[name=error_code]", CODES[0])
        await page.click("#filters button[type=submit]")
        await page.wait_for_url("**/dead-letters?*")
        await page.locator("#letters tbody input[type=checkbox]").first.check()
        await page.screenshot(path=str(path), full_page=False)
        await browser.close()
    print(f"[console] screenshot of the dead-letters page: {path}")


async def main(count: int, shot: Path | None) -> None:
    settings: Settings = settings_for(f"test.console-bench.{uuid.uuid4().hex[:8]}")
    users = TypeAdapter(dict[str, ConsoleUser]).validate_python({"bench": {"role": "operator", "token": TOKEN}})
    settings = settings.model_copy(update={"console_port": 0, "console_users": users})
    broker = rabbitmq_pid(settings.amqp_url.get_secret_value())
    connection = await aio_pika.connect_robust(settings.amqp_url.get_secret_value())
    channel = await connection.channel(publisher_confirms=True)
    try:
        await topology.declare(channel, settings)
        started = time.perf_counter()
        await fill_dlq(channel, settings, kinds(count), content=b"x" * 1024, at_once=500)
        took = time.perf_counter() - started
        print(f"[console] {count} dead letters put in {settings.dead_letter_queue} in {took:.1f} s")

        cpu_before = cpu_seconds(broker) if broker else None
        started = time.perf_counter()
        async with running_console(settings) as console, aiohttp.ClientSession() as http:
            index = console.services.index
            while len(index) < count or index.scan.running:
                await asyncio.sleep(0.01)
            pass_s = time.perf_counter() - started
            pass_cpu = cpu_seconds(broker) - cpu_before if broker and cpu_before is not None else None

            page = [await timed_get(http, console.url + "dead-letters") for _ in range(5)]
            filtered_url = f"{console.url}dead-letters?error_code={CODES[1]}&tenant={TENANTS[1]}"
            filtered = [await timed_get(http, filtered_url) for _ in range(5)]
            if shot is not None:
                await screenshot(console.url, shot)

            cpu_before = cpu_seconds(broker) if broker else None
            started = time.perf_counter()
            form = {"scope": "filter", "rate": "1000000"}
            headers = {"Authorization": f"Bearer {TOKEN}"}
            replay_url = console.url + "dead-letters/replay"
            async with http.post(replay_url, data=form, headers=headers, allow_redirects=False) as answer:
                assert answer.status == 303, answer.status
                job_path = answer.headers["Location"]
            job = console.services.jobs.get(int(job_path.rsplit("/", 1)[1]))
            assert job is not None
            while not job.finished:
                await asyncio.sleep(0.01)
            replay_s = time.perf_counter() - started
            replay_cpu = cpu_seconds(broker) - cpu_before if broker and cpu_before is not None else None
            print_table(count, pass_s, pass_cpu, page, filtered, job.done, job.state, replay_s, replay_cpu)
    finally:
        await connection.close()
        await delete_everything(settings)


async def delete_everything(settings: Settings) -> None:
    """The topology and the membership exchange the console declared, on a connection of its own (one the
    run used may have been closed under it)."""
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    async with connection:
        channel = await connection.channel()
        await topology.delete_all(channel, settings)
        await channel.exchange_delete(members_exchange_name(settings.command_queue))


def print_table(
    count: int,
    pass_s: float,
    pass_cpu: float | None,
    page: list[float],
    filtered: list[float],
    replayed: int,
    state: str,
    replay_s: float,
    replay_cpu: float | None,
) -> None:
    def cpu(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f} s"

    print()
    print(f"| {count:,} dead letters | time | broker CPU |")
    print("|---|---|---|")
    print(f"| index pass (read the whole DLQ once) | {pass_s:.2f} s ({count / pass_s:,.0f}/s) | {cpu(pass_cpu)} |")
    print(f"| groups page, `GET /dead-letters` (median of 5) | {statistics.median(page) * 1000:.0f} ms | 0 |")
    print(
        f"| filtered list, one error code and tenant (median of 5) | {statistics.median(filtered) * 1000:.0f} ms | 0 |"
    )
    print(
        f"| replay of the whole set, one job ({replayed:,} replayed, {state}) | {replay_s:.2f} s "
        f"({replayed / replay_s:,.0f}/s) | {cpu(replay_cpu)} |"
    )
