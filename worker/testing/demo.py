"""``python -m worker.testing.demo`` (or ``python -m worker demo``): the whole data path, locally, against the
bundled DMS EMULATOR (not SAP DMS)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid

import aio_pika

from worker.amqp import topology
from worker.contracts import Command
from worker.dms.destinations import Destination
from worker.producer import delete_command, publish_command, upload_command
from worker.runtime import event_loop, logs
from worker.runtime.app import Worker
from worker.settings import Settings
from worker.testing.emulator import serve_emulator

EMULATOR_BANNER = """
#########################################################################
#  DEMO AGAINST THE BUNDLED DMS EMULATOR - THIS IS NOT SAP DMS           #
#  Documents go to an in-memory emulator and vanish when the demo ends. #
#########################################################################
"""


def demo_settings(base: Settings, service_key: dict[str, object]) -> Settings:
    prefix = "dms.demo"
    return base.model_copy(
        update={
            "destination": Destination.model_validate(service_key),
            "command_exchange": f"{prefix}.commands",
            "command_queue": f"{prefix}.commands",
            "result_exchange": f"{prefix}.results",
            "results_queue": None,
            "dead_letter_queue": f"{prefix}.commands.dlq",
            "retry_delays_ms": [500, 2000],
            "http_port": 0,
        }
    )


async def _delete_topology(settings: Settings) -> None:
    """Removes the demo's queues and exchanges: at the start (a demo killed half-way left them), and on the
    way out, so the demo leaves the broker as it found it (each topology costs it hundreds of descriptors)."""
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    async with connection:
        # Deleted rather than purged: an older release may have declared them with other arguments.
        await topology.delete_all(await connection.channel(), settings)


async def run_demo(base: Settings, keep_running: bool = False) -> None:
    async with serve_emulator() as emulator:
        print(f"[demo] DMS EMULATOR listening on {emulator.base_url} (not SAP DMS)")
        settings = demo_settings(base, emulator.service_key())
        await _delete_topology(settings)
        worker = Worker(settings)
        await worker.start()
        connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            results = await channel.declare_queue(exclusive=True, auto_delete=True)
            await results.bind(settings.result_exchange, routing_key="#")
            tenant, document = uuid.uuid4(), uuid.uuid4()
            print(f"[demo] tenant {tenant}, document {document}")
            steps: list[tuple[str, Command]] = [
                ("first upload -> 1.0", upload_command(tenant, document, "notes.txt", "text/plain", b"version one\n")),
                ("second upload -> 2.0", upload_command(tenant, document, "notes.txt", "text/plain", b"version two\n")),
                (
                    "renamed executable -> refused",
                    upload_command(tenant, uuid.uuid4(), "invoice.pdf", "application/pdf", b"MZ\x90\x00 not a pdf"),
                ),
                ("delete -> all versions gone", delete_command(tenant, document)),
            ]
            async with results.iterator() as events:
                for title, command in steps:
                    await publish_command(channel, command, settings.command_exchange)
                    message = await asyncio.wait_for(events.__anext__(), timeout=30)
                    async with message.process():
                        event = json.loads(message.body)
                    print(f"[demo] {title}: {event['type']} {json.dumps(event['data'], indent=None)}")
            if keep_running:
                print("[demo] worker and emulator keep running; Ctrl+C to stop")
                await asyncio.Event().wait()
        finally:
            await worker.stop()
            await connection.close()
            await _delete_topology(settings)
            print(f"[demo] removed the demo's queues and exchanges ({settings.command_queue}.*)")
    print("[demo] done. Everything above ran against the DMS EMULATOR, not SAP DMS.")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m worker.testing.demo", description="end-to-end demo against the bundled DMS EMULATOR"
    )
    parser.add_argument("--keep-running", action="store_true", help="keep worker and emulator up afterwards")
    args = parser.parse_args(argv)
    settings = Settings()
    logs.configure(settings.log_level, settings.log_json)
    print(EMULATOR_BANNER, file=sys.stderr)
    try:
        event_loop.run(run_demo(settings, keep_running=args.keep_running))
    except KeyboardInterrupt:  # Ctrl+C ends --keep-running: everything is cleaned up by then, no traceback
        sys.exit(130)


if __name__ == "__main__":
    main()
