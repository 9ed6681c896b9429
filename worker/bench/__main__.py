"""``python -m worker.bench emulator|worker`` (see the README's Benchmark section)."""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m worker.bench")
    sub = parser.add_subparsers(dest="which", required=True)
    emu = sub.add_parser("emulator", help="createDocument calls per second the emulator serves on one core")
    emu.add_argument("--requests", type=int, default=5000)
    emu.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    if args.which == "emulator":
        from worker.bench.emulator_bench import main as run

        run(total=args.requests, concurrency=args.concurrency)


if __name__ == "__main__":
    main()
