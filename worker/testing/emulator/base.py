"""The emulator's state holder and what every API handler needs: configuration, auth, repository lookup."""

from __future__ import annotations

import json
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from worker.testing.emulator import persistence
from worker.testing.emulator.content import ContentStore, DirectoryContentStore, MemoryContentStore
from worker.testing.emulator.faults import FaultConfig, FaultInjector
from worker.testing.emulator.store import CmisFault, DmsState, Repository
from worker.testing.emulator.tokens import Client, TokenAuthority


@dataclass
class EmulatorConfig:
    clients: list[Client] = field(
        default_factory=lambda: [Client("emulator-client", "emulator-secret", "default-zone")]
    )
    # The BTP Destination service's own client (its binding's clientid/clientsecret) and its destinations.
    destination_service: Client = field(
        default_factory=lambda: Client("destination-client", "destination-secret", "destination-service")
    )
    destinations: dict[str, dict[str, str]] = field(default_factory=dict)
    token_lifetime_s: float = 3600.0
    max_content_size: int = 400 * 1024 * 1024
    data_dir: Path | None = None
    faults: FaultConfig = field(default_factory=FaultConfig)


class EmulatorBase:
    """State, token authority and fault injector, shared by the admin and browser-binding handlers."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        content: ContentStore = DirectoryContentStore(config.data_dir) if config.data_dir else MemoryContentStore()
        self.state = DmsState(content, config.max_content_size)
        if config.data_dir:
            persistence.load(self.state, config.data_dir)
        self.tokens = TokenAuthority([*config.clients, config.destination_service], config.token_lifetime_s)
        self.destinations = dict(config.destinations)
        self.faults = FaultInjector(config.faults)
        self.calls: Counter[str] = Counter()
        # (monotonic time, method, path, User-Agent) of the latest requests, for tests that ask who called when
        self.requests: deque[tuple[float, str, str, str]] = deque(maxlen=100_000)

    def _zone(self, request: web.Request) -> str:
        zone = self.tokens.zone_for(request.headers.get("Authorization"))
        if zone is None:
            raise web.HTTPUnauthorized(
                text=json.dumps({"exception": "unauthorized", "message": "Invalid or expired token"}),
                content_type="application/json",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return zone

    def _cmis_repo(self, request: web.Request) -> Repository:
        zone = self._zone(request)
        repo = self.state.repositories.get(request.match_info["repo"])
        if repo is None or repo.zone != zone:
            raise CmisFault("objectNotFound", f"Repository {request.match_info['repo']} not found")
        return repo

    def _base_url(self, request: web.Request) -> str:
        return f"{request.scheme}://{request.host}/"
