"""The console's process: one broker connection, the index, the feeds, the jobs and the HTTP site, entered
in that order on one ``AsyncExitStack`` and left in reverse. It needs the broker only, never DMS credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from aiohttp import web

from worker.amqp.connection import connect_robust
from worker.console import auth
from worker.console.feed import Fleet, ResultFeed
from worker.console.index import DeadLetterIndex, ScanState, letter_from_event
from worker.console.jobs import Jobs
from worker.console.pages import Pages, Services, refuse
from worker.results.dead_letters import DeadLetterQueue, Progress
from worker.runtime.serving import start_site
from worker.settings import ConsoleSettings, Settings
from worker.tasks import cancel_and_wait

log = structlog.get_logger(__name__)

STATIC = Path(__file__).parent / "static"


def make_app(services: Services) -> web.Application:
    app = web.Application(middlewares=[auth.middleware(services.gate, refuse)], client_max_size=1024**2)
    app.add_routes(Pages(services).routes())
    app.router.add_static("/static/", STATIC, append_version=True)
    return app


@dataclass
class RunningConsole:
    services: Services
    port: int
    url: str


@contextlib.asynccontextmanager
async def running_console(settings: Settings) -> AsyncIterator[RunningConsole]:
    """The console serving on ``CONSOLE_HOST:CONSOLE_PORT`` until the block ends."""
    gate = auth.Gate(auth.console_users(settings))  # before connecting: a missing user list is a usage error
    async with contextlib.AsyncExitStack() as stack:
        connection: AbstractRobustConnection = await connect_robust(settings.broker_urls())
        stack.push_async_callback(connection.close)

        def queue(state: ScanState | None = None) -> DeadLetterQueue:
            return DeadLetterQueue(connection, settings, _StateProgress(state) if state is not None else None)

        def job_queue(progress: Progress) -> DeadLetterQueue:
            return DeadLetterQueue(connection, settings, progress)

        index = DeadLetterIndex(queue, settings.console_scan_limit)
        jobs = Jobs(job_queue, index, settings.console_scan_limit)
        stack.push_async_callback(jobs.stop)
        feed = ResultFeed(settings.console_events_kept)
        fleet = Fleet(settings.membership_heartbeat_s)

        def dead_lettered(event: dict[str, object]) -> None:
            letter = letter_from_event(event)
            if letter is not None:
                index.add(letter)

        feed.listen(dead_lettered)
        feed.listen(jobs.on_event)
        tasks = [
            asyncio.create_task(
                _again_and_again(connection, lambda ch: feed.follow(ch, settings.result_exchange), "results"),
                name="console-results",
            ),
            asyncio.create_task(
                _again_and_again(connection, lambda ch: fleet.follow(ch, settings.command_queue), "heartbeats"),
                name="console-fleet",
            ),
            asyncio.create_task(index.keep_up(), name="console-index"),
        ]

        async def stop_tasks() -> None:
            await cancel_and_wait(tasks)

        stack.push_async_callback(stop_tasks)
        services = Services(settings.view(ConsoleSettings), gate, index, jobs, feed, fleet, queue)
        runner, port = await start_site(make_app(services), settings.console_host, settings.console_port)
        stack.push_async_callback(runner.cleanup)
        url = f"http://{settings.console_host}:{port}/"
        log.info("console_started", url=url, users=len(auth.console_users(settings)))
        yield RunningConsole(services, port, url)


async def _again_and_again(
    connection: AbstractRobustConnection, follow: Callable[[AbstractChannel], Awaitable[None]], what: str
) -> None:
    """Follows ``what`` on a channel of its own until cancelled; if the broker ends it, again a second later."""
    while True:
        try:
            channel = await connection.channel()
            try:
                await follow(channel)
            finally:
                await channel.close()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("console_follow_failed", following=what, error=repr(exc))
            await asyncio.sleep(1)


class _StateProgress:
    def __init__(self, state: ScanState) -> None:
        self._state = state

    def start(self, stage: str, total: int | None) -> None:
        self._state.total, self._state.done = total, 0

    def advance(self, letter: object | None = None) -> None:
        self._state.done += 1


async def run_console(settings: Settings, stop: asyncio.Event) -> None:
    async with running_console(settings) as console:
        print(f"console: {console.url} (Ctrl-C stops)", flush=True)
        await stop.wait()
