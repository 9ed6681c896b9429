"""``python -m tests.bench hol``: does one document wait for another? Two runs, one replica, default settings,
DMS latency 100 ms; each prints a table. Not a timed test.

(a) backlog: tenant A publishes 10,000 uploads at once, tenant B 20 uploads 0.25 s apart right behind them,
    B's documents chosen so that ``--shared`` of them land in shard queues A's backlog fills. B's
    publish-to-result p99 and max (shared and not), A's drain rate with B against A alone in the same run.
(b) retries: 1,000 new documents published at 200/s, 5 % of them failing transiently 3 times each (three
    scripted 503s on their createDocument; default retry delays 1, 5, 30 s). The other documents'
    publish-to-result p50/p99/max (an upper bound of their queue wait: it includes the DMS round trips).
"""

from __future__ import annotations

import asyncio
import statistics
import uuid

from tests.bench.fleet_bench import Driver, behind_a_backlog, one_replica
from tests.routing_oracle import shards_of
from worker.amqp.routing import LANES, routing_key
from worker.producer import upload_command


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


async def tenant_b_and_documents(
    url: str, shards: int, tenant_a: uuid.UUID, shared: int, total: int
) -> tuple[uuid.UUID, list[tuple[uuid.UUID, bool]]]:
    """A tenant B with a lane in a queue A's lanes use, and ``total`` of its documents, the first ``shared``
    of them in such queues (a tenant's documents use only its 16 lanes)."""
    a_keys = [f"{tenant_a}.{lane}" for lane in range(LANES)]
    for _ in range(50):
        tenant_b = uuid.uuid4()
        candidates = [uuid.uuid4() for _ in range(total * 20)]
        where = await shards_of(url, shards, a_keys + [routing_key(tenant_b, d) for d in candidates])
        a_shards = {where[k] for k in a_keys}
        inside = [d for d in candidates if where[routing_key(tenant_b, d)] in a_shards]
        outside = [d for d in candidates if where[routing_key(tenant_b, d)] not in a_shards]
        if len(inside) >= shared and len(outside) >= total - shared:
            return tenant_b, [(d, True) for d in inside[:shared]] + [(d, False) for d in outside[: total - shared]]
    raise RuntimeError("no tenant B shares a queue with tenant A in 50 tries")


async def backlog_run(bulk: int, alone: int, shared: int, latency_ms: int) -> None:
    async with one_replica({"latency_ms": latency_ms}) as settings, Driver(settings) as driver:
        url, tenant_a = settings.amqp_url.get_secret_value(), uuid.uuid4()
        tenant_b, docs = await tenant_b_and_documents(url, settings.shard_count, tenant_a, shared, 20)
        for tenant in (tenant_a, tenant_b):  # repositories and tokens first
            await driver.settled(upload_command(tenant, uuid.uuid4(), "w.txt", "text/plain", b"w"))
        b_commands = [upload_command(tenant_b, doc, "b.txt", "text/plain", b"B") for doc, _ in docs]
        rate_alone, rate_with = await behind_a_backlog(driver, tenant_a, alone, bulk, b_commands, spacing_s=0.25)
        latency = {c.id: driver.latency(c.id) for c in b_commands}
    in_shared = [latency[c.id] for c, (_, s) in zip(b_commands, docs, strict=True) if s]
    apart = [latency[c.id] for c, (_, s) in zip(b_commands, docs, strict=True) if not s]
    every = in_shared + apart
    print(f"(a) one replica, DMS {latency_ms} ms, A {bulk} uploads at once, B 20 uploads 0.25 s apart behind them")
    print(
        "| B uploads | in A's queues | B p50 s | B p99 s | B max s | B max in A's queues s | B max elsewhere s "
        "| A alone /s | A with B /s | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {len(every)} | {len(in_shared)} | {statistics.median(every):.2f} | {p99(every):.2f} | {max(every):.2f} | "
        f"{max(in_shared, default=0):.2f} | {max(apart, default=0):.2f} | {rate_alone:.1f} | {rate_with:.1f} | "
        f"{rate_with / rate_alone:.2f} |",
        flush=True,
    )


async def retries_run(documents: int, failing_share: float, rate_per_s: float, latency_ms: int) -> None:
    docs = [uuid.uuid4() for _ in range(documents)]
    failing = set(docs[: round(documents * failing_share)])
    scripted = [
        {"kind": "status", "status": 503, "times": 3, "action": "createDocument", "name": str(d)} for d in failing
    ]
    async with one_replica({"latency_ms": latency_ms, "scripted": scripted}) as settings, Driver(settings) as driver:
        tenant = uuid.uuid4()
        await driver.settled(upload_command(tenant, uuid.uuid4(), "w.txt", "text/plain", b"w"))
        commands = [upload_command(tenant, d, "r.txt", "text/plain", b"R") for d in docs]
        for command in commands:
            await driver.send(command)
            await asyncio.sleep(1 / rate_per_s)
        await driver.wait_for([c.id for c in commands], timeout=300)
        latency = {c.data.document_id: driver.latency(c.id) for c in commands}
        notices, failed = len(driver.notices), len(driver.failed)
    others = [latency[d] for d in docs if d not in failing]
    retried = [latency[d] for d in failing]
    print(
        f"(b) one replica, DMS {latency_ms} ms, {documents} new documents at {rate_per_s:g}/s, {len(failing)} of them "
        "failing 3 times (retries after 1, 5, 30 s)"
    )
    print(
        "| others | others p50 s | others p99 s | others max s | failing ones min s | failing ones max s "
        "| retry notices | failed |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {len(others)} | {statistics.median(others):.2f} | {p99(others):.2f} | {max(others):.2f} | "
        f"{min(retried):.1f} | {max(retried):.1f} | {notices} | {failed} |",
        flush=True,
    )


async def main(bulk: int, alone: int, shared: int, documents: int, latency_ms: int, parts: str = "ab") -> None:
    if "a" in parts:
        await backlog_run(bulk, alone, shared, latency_ms)
    if "b" in parts:
        await retries_run(documents, 0.05, 200.0, latency_ms)
