"""Command line: ``python -m worker {run,publish,delete,results,dlq,console,topology,tenant,contracts}``, and
``demo``/``emulator``, which hand over to ``worker.testing`` (imported only then: production code never imports it).

A mistake ends with one line on stderr naming the problem and the fix, and exit code 2 (usage) or 1
(runtime); ``--debug`` shows the traceback instead (``worker.cli_errors`` has the exit codes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hashlib
import json
import logging
import mimetypes
import signal
import sys
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, NoReturn, TextIO, TypeAlias, TypeVar

import aio_pika
import aiohttp
import structlog

from worker import contract_files
from worker.amqp import topology
from worker.amqp.connection import connect_robust
from worker.amqp.tombstones import BrokerTombstones
from worker.cli_errors import EXIT_FAILED, EXIT_OK, EXIT_TIMEOUT, EXIT_USAGE, CliError, UsageError, explain
from worker.console.app import run_console
from worker.console.auth import NoConsoleUsers
from worker.contracts import Command, TenantOffboarded
from worker.dms.tls import trust_context
from worker.dms.tokens import TokenCache
from worker.errors import UnknownTenant, WorkerError
from worker.offboarding.census import take_census
from worker.offboarding.plan import OffboardingIncomplete, OffboardingRefused
from worker.offboarding.procedure import Offboarding, Pacing
from worker.producer import (
    DEFAULT_MAX_MESSAGE_SIZE,
    MessageTooLarge,
    check_fits_inline,
    delete_command,
    publish_command,
    upload_command,
    upload_command_by_url,
)
from worker.results.dead_letters import DeadLetter, DeadLetterQueue, Progress, Selection, age_seconds
from worker.results.events import ResultPublisher
from worker.results.following import (
    KINDS,
    NOTICES,
    OUTCOMES,
    EventFilter,
    ResultSubscription,
    describe_notice,
    succeeded,
)
from worker.runtime import event_loop, logs, preflight, telemetry
from worker.runtime.app import DmsClients, Worker, register_settings_secrets
from worker.runtime.progress import progress_for
from worker.runtime.startup import start_when_broker_answers
from worker.runtime.telemetry import DEFAULT_SERVICE_NAME
from worker.settings import Settings, unknown_variables

log = structlog.get_logger(__name__)

SPELLING_HINT = "check the spelling; the README's Configuration table lists the settings"


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (with where to look) instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {message} (see {self.prog} --help)\n")


class _SubcommandParser(Parser):
    """Every subcommand takes ``--debug`` too, after its name."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if kwargs.get("add_help", True):
            self.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def a_uuid(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a UUID; give one like 0b6c3f0e-2a7f-4a59-9d4e-5b8f6f0f2c11"
        ) from None


def a_readable_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text!r}: no such file; give the path of the file to upload")
    return path


def an_http_url(text: str) -> str:
    if not text.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"{text!r} is not an http(s) URL; give the address the worker fetches")
    return text


Number = TypeVar("Number", int, float)


def _number(text: str, kind: type[Number], fits: Callable[[Number], bool], wanted: str) -> Number:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {wanted}") from None
    if not fits(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not {wanted}")
    return value


def a_positive_number(text: str) -> float:
    return _number(text, float, lambda v: v > 0, "a positive number")


def a_count(text: str) -> int:
    """A whole number of at least 1."""
    return _number(text, int, lambda v: v >= 1, "a whole number of at least 1")


def a_rate(text: str) -> float:
    """Per second, 0 for no limit."""
    return _number(text, float, lambda v: v >= 0, "a rate per second (0 for no limit)")


def parse_age(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``2h``, ``1d`` -> seconds."""
    try:
        return age_seconds(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an age like 90s, 15m, 2h or 1d") from None


async def connect(settings: Settings) -> aio_pika.abc.AbstractConnection:
    """The first broker address that answers (``AMQP_URLS``, else ``AMQP_URL``); if its node goes, the
    next one, and an unconfirmed publish is sent again (``worker.amqp.connection``)."""
    return await connect_robust(settings.broker_urls())


# --- run ---------------------------------------------------------------------------------------------


async def run_worker(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    preflight.warn_if_no_destination(settings)  # before the broker wait, which may be long
    worker = await start_when_broker_answers(lambda: Worker(settings), stop)
    if worker is None:
        return  # told to stop while the broker was away
    # The collector, tuned for a process that lives on short-lived garbage: what start-up made (modules,
    # settings, topology, channels) stays for good, so it is frozen out of every collection; and the youngest
    # generation is collected every 7,000 allocations instead of 700 (each upload leaves a few hundred
    # objects; at 700 the collections took about 3 % of the worker's CPU at full speed, at 7,000 under 1 %).
    gc.collect()
    gc.freeze()
    gc.set_threshold(7000, 10, 10)
    await stop.wait()
    await worker.stop()  # grace period from DMS_WORKER_SHUTDOWN_GRACE_S


# --- publish, delete, results ------------------------------------------------------------------------


def command_from_args(args: argparse.Namespace, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> Command:
    document = args.document or uuid.uuid4()
    if args.command == "delete":
        return delete_command(args.tenant, document)
    path: Path = args.file
    mime = args.mime or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if args.url:  # by reference: the file is read (in chunks) for its size and sha256 only
        digest = hashlib.sha256()
        with path.open("rb") as file:
            while chunk := file.read(1024 * 1024):
                digest.update(chunk)
        size = path.stat().st_size
        return upload_command_by_url(
            args.tenant, document, path.name, mime, args.url, size=size, sha256=digest.hexdigest()
        )
    try:
        check_fits_inline(path.stat().st_size, max_message_size)  # before reading a large file
    except MessageTooLarge as exc:
        raise UsageError(str(exc)) from None
    return upload_command(args.tenant, document, path.name, mime, path.read_bytes(), max_message_size=None)


def print_json(value: Any) -> None:
    print(json.dumps(value), flush=True)


async def publish(settings: Settings, command: Command, wait_s: float | None = None, wait: bool = False) -> int:
    """Publishes ``command``; with ``wait``, prints its result event too and returns the exit code."""
    connection = await connect(settings)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        subscription = None
        if wait:  # bound before publishing, so the result cannot slip past
            kind = command.type.removeprefix("dms.")
            subscription = await ResultSubscription.open(
                channel, settings.result_exchange, EventFilter(kind=kind, command_id=command.id)
            )
        await publish_command(channel, command, settings.command_exchange, settings.broker_max_message_size)
        print_json({"command_id": command.id, "type": command.type, "document_id": str(command.data.document_id)})
        if subscription is None:
            return EXIT_OK
        notices: list[str] = []
        with waiting_display(sys.stderr) as show:
            try:
                event = await subscription.outcome(wait_s, lambda notice: show(remember(notices, notice)))
            except TimeoutError:
                doing = f"the worker is retrying it ({notices[-1]})" if notices else "is a worker running?"
                raise CliError(
                    f"no result for command {command.id} within {wait_s:g} s (it stays queued): {doing} "
                    "Raise --timeout or follow it with `python -m worker results`",
                    EXIT_TIMEOUT,
                ) from None
    print_json(event)
    if succeeded(event):
        return EXIT_OK
    error = event.get("data", {}).get("error", {})
    print(f"{event.get('type')}: {error.get('code')}: {error.get('message')}", file=sys.stderr)
    return EXIT_FAILED


def remember(notices: list[str], notice: dict[str, Any]) -> str:
    notices.append(describe_notice(notice))
    return notices[-1]


@contextlib.contextmanager
def waiting_display(stream: TextIO) -> Iterator[Callable[[str], None]]:
    """Shows lines as they come; on a terminal also the seconds waited, on one line that each shown line
    replaces."""
    started = time.monotonic()
    ticker: asyncio.Task[None] | None = None
    tty = stream.isatty()

    def show(line: str) -> None:
        stream.write(("\r\033[K" if tty else "") + line + "\n")
        stream.flush()

    async def tick() -> None:
        while True:
            stream.write(f"\r\033[Kwaiting for the result: {time.monotonic() - started:.0f} s")
            stream.flush()
            await asyncio.sleep(1)

    if tty:
        ticker = asyncio.get_running_loop().create_task(tick())
    try:
        yield show
    finally:
        if ticker is not None:
            ticker.cancel()
            stream.write("\r\033[K")
            stream.flush()


async def follow_results(settings: Settings, args: argparse.Namespace) -> int:
    event_filter = EventFilter(args.type, args.outcome, args.tenant, args.document, args.command_id)
    connection = await connect(settings)
    async with connection:
        channel = await connection.channel()
        subscription = await ResultSubscription.open(channel, settings.result_exchange, event_filter)
        print(f"following {settings.result_exchange} ({event_filter.binding_key()}); Ctrl-C stops", file=sys.stderr)
        seen = 0
        try:
            async with asyncio.timeout(args.timeout):
                async for event in subscription.events():
                    print_json(event)
                    seen += 1
                    if args.count is not None and seen >= args.count:
                        break
        except TimeoutError:
            pass
    return EXIT_OK


# --- dlq ---------------------------------------------------------------------------------------------


class _RowsAsTheyHappen:
    """Prints each replayed or purged dead letter as it happens, next to the progress display."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress

    def start(self, stage: str, total: int | None) -> None:
        self._progress.start(stage, total)

    def advance(self, letter: DeadLetter | None = None) -> None:
        if letter is not None:
            print_json(letter.as_row())
        self._progress.advance(letter)


def selection_from_args(args: argparse.Namespace) -> Selection:
    return Selection(args.tenant, args.document, args.error_code, args.older_than, args.newer_than, args.message_id)


async def dead_letter_command(settings: Settings, args: argparse.Namespace) -> int:
    selection = selection_from_args(args)
    if args.dlq_action == "purge" and selection.selects_everything() and not args.all:
        raise UsageError("purge with no filter drops every dead letter: add a filter, or --all if that is meant")
    connection = await connect(settings)
    async with connection:
        with progress_for(sys.stderr) as progress:
            dlq = DeadLetterQueue(connection, settings, _RowsAsTheyHappen(progress))
            if args.dlq_action in {"list", "show"}:
                letters = await dlq.inspect(selection, args.scan_limit, full=args.dlq_action == "show")
                for letter in letters:
                    row = letter.as_row()
                    if args.dlq_action == "list":
                        row.pop("error_message")
                    print_json(row)
                summary = {"count": len(letters)}
            elif args.dlq_action == "replay":
                done = await dlq.replay(
                    selection, dry_run=args.dry_run, limit=args.limit, rate_per_s=args.rate, scan_limit=args.scan_limit
                )
                summary = {"would_replay" if args.dry_run else "replayed": len(done)}
            else:
                done = await dlq.purge(selection, dry_run=args.dry_run, scan_limit=args.scan_limit)
                summary = {"would_purge" if args.dry_run else "purged": len(done)}
            if args.dlq_action in {"replay", "purge"} and args.dry_run:
                for letter in done:
                    print_json(letter.as_row())
    print(json.dumps(summary), file=sys.stderr)
    return EXIT_OK


# --- console -----------------------------------------------------------------------------------------


async def console(settings: Settings, args: argparse.Namespace) -> int:
    overrides = {"console_host": args.host, "console_port": args.port}
    settings = settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await run_console(settings, stop)
    except NoConsoleUsers as exc:
        raise UsageError(str(exc)) from None
    return EXIT_OK


# --- topology ----------------------------------------------------------------------------------------


async def delete_topology(settings: Settings, yes: bool, force: bool) -> int:
    """Deletes every queue and exchange the worker declares for these settings, after saying what goes."""
    connection = await connect(settings)
    async with connection:
        queues = await topology.existing_queues(connection, settings)
        exchanges = [*topology.command_exchange_names(settings), settings.result_exchange]
        if not queues:
            print(f"no queues of the topology {settings.command_queue} exist; deleting its exchanges", file=sys.stderr)
        messages = sum(q.messages for q in queues)
        consumers = sum(q.consumers for q in queues)
        print(
            f"topology {settings.command_queue}: {len(queues)} queues holding {messages} messages, "
            f"{consumers} consumers attached; exchanges {', '.join(exchanges)}",
            file=sys.stderr,
        )
        if consumers and not force:
            raise CliError(
                f"{consumers} consumers are attached to the topology's queues (workers running?): stop them, "
                "or add --force to delete it under them"
            )
        if queues and not yes and not _confirmed(f"delete {len(queues)} queues and the {messages} messages in them?"):
            raise UsageError("not confirmed: nothing deleted (add --yes to delete without asking)")
        channel = await connection.channel()
        await topology.delete_all(channel, settings)
    print_json({"deleted_queues": len(queues), "dropped_messages": messages, "deleted_exchanges": len(exchanges)})
    return EXIT_OK


def _confirmed(question: str) -> bool:
    """Asks on the terminal; without one (a script, CI) nothing is confirmed."""
    if not sys.stdin.isatty():
        return False
    return input(f"{question} type yes: ").strip().lower() == "yes"


# --- tenant ------------------------------------------------------------------------------------------


async def offboard_tenant(settings: Settings, args: argparse.Namespace) -> int:
    """``tenant offboard``: the dry run, or with ``--yes`` the offboarding (``worker.offboarding``)."""
    tenant: uuid.UUID = args.tenant
    register_settings_secrets(settings)
    connector = aiohttp.TCPConnector(limit=settings.dms_connections, ssl=trust_context(settings.ca_bundle))
    async with aiohttp.ClientSession(connector=connector, headers={"User-Agent": settings.user_agent}) as http:
        try:
            tokens = TokenCache(http, ca_bundle=settings.ca_bundle)
            clients = DmsClients(settings, http, tokens, timeout_s=settings.dms_timeout_s, user=settings.dms_user)
            dms = clients.for_tenant(tenant)
        except UnknownTenant as exc:
            raise CliError(
                f"{exc.message}: offboarding deletes through the tenant's destination, so it comes before the "
                "destination is disconnected (SAP's order: files, repository, destination)"
            ) from None
        connection = await connect(settings)
        async with connection:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            publisher: ResultPublisher | None = None
            if args.yes:  # before anything is deleted: the event at the end must have somewhere to go
                publisher = ResultPublisher(await channel.declare_exchange(settings.result_exchange, passive=True))

            async def publish(event: TenantOffboarded) -> None:
                if publisher is None:  # a dry run publishes nothing; only --yes gets this far
                    raise RuntimeError("the offboarding event needs the --yes run's publisher")
                try:
                    await publisher.publish(event)
                except aio_pika.exceptions.DeliveryError:
                    print(f"warning: no queue is bound to {event.type}: the event was not kept", file=sys.stderr)

            pacing = Pacing(args.page_size, args.concurrency, args.rate or None)
            with progress_for(sys.stderr) as progress:
                offboarding = Offboarding(
                    dms,
                    BrokerTombstones(connection, settings.command_exchange),
                    lambda: take_census(connection, settings, settings.membership_heartbeat_s, tenant),
                    publish,
                    progress,
                    settings.event_source,
                    pacing,
                )
                try:
                    if not args.yes:
                        plan = await offboarding.plan(tenant)
                    else:
                        event = await offboarding.run(tenant, force=args.force)
                except (OffboardingRefused, OffboardingIncomplete) as exc:
                    raise CliError(str(exc)) from None
                except WorkerError as exc:  # DMS trouble: nothing is lost, the next run continues
                    raise CliError(f"DMS: {exc.code}: {exc.message}; run again to continue") from None
    if not args.yes:
        row = plan.as_row()
        print_json(row)
        repo = row["repository"]
        what = (
            f"repository {repo['id']} ({repo['name']!r}) with {row['documents']} documents ({row['versions']} "
            "versions), then the repository"
            if repo
            else "nothing in DMS (the tenant has no repository)"
        )
        print(f"dry run: --yes would lay tenant {tenant}'s tombstone and delete {what}", file=sys.stderr)
        if row["would_refuse"]:
            print(f"and would refuse now: {row['would_refuse']}", file=sys.stderr)
        return EXIT_OK
    print_json(json.loads(event.model_dump_json(exclude_none=True)))
    data = event.data
    print(
        f"tenant {tenant} offboarded: {data.documents_deleted} documents ({data.versions_deleted} versions) deleted"
        + (f" and repository {data.repository_id}" if data.repository_id else "")
        + "; its uploads now fail as tenant_offboarded. Last step (SAP's guide): disconnect its DMS destination",
        file=sys.stderr,
    )
    return EXIT_OK


async def reenable_tenant(settings: Settings, tenant: uuid.UUID) -> int:
    connection = await connect(settings)
    async with connection:
        removed = await BrokerTombstones(connection, settings.command_exchange).remove(tenant)
    print_json({"tenant_id": str(tenant), "reenabled": removed})
    if not removed:
        print(f"tenant {tenant} had no tombstone: nothing to do", file=sys.stderr)
    return EXIT_OK


# --- the parser --------------------------------------------------------------------------------------

SubParsers: TypeAlias = "argparse._SubParsersAction[_SubcommandParser]"

DLQ_ACTIONS = {
    "list": "list dead letters: ids, tenant, document, type, error code, attempts, first and last death",
    "show": "show dead letters in full: what list shows plus the error message, headers and body "
    "(long strings such as content_base64 shortened)",
    "replay": "republish to the command exchange (confirmed), then ack from the DLQ; prints each one as it goes",
    "purge": "drop dead letters for good (needs a filter, or --all)",
}


def _add_dlq_parser(sub: SubParsers) -> None:
    dlq = sub.add_parser(
        "dlq",
        help="inspect, replay or purge dead-lettered commands",
        description="Rows go to stdout as JSON lines, a summary and progress to stderr (a bar on a terminal, "
        "else JSON lines). Filters combine (all must match).",
    )
    actions = dlq.add_subparsers(dest="dlq_action", required=True)
    for name, text in DLQ_ACTIONS.items():
        action = actions.add_parser(name, help=text, description=text)
        action.add_argument("--tenant", type=a_uuid, help="only this tenant's commands")
        action.add_argument("--document", type=a_uuid, help="only this document's commands")
        action.add_argument("--error-code", help="only this error code, e.g. unknown_tenant or dms_unavailable")
        action.add_argument("--message-id", help="only the message with this id (the command's CloudEvent id)")
        action.add_argument("--older-than", type=parse_age, help="dead-lettered at least this long ago (90s, 15m, 2h)")
        action.add_argument("--newer-than", type=parse_age, help="dead-lettered at most this long ago (90s, 15m, 2h)")
        action.add_argument(
            "--scan-limit",
            type=int,
            default=10_000,
            metavar="N",
            help="look at no more than the first N messages of the DLQ; they are held unacked (invisible to "
            "others) while the command runs (default: 10000)",
        )
        if name in {"replay", "purge"}:
            action.add_argument("--dry-run", action="store_true", help="change nothing; list what would be touched")
        if name == "replay":
            action.add_argument("--limit", type=int, metavar="N", help="replay at most N messages")
            action.add_argument("--rate", type=a_positive_number, metavar="PER_S", help="at most this many per second")
        if name == "purge":
            action.add_argument("--all", action="store_true", help="allow a purge without filters (the whole DLQ)")


def _add_results_parser(sub: SubParsers) -> None:
    results = sub.add_parser(
        "results",
        help="follow result events as they are published (JSON lines on stdout)",
        description="Binds its own temporary queue to the result exchange, so it sees events published from "
        "now on and takes nothing from other consumers. Filters combine.",
    )
    results.add_argument("--tenant", type=a_uuid, help="only this tenant's events")
    results.add_argument("--document", type=a_uuid, help="only this document's events")
    results.add_argument("--type", choices=KINDS, help="only upload or only delete results")
    results.add_argument(
        "--outcome", choices=OUTCOMES + NOTICES, help="only successes, only failures, or only retry notices"
    )
    results.add_argument("--command-id", help="only the result of this command")
    results.add_argument("--count", type=int, metavar="N", help="stop after N events")
    results.add_argument("--timeout", type=a_positive_number, metavar="S", help="stop after S seconds")


def _add_wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait",
        action="store_true",
        help="wait for the result event, print it, and exit 0 if the command succeeded, 1 if it failed",
    )
    parser.add_argument(
        "--timeout", type=a_positive_number, default=60.0, metavar="S", help="with --wait: give up (exit 3) after S s"
    )


def _add_topology_parser(sub: SubParsers) -> None:
    text = (
        "delete every queue and exchange the worker declares for the DMS_WORKER_* names (shard queues, DLQ, "
        "results queue, exchanges) and the messages in them; asks first"
    )
    top = sub.add_parser("topology", help="remove the worker's queues and exchanges from the broker")
    actions = top.add_subparsers(dest="topology_action", required=True)
    delete = actions.add_parser("delete", help=text, description=text)
    delete.add_argument("--yes", action="store_true", help="do not ask (needed without a terminal)")
    delete.add_argument("--force", action="store_true", help="delete even while consumers (workers) are attached")


def _add_tenant_parser(sub: SubParsers) -> None:
    tenant = sub.add_parser("tenant", help="offboard a tenant (its documents, then its repository), or re-enable one")
    actions = tenant.add_subparsers(dest="tenant_action", required=True)
    text = (
        "Delete the tenant's external files and then its DMS repository (the one whose externalId is the tenant "
        "UUID and whose name and description this worker gives it), and keep a tombstone so that the worker "
        "does not create it again. Without --yes a dry run: prints what it would delete and changes nothing."
    )
    off = actions.add_parser(
        "offboard", help="delete a tenant's documents and repository (dry run unless --yes)", description=text
    )
    off.add_argument("--tenant", required=True, type=a_uuid, help="SAP Cloud ALM tenant UUID")
    off.add_argument("--yes", action="store_true", help="do it (without: a dry run)")
    off.add_argument(
        "--force", action="store_true", help="go on although commands for the tenant are queued or in flight"
    )
    off.add_argument(
        "--rate", type=a_rate, default=50.0, metavar="PER_S", help="at most this many deletions a second (0: no limit)"
    )
    off.add_argument("--concurrency", type=a_count, default=8, metavar="N", help="deletions at once (default: 8)")
    off.add_argument(
        "--page-size", type=a_count, default=100, metavar="N", help="documents per listing page (maxItems)"
    )
    text = "Remove the tenant's tombstone: its next upload creates a new, empty repository."
    on = actions.add_parser(
        "reenable", help="let the worker create a repository for an offboarded tenant again", description=text
    )
    on.add_argument("--tenant", required=True, type=a_uuid, help="SAP Cloud ALM tenant UUID")


def build_parser() -> Parser:
    parser = Parser(
        prog="python -m worker",
        description="dms-upload-worker. Exit codes: 0 done, 1 failed (a runtime error, or with --wait a failed "
        "command), 2 usage or configuration error, 3 --wait timed out.",
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_SubcommandParser)
    sub.add_parser("run", help="run the worker (configuration from DMS_WORKER_* environment variables)")
    pub = sub.add_parser("publish", help="publish a file as an upload command")
    pub.add_argument("file", type=a_readable_file)
    pub.add_argument("--tenant", required=True, type=a_uuid, help="SAP Cloud ALM tenant UUID")
    pub.add_argument("--document", type=a_uuid, help="document UUID (default: a new one); reuse it to add a version")
    pub.add_argument("--mime", help="declared MIME type (default: guessed from the file name)")
    pub.add_argument(
        "--url",
        type=an_http_url,
        help="send this content_url instead of the bytes (the worker fetches it; its host must be on "
        "DMS_WORKER_CONTENT_URL_ALLOWED_HOSTS); FILE is read for its name, size and sha256. Needed for files "
        "larger than the broker takes inline (DMS_WORKER_BROKER_MAX_MESSAGE_SIZE, 16 MiB by default)",
    )
    _add_wait_options(pub)
    dele = sub.add_parser("delete", help="publish a delete command (all versions of the document)")
    dele.add_argument("--tenant", required=True, type=a_uuid, help="SAP Cloud ALM tenant UUID")
    dele.add_argument("--document", required=True, type=a_uuid, help="document UUID")
    _add_wait_options(dele)
    _add_results_parser(sub)
    # These two hand their arguments (and --help) to python -m worker.testing.demo|emulator.
    sub.add_parser("demo", help="end-to-end demo against the bundled DMS EMULATOR (not SAP DMS)", add_help=False)
    sub.add_parser("emulator", help="run the DMS emulator (python -m worker.testing.emulator)", add_help=False)
    _add_dlq_parser(sub)
    con = sub.add_parser(
        "console",
        help="serve the operator console (dead letters, outcomes, fleet) in the browser",
        description="Serves on DMS_WORKER_CONSOLE_HOST:CONSOLE_PORT (127.0.0.1:8090) until Ctrl-C; users and "
        "their tokens come from DMS_WORKER_CONSOLE_USERS or DMS_WORKER_CONSOLE_USERS_FILE. Needs the broker only.",
    )
    con.add_argument("--host", help="address to listen on (default: DMS_WORKER_CONSOLE_HOST, 127.0.0.1)")
    con.add_argument("--port", type=int, help="port (default: DMS_WORKER_CONSOLE_PORT, 8090; 0 picks a free one)")
    _add_topology_parser(sub)
    _add_tenant_parser(sub)
    contracts = sub.add_parser("contracts", help="check contracts/ and deploy/rabbitmq/ against the code")
    contracts.add_argument("--write", action="store_true", help="regenerate them instead")
    contracts.add_argument("--root", type=Path, default=Path(), help="the repository checkout (default: here)")
    return parser


def _run(coroutine: Coroutine[Any, Any, int | None]) -> int:
    return event_loop.run(coroutine) or EXIT_OK


def warn_of_unknown_settings(command: str) -> None:
    """pydantic-settings ignores a ``DMS_WORKER_*`` variable that names no setting, so a misspelt one would
    leave its setting at the default without a word: said once, and the command goes on."""
    unknown = unknown_variables()
    if not unknown:
        return
    if command == "run":  # the worker's log is where its operator looks
        log.warning("unknown_settings", names=unknown, hint=SPELLING_HINT)
    else:
        print(f"warning: unknown settings ignored: {', '.join(unknown)} ({SPELLING_HINT})", file=sys.stderr)


def dispatch(args: argparse.Namespace) -> int:
    settings = Settings()
    level = settings.log_level
    if args.command == "tenant" and level.upper() == "INFO":
        level = "WARNING"  # its rows and summary say what happened; the DMS client's info lines would bury them
    logs.configure(level, settings.log_json)
    warn_of_unknown_settings(args.command)
    if args.command in {"run", "publish", "delete"}:  # off unless OTEL_* variables ask for it
        telemetry.configure(DEFAULT_SERVICE_NAME if args.command == "run" else f"{DEFAULT_SERVICE_NAME}-cli")
    if args.command != "run":  # one-shot commands report broker trouble themselves, in one line
        for library in ("aiormq", "aio_pika"):
            logging.getLogger(library).setLevel(logging.CRITICAL)
    try:
        if args.command == "run":
            return _run(run_worker(settings))
        if args.command in {"publish", "delete"}:
            return _run(
                publish(settings, command_from_args(args, settings.broker_max_message_size), args.timeout, args.wait)
            )
        if args.command == "results":
            return _run(follow_results(settings, args))
        if args.command == "topology":
            return _run(delete_topology(settings, args.yes, args.force))
        if args.command == "tenant" and args.tenant_action == "offboard":
            return _run(offboard_tenant(settings, args))
        if args.command == "tenant":
            return _run(reenable_tenant(settings, args.tenant))
        if args.command == "console":
            return _run(console(settings, args))
        return _run(dead_letter_command(settings, args))
    except KeyboardInterrupt:
        return 130
    except CliError:
        raise
    except Exception as exc:
        raise explain(exc, settings.broker_urls()) from exc


def main(argv: list[str] | None = None) -> None:
    args, rest = build_parser().parse_known_args(argv)

    if args.command == "emulator":
        from worker.testing.emulator.__main__ import main as emulator_main  # noqa: TID251 (entry point)

        emulator_main(rest)
        return
    if args.command == "demo":
        from worker.testing.demo import main as demo_main  # noqa: TID251 (entry point)

        demo_main(rest)
        return
    if rest:
        build_parser().error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "contracts":
        changed = contract_files.write(args.root) if args.write else contract_files.stale(args.root)
        print("\n".join(changed) or "contracts are up to date")
        sys.exit(1 if changed and not args.write else 0)

    try:
        code = dispatch(args)
    except Exception as exc:
        if args.debug:
            raise
        problem = explain(exc)
        print(f"error: {logs.redact_text(str(problem))}", file=sys.stderr)
        code = problem.exit_code
    sys.exit(code)
