"""Command line: ``python -m worker {run,publish,delete,demo,emulator,contracts}``."""

from __future__ import annotations

import argparse
import asyncio
import json
import mimetypes
import signal
import sys
import uuid
from pathlib import Path

import aio_pika

from worker import contract_files, event_loop, logs
from worker.app import Worker
from worker.command_publishing import delete_command, publish_command, upload_command
from worker.contracts import Command
from worker.dead_letters import DeadLetterQueue, Selection
from worker.settings import Settings

EMULATOR_BANNER = """
#########################################################################
#  DEMO AGAINST THE BUNDLED DMS EMULATOR - THIS IS NOT SAP DMS           #
#  Documents go to an in-memory emulator and vanish when the demo ends. #
#########################################################################
"""


async def run_worker(settings: Settings) -> None:
    worker = Worker(settings)
    await worker.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await worker.stop()  # grace period from DMS_WORKER_SHUTDOWN_GRACE_S


def command_from_args(args: argparse.Namespace) -> Command:
    tenant = uuid.UUID(args.tenant)
    document = uuid.UUID(args.document) if args.document else uuid.uuid4()
    if args.command == "delete":
        return delete_command(tenant, document)
    path = Path(args.file)
    mime = args.mime or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return upload_command(tenant, document, path.name, mime, path.read_bytes())


async def publish(settings: Settings, command: Command) -> None:
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.get_exchange(settings.command_exchange, ensure=True)
        await publish_command(exchange, command)
    print(json.dumps({"command_id": command.id, "type": command.type, "document_id": str(command.data.document_id)}))


def parse_age(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``2h``, ``1d`` -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text and text[-1] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


def _add_dlq_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dlq = sub.add_parser("dlq", help="inspect, replay or purge dead-lettered commands")
    actions = dlq.add_subparsers(dest="dlq_action", required=True)
    for name, text in (
        ("list", "list dead letters"),
        ("show", "show dead letters in full"),
        ("replay", "republish to the command queue (confirmed), then ack from the DLQ"),
        ("purge", "drop dead letters for good"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("--tenant", type=uuid.UUID)
        action.add_argument("--document", type=uuid.UUID)
        action.add_argument("--error-code")
        action.add_argument("--message-id", help="only this message")
        action.add_argument("--older-than", type=parse_age, help="dead-lettered at least this long ago (90s, 15m, 2h)")
        action.add_argument("--newer-than", type=parse_age, help="dead-lettered at most this long ago")
        action.add_argument("--scan-limit", type=int, default=10_000)
        if name in {"replay", "purge"}:
            action.add_argument("--dry-run", action="store_true")
        if name == "replay":
            action.add_argument("--limit", type=int)
            action.add_argument("--rate", type=float, help="messages per second")


async def dead_letter_command(settings: Settings, args: argparse.Namespace) -> None:
    selection = Selection(
        args.tenant, args.document, args.error_code, args.older_than, args.newer_than, args.message_id
    )
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        dlq = DeadLetterQueue(channel, settings)
        if args.dlq_action in {"list", "show"}:
            letters = await dlq.inspect(selection, args.scan_limit)
            for letter in letters:
                row = letter.as_row()
                if args.dlq_action == "list":
                    row.pop("error_message")
                print(json.dumps(row))
            print(json.dumps({"count": len(letters)}), file=sys.stderr)
        elif args.dlq_action == "replay":
            done = await dlq.replay(
                selection, dry_run=args.dry_run, limit=args.limit, rate_per_s=args.rate, scan_limit=args.scan_limit
            )
            for letter in done:
                print(json.dumps(letter.as_row()))
            print(json.dumps({"replayed" if not args.dry_run else "would_replay": len(done)}), file=sys.stderr)
        else:
            count = await dlq.purge(selection, dry_run=args.dry_run, scan_limit=args.scan_limit)
            print(json.dumps({"purged" if not args.dry_run else "would_purge": count}), file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m worker", description="dms-upload-worker")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the worker (configuration from DMS_WORKER_* environment variables)")
    pub = sub.add_parser("publish", help="publish a file as an upload command")
    pub.add_argument("file")
    pub.add_argument("--tenant", required=True, help="SAP Cloud ALM tenant UUID")
    pub.add_argument("--document", help="document UUID (default: a new one); reuse it to add a version")
    pub.add_argument("--mime", help="declared MIME type (default: guessed from the file name)")
    dele = sub.add_parser("delete", help="publish a delete command")
    dele.add_argument("--tenant", required=True)
    dele.add_argument("--document", required=True)
    demo = sub.add_parser("demo", help="end-to-end demo against the bundled DMS EMULATOR (not SAP DMS)")
    demo.add_argument("--keep-running", action="store_true", help="keep worker and emulator up afterwards")
    sub.add_parser("emulator", help="run the DMS emulator (see python -m worker.emulator --help)")
    _add_dlq_parser(sub)
    contracts = sub.add_parser("contracts", help="write contracts/ from the message models")
    contracts.add_argument("--write", action="store_true")
    args, rest = parser.parse_known_args(argv)

    if args.command == "emulator":
        from worker.emulator.__main__ import main as emulator_main

        emulator_main(rest)
        return
    if args.command == "contracts":
        changed = contract_files.write() if args.write else contract_files.stale()
        print("\n".join(changed) or "contracts are up to date")
        sys.exit(1 if changed and not args.write else 0)

    settings = Settings()
    logs.configure(settings.log_level, settings.log_json)
    if args.command == "run":
        event_loop.run(run_worker(settings))
    elif args.command in {"publish", "delete"}:
        event_loop.run(publish(settings, command_from_args(args)))
    elif args.command == "dlq":
        event_loop.run(dead_letter_command(settings, args))
    elif args.command == "demo":
        from worker.demo import run_demo

        print(EMULATOR_BANNER, file=sys.stderr)
        event_loop.run(run_demo(settings, keep_running=args.keep_running))
