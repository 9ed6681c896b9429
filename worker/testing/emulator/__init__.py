"""A faithful SAP Document Management Service emulator (real HTTP) for tests, demos and local runs.

NOT SAP DMS. It follows the documented DMS/CMIS browser-binding behaviour in shared/reference.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from worker.runtime.serving import add_site, start_site
from worker.testing.emulator.app import Emulator, EmulatorConfig
from worker.testing.emulator.tokens import Client

__all__ = ["Client", "Emulator", "EmulatorConfig", "EmulatorTls", "RunningEmulator", "serve_emulator"]


@dataclass(frozen=True)
class EmulatorTls:
    """HTTPS for the emulator: ``server`` for its main socket, and ``mutual`` (a context that requires and
    verifies client certificates) for a second socket standing in for XSUAA's ``certurl`` host."""

    server: ssl.SSLContext
    mutual: ssl.SSLContext


@dataclass
class RunningEmulator:
    emulator: Emulator
    base_url: str  # ends with "/": the DMS ``uri``, the UAA ``url`` and the Destination service ``uri``
    port: int
    cert_url: str | None = None  # with TLS: the mTLS token host (``certurl``), no trailing "/"

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

    def x509_service_key(self, client: Client, certificate: str, key: str) -> dict[str, object]:
        """A DMS service key with ``credential-type: x509`` for a client registered with a certificate CN."""
        if self.cert_url is None:
            raise ValueError("serve the emulator with tls= for X.509 keys")
        return {
            "uri": self.base_url,
            "uaa": {
                "clientid": client.client_id,
                "credential-type": "x509",
                "certificate": certificate,
                "key": key,
                "certurl": self.cert_url,
                "url": self.base_url.rstrip("/"),
                "identityzone": client.zone,
            },
        }

    def destination_service_binding(self) -> dict[str, object]:
        """The credentials of a Destination service binding (label ``destination``) pointing at this emulator."""
        client = self.emulator.config.destination_service
        return {
            "uri": self.base_url.rstrip("/"),
            "clientid": client.client_id,
            "clientsecret": client.client_secret,
            "url": self.base_url.rstrip("/"),
            "identityzone": client.zone,
        }

    def destination_properties(self, name: str, client: Client | None = None) -> dict[str, str]:
        """BTP destination properties as SAP's CALM guide has them created (OAuth2ClientCredentials)."""
        client = client or self.emulator.config.clients[0]
        return {
            "Name": name,
            "Type": "HTTP",
            "URL": self.base_url,
            "ProxyType": "Internet",
            "Authentication": "OAuth2ClientCredentials",
            "clientId": client.client_id,
            "clientSecret": client.client_secret,
            "tokenServiceURL": self.token_url,
            "tokenServiceURLType": "Dedicated",
        }


@asynccontextmanager
async def serve_emulator(
    config: EmulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0, tls: EmulatorTls | None = None
) -> AsyncIterator[RunningEmulator]:
    """Runs the emulator on a real socket for the duration of the block (port 0 = any free port).

    With ``tls`` it speaks HTTPS, and a second socket requires client certificates (the mTLS token host)."""
    emulator = Emulator(config or EmulatorConfig())
    runner, bound_port = await start_site(emulator.make_app(), host, port, tls.server if tls else None)
    try:
        if tls is None:
            yield RunningEmulator(emulator, f"http://{host}:{bound_port}/", bound_port)
        else:
            cert_port = await add_site(runner, host, 0, tls.mutual)
            yield RunningEmulator(emulator, f"https://{host}:{bound_port}/", bound_port, f"https://{host}:{cert_port}")
    finally:
        await runner.cleanup()
