"""``python -m tests.bench emulator|worker|scaling|fairness|chains|backlog|large|hol|chaos|faststream|offboard|console``
(see tests/bench/README.md)."""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench")
    sub = parser.add_subparsers(dest="which", required=True)
    emu = sub.add_parser("emulator", help="createDocument calls per second the emulator serves on one core")
    emu.add_argument("--requests", type=int, default=5000)
    emu.add_argument("--concurrency", type=int, default=32)
    work = sub.add_parser("worker", help="worker replicas vs. the plain baseline (prints the README table)")
    work.add_argument("--sizes", nargs="+", default=["10 KB", "1 MB", "10 MB"], choices=["10 KB", "1 MB", "10 MB"])
    work.add_argument("--latencies", nargs="+", type=int, default=[0, 50], help="emulator latency, ms")
    work.add_argument("--replicas", nargs="+", type=int, default=[1, 3])
    work.add_argument("--prefetch", type=int, default=64, help="in-flight limit per replica")
    scale = sub.add_parser("scaling", help="steady uploads/s for 1, 2, 3 replicas at DMS latency 1,000 ms")
    scale.add_argument("--uploads", type=int, default=6000)
    scale.add_argument("--replicas", nargs="+", type=int, default=[1, 2, 3])
    scale.add_argument("--latency", type=int, default=1000, help="emulator latency, ms")
    scale.add_argument(
        "--delay",
        choices=["answer_ms", "latency_ms"],
        default="answer_ms",
        help="how the emulator plays it: answer_ms (from arrival, its own work included) or latency_ms (added)",
    )
    fair = sub.add_parser("fairness", help="one tenant's bulk against another tenant's single uploads")
    fair.add_argument("--bulk", type=int, default=10_000, help="tenant A's backlog")
    fair.add_argument("--alone", type=int, default=3000, help="tenant A's uploads measured alone first")
    fair.add_argument("--replicas", nargs="+", type=int, default=[1, 3])
    fair.add_argument("--latency", type=int, default=100, help="emulator latency, ms")
    chain = sub.add_parser("chains", help="new versions of the same documents, in order")
    chain.add_argument("--documents", type=int, default=10)
    chain.add_argument("--versions", type=int, default=20)
    chain.add_argument("--latency", type=int, default=50, help="emulator latency, ms")
    back = sub.add_parser("backlog", help="peak memory of one replica started on a backlog of large files")
    back.add_argument("--count", type=int, default=64)
    back.add_argument("--size", type=int, default=9_500_000, help="bytes per file")
    large = sub.add_parser("large", help="16 x 120 MiB by content_url at once to one replica, then one 400 MiB file")
    large.add_argument("--count", type=int, default=16)
    large.add_argument("--size", type=int, default=120 * 1024 * 1024, help="bytes per file")
    large.add_argument("--huge", type=int, default=400 * 1024 * 1024, help="bytes of the single large file")
    hol = sub.add_parser("hol", help="does one document wait for another? (a) another tenant's backlog, (b) retries")
    hol.add_argument("--bulk", type=int, default=10_000, help="tenant A's backlog")
    hol.add_argument("--alone", type=int, default=3000, help="tenant A's uploads measured alone first")
    hol.add_argument("--shared", type=int, default=5, help="B's uploads placed in queues A's backlog fills")
    hol.add_argument("--documents", type=int, default=1000, help="documents of the retries run")
    hol.add_argument("--latency", type=int, default=100, help="emulator latency, ms")
    hol.add_argument("--parts", choices=["ab", "a", "b"], default="ab", help="run (a), (b) or both")
    chaos = sub.add_parser("chaos", help="replicas killed and stopped while DMS fails: order, loss, duplicates")
    chaos.add_argument("--runs", type=int, default=1)
    chaos.add_argument("--signals", choices=["mixed", "kill", "term"], default="mixed")
    chaos.add_argument("--seed", type=int, default=1, help="the first run's seed (then +1 each run)")
    fast = sub.add_parser(
        "faststream", help="this worker against an idiomatic FastStream worker, alternating (needs the bench extra)"
    )
    fast.add_argument("--uploads", type=int, default=1000, help="10 KB uploads per run")
    fast.add_argument("--latencies", nargs="+", type=int, default=[0, 50], help="emulator latency, ms")
    fast.add_argument("--repetitions", type=int, default=2, help="runs of each system per latency")
    off = sub.add_parser("offboard", help="deletion rate of `tenant offboard --yes` for a tenant with 10,000 documents")
    off.add_argument("--documents", type=int, default=10_000, help="the tenant's documents (1 in 10 with 2 versions)")
    off.add_argument("--latencies", nargs="+", type=int, default=[0, 50], help="emulator answer time, ms")
    console = sub.add_parser(
        "console", help="the operator console on a large DLQ: index pass, groups page, replay rate, broker CPU"
    )
    console.add_argument("--count", type=int, default=10_000, help="dead letters in the DLQ")
    console.add_argument("--screenshot", type=Path, help="also save the dead-letters page as this PNG")
    args = parser.parse_args()
    if args.which == "console":
        from tests.bench import console_bench
        from worker.runtime import event_loop

        event_loop.run(console_bench.main(args.count, args.screenshot))
        return
    if args.which == "offboard":
        from tests.bench import offboard_bench
        from worker.runtime import event_loop

        event_loop.run(offboard_bench.main(args.documents, args.latencies))
        return
    if args.which == "faststream":
        from tests.bench import compare_bench
        from worker.runtime import event_loop

        event_loop.run(compare_bench.main(args.uploads, args.latencies, args.repetitions))
        return
    if args.which == "hol":
        from tests.bench import hol_bench
        from worker.runtime import event_loop

        event_loop.run(hol_bench.main(args.bulk, args.alone, args.shared, args.documents, args.latency, args.parts))
        return
    if args.which == "chaos":
        from tests.bench import chaos_bench
        from worker.runtime import event_loop

        event_loop.run(chaos_bench.main(args.runs, args.signals, args.seed))
        return
    if args.which == "large":
        from tests.bench import large_files_bench
        from worker.runtime import event_loop

        event_loop.run(large_files_bench.main(args.count, args.size, args.huge))
        return
    if args.which in {"scaling", "fairness", "chains", "backlog"}:
        from tests.bench import fleet_bench
        from worker.runtime import event_loop

        runs = {
            "scaling": lambda: fleet_bench.scaling(args.uploads, args.replicas, args.latency, args.delay),
            "fairness": lambda: fleet_bench.fairness(args.bulk, args.alone, args.replicas, args.latency),
            "chains": lambda: fleet_bench.chains(args.documents, args.versions, args.latency),
            "backlog": lambda: fleet_bench.backlog(args.count, args.size),
        }
        event_loop.run(runs[args.which]())
    elif args.which == "emulator":
        from tests.bench.emulator_bench import main as run

        run(total=args.requests, concurrency=args.concurrency)
    else:
        from tests.bench.worker_bench import main as run_workers
        from worker.runtime import event_loop

        event_loop.run(run_workers(args.sizes, args.latencies, args.replicas, args.prefetch))


if __name__ == "__main__":
    main()
