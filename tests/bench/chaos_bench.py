"""``python -m tests.bench chaos --runs N [--signals mixed|kill|term]``: issue 26's chaos run N times (3
replicas killed or stopped every 1.5-4.5 s for 40 s, DMS 30 ms and 20 % 500s, 20 documents x 15 uploads),
one table row per run, then the documents out of order, lost or written twice, if any. Not a timed test."""

from __future__ import annotations

import tempfile
from contextlib import AsyncExitStack
from pathlib import Path

from tests.integration.chaos import CHAOS_SETTINGS, HEADER, ChaosPlan, run_chaos
from tests.integration.conftest import open_stack


async def main(runs: int, signals: str, first_seed: int) -> None:
    print(HEADER, flush=True)
    clean = 0
    for seed in range(first_seed, first_seed + runs):
        async with AsyncExitStack() as exits:
            stack = await open_stack(exits, **CHAOS_SETTINGS)
            with tempfile.TemporaryDirectory(prefix="chaos-") as logs:
                report = await run_chaos(stack, ChaosPlan(seed=seed, signals=signals), Path(logs))
        print(report.row(), flush=True)
        clean += report.clean
        if report.failed_codes:
            print(f"  failed: {dict(report.failed_codes)}", flush=True)
        for doc, numbers in report.out_of_order.items():
            print(f"  out of order: {doc}: {numbers}", flush=True)
            for n, said in enumerate(report.reported.get(doc, [])):
                print(f"    upload {n}: {said}", flush=True)
        for what in ("lost", "conflicting", "written_twice"):
            if getattr(report, what):
                print(f"  {what}: {getattr(report, what)}", flush=True)
    print(f"{clean} of {runs} runs with every document in publish order, none lost, none written twice")
