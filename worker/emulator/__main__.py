"""``python -m worker.emulator``: run the DMS emulator as a standalone HTTP server."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from pathlib import Path

from worker import event_loop
from worker.emulator import Client, EmulatorConfig, serve_emulator
from worker.emulator.faults import FaultConfig

BANNER = "*** SAP DMS EMULATOR - NOT SAP DMS - for tests and local runs only ***"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m worker.emulator", description=BANNER)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8085)
    parser.add_argument("--client-id", default="emulator-client")
    parser.add_argument("--client-secret", default="emulator-secret")
    parser.add_argument("--token-lifetime", type=float, default=3600.0, help="expires_in of issued tokens, s")
    parser.add_argument("--max-content-size", type=int, default=400 * 1024 * 1024)
    parser.add_argument("--data-dir", type=Path, help="keep state and content here across restarts")
    parser.add_argument("--faults", default="{}", help='JSON, e.g. {"latency_ms": 50, "error_rate": 0.1}')
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    faults = FaultConfig()
    faults.update(json.loads(args.faults))
    if args.data_dir:
        args.data_dir.mkdir(parents=True, exist_ok=True)
    return EmulatorConfig(
        clients=[Client(args.client_id, args.client_secret, "default-zone")],
        token_lifetime_s=args.token_lifetime,
        max_content_size=args.max_content_size,
        data_dir=args.data_dir,
        faults=faults,
    )


async def serve_forever(config: EmulatorConfig, host: str, port: int) -> None:
    async with serve_emulator(config, host, port) as running:
        print(BANNER, file=sys.stderr)
        print(f"DMS uri / UAA url: {running.base_url}", file=sys.stderr)
        print(f"service key: {json.dumps(running.service_key())}", file=sys.stderr, flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        event_loop.run(serve_forever(config_from_args(args), args.host, args.port))


if __name__ == "__main__":
    main()
