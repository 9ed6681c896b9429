"""Starts an aiohttp application on a TCP socket and reports the port it got (port 0 = any free one)."""

from __future__ import annotations

import ssl

from aiohttp import web


async def start_site(
    app: web.Application, host: str, port: int, ssl_context: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    return runner, await add_site(runner, host, port, ssl_context)


async def add_site(runner: web.AppRunner, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> int:
    """Serves the runner's application on one more socket (HTTPS with ``ssl_context``); returns its port."""
    before = set(map(tuple, runner.addresses))
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    added = [address for address in runner.addresses if tuple(address) not in before]  # this site's sockets
    return int(added[0][1]) if added else port
