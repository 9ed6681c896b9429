"""``python -m worker.testing.emulator``: run the DMS emulator as a standalone HTTP server."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from pathlib import Path

from worker.runtime import event_loop
from worker.testing.emulator import Client, EmulatorConfig, serve_emulator
from worker.testing.emulator.faults import FaultConfig

BANNER = "*** SAP DMS EMULATOR - NOT SAP DMS - for tests and local runs only ***"


FAULTS_HELP = """\
--faults (and POST /_emulator/faults at runtime) takes a JSON object with any of the settings below; a POST
replaces the whole fault set (what it leaves out is back to its default: no fault), so POST {} or
DELETE /_emulator/faults clears every fault, and GET /_emulator/faults shows the set in force:
  latency_ms       added to every request, before it is worked on (float, ms)
  answer_ms        every answer leaves at least this long after its request came, the emulator's own
                   work included (float, ms; what a fleet benchmark wants under load)
  answer_jitter_ms answer_ms varies by up to this much either way (uniform, seeded)
  error_rate       share of requests answered with an error (0..1), status drawn from
  error_statuses   e.g. [500, 502, 503]
  rate_limit_rate  share of requests answered 429 with Retry-After: retry_after (s)
  drop_rate        share of requests whose connection is dropped without an answer (not worked on)
  lose_answer_rate share of requests worked on (a write takes effect) whose answer is then lost
  seed             seeds the random draws, so a run repeats
  scripted         a list of faults that fire a fixed number of times, each:
                   {"kind": "status" | "drop" | "lose_answer" | "rate_limit", "times": 1,
                    "status": 503, "retry_after": 1, "path_prefix": "/", "action": null, "name": null,
                    "method": null}
                   (action matches cmisaction=... in a form or cmisselector=... in a query; name
                   the cmis:name of a browser-binding POST)
Example: --faults '{"latency_ms": 50, "scripted": [{"kind": "status", "status": 503, "times": 2,
         "path_prefix": "/browser", "action": "createDocument"}]}'
Also: POST /_emulator/tokens/revoke, GET /_emulator/stats, PUT|DELETE /_emulator/destinations/{name}.
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m worker emulator",
        description=BANNER,
        epilog=FAULTS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8085, help="port to listen on (default: 8085)")
    parser.add_argument("--client-id", default="emulator-client", help="OAuth client of the service key")
    parser.add_argument("--client-secret", default="emulator-secret", help="its secret")
    parser.add_argument(
        "--token-lifetime", type=float, default=3600.0, help="expires_in of issued tokens, s (default: 3600)"
    )
    parser.add_argument(
        "--max-content-size",
        type=int,
        default=400 * 1024 * 1024,
        help="largest content DMS accepts, bytes (default: 400 MiB)",
    )
    parser.add_argument(
        "--data-dir", type=Path, help="keep state and content here across restarts (default: in memory)"
    )
    parser.add_argument("--faults", default="{}", help="fault injection as JSON, see below (default: none)")
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    faults = FaultConfig()
    try:
        faults.update(json.loads(args.faults))
    except (ValueError, TypeError) as exc:  # bad JSON, an unknown field, a wrong scripted fault
        sys.exit(f"error: --faults: {exc} (see python -m worker emulator --help)")
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
