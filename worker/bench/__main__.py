"""``python -m worker.bench emulator|worker`` (see the README's Benchmark section)."""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m worker.bench")
    sub = parser.add_subparsers(dest="which", required=True)
    emu = sub.add_parser("emulator", help="createDocument calls per second the emulator serves on one core")
    emu.add_argument("--requests", type=int, default=5000)
    emu.add_argument("--concurrency", type=int, default=32)
    work = sub.add_parser("worker", help="worker replicas vs. the plain baseline (prints the README table)")
    work.add_argument("--sizes", nargs="+", default=["10 KB", "1 MB", "10 MB"], choices=["10 KB", "1 MB", "10 MB"])
    work.add_argument("--latencies", nargs="+", type=int, default=[0, 50], help="emulator latency, ms")
    work.add_argument("--replicas", nargs="+", type=int, default=[1, 3])
    work.add_argument("--prefetch", type=int, default=8, help="per shard queue; 8 shards")
    args = parser.parse_args()
    if args.which == "emulator":
        from worker.bench.emulator_bench import main as run

        run(total=args.requests, concurrency=args.concurrency)
    else:
        from worker import event_loop
        from worker.bench.worker_bench import main as run_workers

        event_loop.run(run_workers(args.sizes, args.latencies, args.replicas, args.prefetch))


if __name__ == "__main__":
    main()
