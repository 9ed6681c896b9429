"""Starts an aiohttp application on a TCP socket and reports the port it got (port 0 = any free one)."""

from __future__ import annotations

from aiohttp import web


async def start_site(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    sockets = getattr(site._server, "sockets", None) or ()  # asyncio's and uvloop's servers both have them
    bound = int(sockets[0].getsockname()[1]) if sockets else port
    return runner, bound
