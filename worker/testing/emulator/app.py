"""The emulator's aiohttp application: token endpoint (secret or mTLS), admin REST API, CMIS browser binding,
the Destination service's "find destination", control API (``/_emulator``: ``GET`` shows the fault set, ``POST``
replaces it, ``POST {}`` or ``DELETE`` clears it, see ``faults``; destinations, stats, token revocation)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from worker.testing.emulator import persistence
from worker.testing.emulator.admin import AdminApi
from worker.testing.emulator.base import EmulatorConfig
from worker.testing.emulator.browser import BrowserApi
from worker.testing.emulator.destinations import FIND_PREFIX, DestinationServiceApi
from worker.testing.emulator.faults import LOSES_ANSWER, InjectedFault, fault_response
from worker.testing.emulator.store import AdminFault, CmisFault

__all__ = ["CONTROL_PREFIX", "Emulator", "EmulatorConfig"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CONTROL_PREFIX = "/_emulator"


class Emulator(AdminApi, BrowserApi, DestinationServiceApi):
    """Holds the state; ``make_app`` wires its handlers into an aiohttp application."""

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=self.config.max_content_size + 2**20)
        app.router.add_post("/oauth/token", self.token)
        app.router.add_get("/rest/v2/repositories", self.list_repositories)
        app.router.add_post("/rest/v2/repositories", self.create_repository)
        app.router.add_delete("/rest/v2/repositories", self.delete_all_repositories)
        app.router.add_get("/rest/v2/repositories/count", self.count_repositories)
        app.router.add_get("/rest/v2/repositories/{id}", self.get_repository)
        app.router.add_delete("/rest/v2/repositories/{id}", self.delete_repository)
        app.router.add_get("/browser", self.service_root)
        app.router.add_get("/browser/{repo}", self.repository_get)
        app.router.add_post("/browser/{repo}", self.repository_post)
        app.router.add_get("/browser/{repo}/root{path:(/.*)?}", self.root_get)
        app.router.add_post("/browser/{repo}/root{path:(/.*)?}", self.root_post)
        app.router.add_get(FIND_PREFIX + "{name}", self.find_destination)
        app.router.add_put(CONTROL_PREFIX + "/destinations/{name}", self.put_destination)
        app.router.add_delete(CONTROL_PREFIX + "/destinations/{name}", self.delete_destination)
        app.router.add_get(CONTROL_PREFIX + "/stats", self.stats)
        app.router.add_get(CONTROL_PREFIX + "/faults", self.get_faults)
        app.router.add_post(CONTROL_PREFIX + "/faults", self.set_faults)
        app.router.add_delete(CONTROL_PREFIX + "/faults", self.clear_faults)
        app.router.add_post(CONTROL_PREFIX + "/tokens/revoke", self.revoke_tokens)
        app.router.add_post(CONTROL_PREFIX + "/token-lifetime", self.set_token_lifetime)
        return app

    # -- cross-cutting ---------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(CONTROL_PREFIX):
            return await handler(request)
        # answer_ms holds the answer until that long after the request came, the emulator's own work
        # included: one process answering a burst must not add its queueing to the DMS latency it plays.
        loop = asyncio.get_running_loop()
        self.requests.append((time.monotonic(), request.method, request.path, request.headers.get("User-Agent", "")))
        answer_at = loop.time() + self.faults.answer_after_s()
        if self.faults.config.latency_ms:
            await asyncio.sleep(self.faults.config.latency_ms / 1000)
        response = await self._answer(request, handler)
        if (delay := answer_at - loop.time()) > 0:
            await asyncio.sleep(delay)
        return response

    async def _answer(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # POSTs to the browser binding pick their fault once the form (and its cmisaction) is read.
        if not (request.method == "POST" and request.path.startswith("/browser")):
            fault = self.faults.pick(request.path, request.query.get("cmisselector"), method=request.method)
            if fault is not None and fault.kind == LOSES_ANSWER:
                request[LOSES_ANSWER] = fault
            elif fault is not None:
                return fault_response(request, fault)
        try:
            response = await handler(request)
        except CmisFault as fault:
            response = web.json_response({"exception": fault.exception, "message": fault.message}, status=fault.status)
        except AdminFault as fault:
            response = web.json_response({"message": fault.message}, status=fault.status)
        except InjectedFault as injected:
            return fault_response(request, injected.fault)
        if request.method in {"POST", "DELETE"} and self.config.data_dir and response.status < 400:
            persistence.save(self.state, self.config.data_dir)
        if (lost := request.get(LOSES_ANSWER)) is not None:
            return fault_response(request, lost)  # worked on, and the answer never leaves
        return response

    # -- OAuth -----------------------------------------------------------------------------------

    async def token(self, request: web.Request) -> web.StreamResponse:
        self.calls["token"] += 1
        form = {k: str(v) for k, v in (await request.post()).items()}
        form.update({k: v for k, v in request.query.items() if k == "grant_type"})
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        peer = request.transport.get_extra_info("peercert") if request.transport is not None else None
        if peer:  # an mTLS connection (the cert site): the verified certificate is the credential
            client = self.tokens.authenticate_certificate(form.get("client_id"), _common_name(peer))
        else:
            client = self.tokens.authenticate(request.headers.get("Authorization"), form)
        if client is None:
            return web.json_response({"error": "unauthorized", "error_description": "Bad credentials"}, status=401)
        token, expires_in = self.tokens.issue(client)
        return web.json_response(
            {
                "access_token": token,
                "token_type": "bearer",
                "expires_in": expires_in,
                "scope": "uaa.resource SDM_Admin SDM_User",
                "jti": token[:16],
            }
        )

    # -- control API (tests and ops only; not part of DMS) ----------------------------------------

    async def stats(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "tokens_issued": self.tokens.issued,
                "calls": dict(self.calls),
                "faults_injected": self.faults.injected,
                "repositories": len(self.state.repositories),
            }
        )

    async def get_faults(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.faults.config.as_dict())

    async def set_faults(self, request: web.Request) -> web.StreamResponse:
        """Replaces the whole fault set (``faults`` module docstring); a body-less POST is ``{}``."""
        try:
            self.faults.config.replace(await request.json() if request.body_exists else {})
        except (ValueError, TypeError) as exc:
            return web.json_response({"message": str(exc)}, status=400)
        self.faults.reseed()
        return web.json_response(self.faults.config.as_dict())

    async def clear_faults(self, request: web.Request) -> web.StreamResponse:
        self.faults.config.replace({})
        self.faults.reseed()
        return web.json_response(self.faults.config.as_dict())

    async def revoke_tokens(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"revoked": self.tokens.revoke_all()})

    async def set_token_lifetime(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.tokens.lifetime_s = float(body["seconds"])
        return web.json_response({"seconds": self.tokens.lifetime_s})


def _common_name(peercert: dict[str, object]) -> str | None:
    for rdn in peercert.get("subject", ()):  # type: ignore[attr-defined]
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None
