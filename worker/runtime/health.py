"""Per-replica HTTP endpoint: ``/livez``, ``/readyz`` (broker consuming, a DMS destination resolvable and its
token obtainable) and ``/metrics``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from worker.errors import UnknownTenant, WorkerError
from worker.runtime.metrics import WorkerMetrics


@dataclass
class HealthChecks:
    consuming: Callable[[], bool]
    token_obtainable: Callable[[], Awaitable[None]]  # raises when no destination or no token can be had


def make_app(checks: HealthChecks, metrics: WorkerMetrics) -> web.Application:
    async def livez(_request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(_request: web.Request) -> web.Response:
        problems = []
        if not checks.consuming():
            problems.append("not consuming from the broker")
        try:
            await asyncio.wait_for(checks.token_obtainable(), timeout=5)
        except UnknownTenant as exc:  # its message names the destination and never a secret
            problems.append(f"no DMS destination: {exc.message}")
        except (WorkerError, TimeoutError) as exc:
            problems.append(f"no DMS token: {getattr(exc, 'code', 'timeout')}")
        status = 503 if problems else 200
        metrics.ready.set(0 if problems else 1)
        return web.json_response({"status": "not ready" if problems else "ready", "problems": problems}, status=status)

    async def metrics_view(_request: web.Request) -> web.Response:
        response = web.Response(body=metrics.render())
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return response

    app = web.Application()
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
    return app
