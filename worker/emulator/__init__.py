"""A faithful SAP Document Management Service emulator (real HTTP) for tests, demos and local runs.

NOT SAP DMS. It follows the documented DMS/CMIS browser-binding behaviour in shared/reference.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from worker.emulator.app import Emulator, EmulatorConfig
from worker.emulator.tokens import Client
from worker.serving import start_site

__all__ = ["Client", "Emulator", "EmulatorConfig", "RunningEmulator", "serve_emulator"]


@dataclass
class RunningEmulator:
    emulator: Emulator
    base_url: str  # ends with "/": both the DMS ``uri`` and the UAA ``url``
    port: int

    @property
    def token_url(self) -> str:
        return self.base_url + "oauth/token"

    def service_key(self, client: Client | None = None) -> dict[str, object]:
        """A DMS service key in SAP's layout that points at this emulator."""
        client = client or self.emulator.config.clients[0]
        return {
            "uri": self.base_url,
            "endpoints": {"ecmservice": {"url": self.base_url}},
            "uaa": {
                "clientid": client.client_id,
                "clientsecret": client.client_secret,
                "url": self.base_url.rstrip("/"),
                "identityzone": client.zone,
            },
        }


@asynccontextmanager
async def serve_emulator(
    config: EmulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[RunningEmulator]:
    """Runs the emulator on a real socket for the duration of the block (port 0 = any free port)."""
    emulator = Emulator(config or EmulatorConfig())
    runner, bound_port = await start_site(emulator.make_app(), host, port)
    try:
        yield RunningEmulator(emulator, f"http://{host}:{bound_port}/", bound_port)
    finally:
        await runner.cleanup()
