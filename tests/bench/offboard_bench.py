"""How fast ``python -m worker tenant offboard --yes`` deletes a tenant with 10,000 documents (issue 25).

    python -m tests.bench offboard     # 10,000 documents (1 in 10 with a second version), DMS 0 and 50 ms

The emulator runs in its own process pinned to CPU 0; the CLI as an operator runs it (a subprocess, pinned to
CPU 1) with ``--rate 0`` (no rate limit) and its default concurrency of 8, so the figure is what the tool
itself can do against a DMS answering in that time. Another tenant's 100 documents must be there afterwards.
The broker holds only the result exchange (and the tombstone), both deleted at the end: no shard queues.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiohttp

from tests.bench.emulator_bench import pin, wait_until_up
from tests.bench.worker_bench import Emulator
from tests.environment import as_environment
from worker.amqp.tombstones import BrokerTombstones
from worker.dms.destinations import Destination
from worker.dms.repositories import repository_spec
from worker.dms.tokens import basic_auth_header
from worker.settings import Settings

FILL_CONCURRENCY = 32


@dataclass
class Run:
    latency_ms: int
    documents: int
    versions: int
    dry_run_s: float
    seconds: float  # the event's duration_s: listing and deleting, documents and repository
    wall_s: float  # the whole command, start-up, census and event included
    other_tenant_intact: bool

    @property
    def rate(self) -> float:
        return self.documents / self.seconds


class Dms:
    """Just enough of the DMS API over HTTP to fill repositories before the run and look after it."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http, self.base, self.auth = http, base, {"Authorization": ""}

    async def login(self) -> None:
        async with self.http.post(
            self.base + "oauth/token",
            data={"grant_type": "client_credentials"},
            headers={"Authorization": basic_auth_header("emulator-client", "emulator-secret")},
        ) as r:
            self.auth = {"Authorization": f"Bearer {(await r.json())['access_token']}"}

    async def repository(self, tenant: uuid.UUID) -> str:
        spec = {"repository": repository_spec(tenant)}
        async with self.http.post(self.base + "rest/v2/repositories", json=spec, headers=self.auth) as r:
            return str((await r.json())["id"])

    async def _post(self, repo: str, fields: dict[str, str], content: bytes | None = None) -> dict[str, Any]:
        form = aiohttp.FormData()
        for key, value in {**fields, "succinct": "true"}.items():
            form.add_field(key, value)
        if content is not None:
            form.add_field("content", content, filename="file.txt", content_type="text/plain")
        async with self.http.post(f"{self.base}browser/{repo}/root", data=form, headers=self.auth) as r:
            assert r.status == 201, await r.text()
            return dict((await r.json())["succinctProperties"])

    async def fill(self, repo: str, documents: int, second_version_every: int = 10) -> int:
        """``documents`` documents, every ``second_version_every``-th with a 2.0; returns the versions."""
        numbers = iter(range(documents))
        versions = 0

        async def writer() -> None:
            nonlocal versions
            for n in numbers:
                fields = {
                    "cmisaction": "createDocument",
                    "propertyId[0]": "cmis:name",
                    "propertyValue[0]": str(uuid.uuid4()),
                    "propertyId[1]": "cmis:objectTypeId",
                    "propertyValue[1]": "cmis:document",
                }
                created = await self._post(repo, fields, b"version 1")
                versions += 1
                if n % second_version_every == 0:
                    pwc = await self._post(repo, {"cmisaction": "checkOut", "objectId": created["cmis:objectId"]})
                    fields = {"cmisaction": "checkIn", "objectId": pwc["cmis:objectId"], "major": "true"}
                    await self._post(repo, fields, b"version 2")
                    versions += 1

        await asyncio.gather(*(writer() for _ in range(FILL_CONCURRENCY)))
        return versions

    async def count(self, repo: str) -> int | None:
        params = {"cmisselector": "children", "maxItems": "1", "succinct": "true"}
        async with self.http.get(f"{self.base}browser/{repo}/root", params=params, headers=self.auth) as r:
            return int((await r.json())["numItems"]) if r.status == 200 else None


def cli_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DMS_WORKER_")}
    env.update(as_environment(settings))
    env.update(DMS_WORKER_LOG_LEVEL="WARNING")
    return env


async def offboard(settings: Settings, tenant: uuid.UUID, *options: str) -> tuple[float, list[dict[str, Any]], str]:
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *pin(1),
        sys.executable,
        "-m",
        "worker",
        "tenant",
        "offboard",
        "--tenant",
        str(tenant),
        *options,
        env=cli_env(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 1800)
    if process.returncode != 0:
        raise RuntimeError(f"offboard {' '.join(options)} failed: {err.decode()[-2000:]}")
    return time.perf_counter() - started, [json.loads(line) for line in out.decode().splitlines()], err.decode()


async def one_run(documents: int, latency_ms: int) -> Run:
    emulator = Emulator()
    prefix = f"bench.{uuid.uuid4().hex[:8]}"
    settings = Settings(
        _env_file=None,
        destination=Destination.model_validate(emulator.service_key()),
        command_exchange=f"{prefix}.commands",
        command_queue=f"{prefix}.commands",
        result_exchange=f"{prefix}.results",
        results_queue=None,
        dead_letter_queue=f"{prefix}.dlq",
        shard_count=4,  # the census's routing probe: scratch queues only, no shard queue is declared
    )
    tenant, other = uuid.uuid4(), uuid.uuid4()
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    try:
        await wait_until_up(emulator.base)
        channel = await connection.channel()
        results = await channel.declare_exchange(settings.result_exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        kept = await channel.declare_queue(exclusive=True)
        await kept.bind(results, routing_key="tenant.offboarded")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=FILL_CONCURRENCY)) as http:
            dms = Dms(http, emulator.base)
            await dms.login()
            repo, other_repo = await dms.repository(tenant), await dms.repository(other)
            versions = await dms.fill(repo, documents)
            await dms.fill(other_repo, 100)
            await emulator.call("POST", "_emulator/faults", {"answer_ms": latency_ms})
            dry_s, (plan,), _ = await offboard(settings, tenant)
            assert (plan["documents"], plan["versions"]) == (documents, versions), plan
            wall_s, (event,), _ = await offboard(settings, tenant, "--yes", "--rate", "0")
            data = event["data"]
            assert (data["documents_deleted"], data["versions_deleted"]) == (documents, versions), data
            intact = await dms.count(other_repo) == 100 and await dms.count(repo) is None
        return Run(latency_ms, documents, versions, dry_s, data["duration_s"], wall_s, intact)
    finally:
        cleanup = await connection.channel()
        await BrokerTombstones(connection, settings.command_exchange).remove(tenant)
        await cleanup.exchange_delete(settings.result_exchange)
        await connection.close()
        emulator.close()


async def main(documents: int, latencies: list[int]) -> None:
    runs = [await one_run(documents, latency) for latency in latencies]
    print("| DMS latency | documents | versions | dry run s | deleting s | documents/s | command s | other tenant |")
    print("|---|---|---|---|---|---|---|---|")
    for r in runs:
        print(
            f"| {r.latency_ms} ms | {r.documents:,} | {r.versions:,} | {r.dry_run_s:.1f} | {r.seconds:.1f} | "
            f"**{r.rate:.0f}** | {r.wall_s:.1f} | {'intact' if r.other_tenant_intact else 'CHANGED'} |"
        )
