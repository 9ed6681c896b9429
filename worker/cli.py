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

from worker import contract_files, logs
from worker.app import Worker
from worker.command_publishing import delete_command, publish_command, upload_command
from worker.contracts import Command
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
        asyncio.run(run_worker(settings))
    elif args.command in {"publish", "delete"}:
        asyncio.run(publish(settings, command_from_args(args)))
    elif args.command == "demo":
        from worker.demo import run_demo

        print(EMULATOR_BANNER, file=sys.stderr)
        asyncio.run(run_demo(settings, keep_running=args.keep_running))
