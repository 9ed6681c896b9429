"""Fault injection for the emulator: latency, error shares, 429, dropped connections, lost answers, scripted faults.

``drop`` aborts the connection before the request is worked on (nothing changes in DMS); ``lose_answer``
works the request (a write takes effect) and then aborts the connection instead of answering: the client
sees the same broken connection and cannot tell which of the two happened.

Rates are drawn from a seeded RNG so a run is repeatable; scripted faults fire a fixed number of times
on requests whose path starts with a prefix, for deterministic tests.

At runtime (``worker.testing.emulator.app``): ``GET /_emulator/faults`` shows the fault set in force;
``POST /_emulator/faults`` with a JSON object replaces the whole set: the keys given, every other one at its
default (no fault), so ``POST {}`` clears every fault; ``DELETE /_emulator/faults`` clears them too. Each
answers the set now in force. A body that is not an object, or names no fault setting, is refused (400)
and changes nothing.
``--faults`` sets only the set the emulator starts with.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields
from typing import Any

from aiohttp import web


@dataclass
class ScriptedFault:
    kind: str  # "status" | "drop" | "lose_answer" | "rate_limit"
    times: int = 1
    status: int = 503
    retry_after: int = 1
    path_prefix: str = "/"
    action: str | None = None  # match cmisaction=... (form) or cmisselector=... (query) if given
    name: str | None = None  # match a browser-binding POST whose cmis:name is this (one document's createDocument)
    method: str | None = None  # match this HTTP method (e.g. POST: a repository create, not the listing)


@dataclass
class FaultConfig:
    latency_ms: float = 0.0  # waited before the request is worked on
    answer_ms: float = 0.0  # the answer leaves at least this long after the request came, work included
    answer_jitter_ms: float = 0.0  # answer_ms varies by up to this much either way (uniform, seeded)
    error_rate: float = 0.0
    error_statuses: list[int] = field(default_factory=lambda: [500, 502, 503])
    rate_limit_rate: float = 0.0
    retry_after: int = 1
    drop_rate: float = 0.0
    lose_answer_rate: float = 0.0  # the request is worked on, then its answer is lost
    scripted: list[ScriptedFault] = field(default_factory=list)
    seed: int | None = None

    def update(self, patch: dict[str, Any]) -> None:
        """Merges ``patch`` in (the in-process tests' ``set_faults``); over HTTP a POST replaces instead."""
        if not isinstance(patch, dict):
            raise TypeError('faults are a JSON object of fault settings, e.g. {"error_rate": 0.5}')
        for key, value in patch.items():
            if key == "scripted":
                self.scripted = [ScriptedFault(**item) for item in value]
            elif key in {
                "latency_ms",
                "answer_ms",
                "answer_jitter_ms",
                "error_rate",
                "error_statuses",
                "rate_limit_rate",
                "retry_after",
                "drop_rate",
                "lose_answer_rate",
                "seed",
            }:
                setattr(self, key, value)
            else:
                raise ValueError(f"unknown fault setting {key!r}")

    def replace(self, settings: dict[str, Any]) -> None:
        """The whole set becomes ``settings`` on top of the defaults; on a bad one, nothing changes."""
        fresh = FaultConfig()
        fresh.update(settings)
        for item in fields(self):
            setattr(self, item.name, getattr(fresh, item.name))  # in place: the emulator's config holds this object

    def as_dict(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "answer_ms": self.answer_ms,
            "answer_jitter_ms": self.answer_jitter_ms,
            "error_rate": self.error_rate,
            "error_statuses": self.error_statuses,
            "rate_limit_rate": self.rate_limit_rate,
            "retry_after": self.retry_after,
            "drop_rate": self.drop_rate,
            "lose_answer_rate": self.lose_answer_rate,
            "scripted": [vars(s) for s in self.scripted],
            "seed": self.seed,
        }


class FaultInjector:
    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        self._rng = random.Random(config.seed)
        self.injected = 0

    def reseed(self) -> None:
        self._rng = random.Random(self.config.seed)

    def answer_after_s(self) -> float:
        """How long after its request an answer leaves: ``answer_ms``, give or take ``answer_jitter_ms``."""
        jitter = self.config.answer_jitter_ms
        spread = self._rng.uniform(-jitter, jitter) if jitter else 0.0
        return max(0.0, self.config.answer_ms + spread) / 1000

    def _scripted_for(self, path: str, action: str | None, name: str | None, method: str) -> ScriptedFault | None:
        for fault in self.config.scripted:
            if fault.times <= 0 or not path.startswith(fault.path_prefix):
                continue
            if fault.method is not None and fault.method.upper() != method:
                continue
            if fault.action is not None and fault.action.lower() != (action or "").lower():
                continue
            if fault.name is not None and fault.name != name:
                continue
            fault.times -= 1
            return fault
        return None

    def pick(self, path: str, action: str | None, name: str | None = None, method: str = "GET") -> ScriptedFault | None:
        """The fault to inject into this request, if any (scripted ones first, then the rates)."""
        cfg = self.config
        fault = self._scripted_for(path, action, name, method)
        if fault is None:
            roll = self._rng.random()
            if roll < (edge := cfg.drop_rate):
                fault = ScriptedFault(kind="drop")
            elif roll < (edge := edge + cfg.lose_answer_rate):
                fault = ScriptedFault(kind="lose_answer")
            elif roll < (edge := edge + cfg.rate_limit_rate):
                fault = ScriptedFault(kind="rate_limit", retry_after=cfg.retry_after)
            elif roll < edge + cfg.error_rate:
                fault = ScriptedFault(kind="status", status=self._rng.choice(cfg.error_statuses))
        if fault is not None:
            self.injected += 1
        return fault


class InjectedFault(Exception):
    """Raised by a handler that picked its fault only after reading the request; the middleware answers it."""

    def __init__(self, fault: ScriptedFault) -> None:
        super().__init__(fault.kind)
        self.fault = fault


LOSES_ANSWER = "lose_answer"


def fault_response(request: web.Request, fault: ScriptedFault) -> web.StreamResponse:
    if fault.kind in {"drop", LOSES_ANSWER}:
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)  # never reaches the client: the connection is gone
    if fault.kind == "rate_limit":
        return web.json_response(
            {"exception": "tooManyRequests", "message": "Rate limit exceeded (emulated)"},
            status=429,
            headers={"Retry-After": str(fault.retry_after)},
        )
    return web.json_response(
        {"exception": "runtime", "message": f"Emulated failure {fault.status}"}, status=fault.status
    )
