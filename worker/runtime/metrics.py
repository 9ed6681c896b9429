"""Prometheus metrics of one worker replica (its own registry, so several workers can share a process).

What a replica sees of its shard queues (shards held, ready commands, demand per tenant) is read at scrape
time from what the slot splitter last polled: no extra broker traffic. Per-tenant series are bounded: the
``TOP_TENANTS`` tenants with the most demand on this replica, the rest summed as ``tenant="other"``.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from worker.contracts import COMMAND_TYPES
from worker.errors import TransientError, UnknownTenant, WorkerError
from worker.intake.envelope import issued_at
from worker.results.policy import Outcome

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
QUEUE_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600, 7200, 21600)
TOP_TENANTS = 10
OTHER_TENANTS = "other"
UNKNOWN_TENANT = "unknown"


class QueueLoad(Protocol):
    """One held shard queue as last polled (``worker.intake.shard_consumers.QueueDepth``)."""

    @property
    def waiting(self) -> int: ...

    @property
    def tenant(self) -> str | None: ...


LoadSource = Callable[[], Mapping[int, QueueLoad]]


class IntakeView(Protocol):
    """What the gauges read of the dispatcher (``worker.intake.dispatcher.Dispatcher``)."""

    @property
    def runnable(self) -> int: ...

    @property
    def held_back(self) -> int: ...

    @property
    def held(self) -> int: ...

    parked: int
    held_bytes: int


def tenant_commands(
    waiting_by_queue: Mapping[int, QueueLoad], in_flight_tenants: list[str], top: int = TOP_TENANTS
) -> dict[str, tuple[int, int]]:
    """(waiting, in flight) per tenant, the ``top`` tenants by their sum and the rest as ``other`` (pure).

    In-flight counts are exact. A queue's waiting commands are all put on the tenant at its head (whose
    command it delivered last): the broker tells a queue's depth, not whose commands make it up."""
    per: dict[str, list[int]] = {}
    for load in waiting_by_queue.values():
        per.setdefault(load.tenant or UNKNOWN_TENANT, [0, 0])[0] += load.waiting
    for tenant in in_flight_tenants:
        per.setdefault(tenant, [0, 0])[1] += 1
    ranked = sorted(per.items(), key=lambda item: (-sum(item[1]), item[0]))
    result = {tenant: (w, f) for tenant, (w, f) in ranked[:top]}
    rest = ranked[top:]
    if rest:
        result[OTHER_TENANTS] = (sum(w for _, (w, _f) in rest), sum(f for _, (_w, f) in rest))
    return result


class _ReplicaView(Collector):
    """Shards held, their ready commands and per-tenant demand, computed at scrape time."""

    def __init__(self, in_flight_tenants: Callable[[], list[str]]) -> None:
        self.source: LoadSource | None = None
        self._in_flight_tenants = in_flight_tenants

    def collect(self) -> Iterator[Metric]:
        loads = dict(self.source()) if self.source is not None else {}
        yield GaugeMetricFamily("dms_worker_shards_held", "Shard queues this replica consumes", value=len(loads))
        yield GaugeMetricFamily(
            "dms_worker_queue_depth",
            "Ready commands in the shard queues this replica holds, as last polled",
            value=sum(load.waiting for load in loads.values()),
        )
        tenants = GaugeMetricFamily(
            "dms_worker_tenant_commands",
            f"Commands per tenant (top {TOP_TENANTS} by demand, the rest as tenant=other): state=in_flight is "
            "exact, state=waiting counts a queue's ready commands for the tenant at its head",
            labels=["tenant", "state"],
        )
        for tenant, (waiting, in_flight) in tenant_commands(loads, self._in_flight_tenants()).items():
            tenants.add_metric([tenant, "waiting"], waiting)
            tenants.add_metric([tenant, "in_flight"], in_flight)
        yield tenants


def _codes(error: type[WorkerError]) -> set[str]:
    return {error.code} | {code for sub in error.__subclasses__() for code in _codes(sub)}


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.commands = Counter(
            "dms_worker_commands", "Commands settled, by type and outcome", ["type", "outcome"], registry=self.registry
        )
        self.retries = Counter(
            "dms_worker_retries", "Commands scheduled for a retry", ["error_code"], registry=self.registry
        )
        self.dead_letters = Counter(
            "dms_worker_dead_letters", "Commands moved to the dead-letter queue", ["error_code"], registry=self.registry
        )
        self.in_flight = Gauge("dms_worker_in_flight", "Commands being processed now", registry=self.registry)
        self.bytes_uploaded = Counter(
            "dms_worker_uploaded_bytes", "Content bytes written to DMS", registry=self.registry
        )
        self.dms_requests = Histogram(
            "dms_worker_dms_request_seconds",
            "DMS HTTP request latency by operation and status (0 = no answer)",
            ["operation", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.token_fetches = Counter("dms_worker_token_fetches", "OAuth token fetches", registry=self.registry)
        self.token_fetch_failures = Counter(
            "dms_worker_token_fetch_failures", "OAuth token fetches that failed", registry=self.registry
        )
        self.end_to_end = Histogram(
            "dms_worker_end_to_end_seconds",
            "From the command's CloudEvent time to its result, by type",
            ["type"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "dms_worker_queue_wait_seconds",
            "From the command's CloudEvent time (else its AMQP timestamp) to the start of its first attempt",
            ["type"],
            buckets=QUEUE_WAIT_BUCKETS,
            registry=self.registry,
        )
        self.ready = Gauge(
            "dms_worker_ready", "1 when the replica last answered /readyz with ready, else 0", registry=self.registry
        )
        self._since: dict[object, tuple[float, str]] = {}  # in-flight command -> (monotonic start, tenant)
        self.oldest_in_flight = Gauge(
            "dms_worker_oldest_in_flight_seconds",
            "How long the longest-running in-flight command has been in this replica (0 when idle)",
            registry=self.registry,
        )
        self.oldest_in_flight.set_function(self._oldest_in_flight)
        self.concurrency_limit = Gauge(
            "dms_worker_concurrency_limit",
            "Commands this replica runs at once now (adaptive, at most IN_FLIGHT_LIMIT)",
            registry=self.registry,
        )
        self.waiting_for_slot = Gauge(
            "dms_worker_commands_waiting_for_slot",
            "Held commands free to run (nothing earlier of their document pending) waiting under the limit",
            registry=self.registry,
        )
        self.held_back = Gauge(
            "dms_worker_commands_held_back",
            "Held commands waiting for an earlier command of their own document",
            registry=self.registry,
        )
        self.parked = Gauge(
            "dms_worker_commands_parked",
            "Commands sleeping in retry backoff (not counted as running)",
            registry=self.registry,
        )
        self.read_ahead = Gauge(
            "dms_worker_read_ahead_commands",
            "Deliveries this replica holds unsettled (at most READ_AHEAD per held shard queue)",
            registry=self.registry,
        )
        self.read_ahead_bytes = Gauge(
            "dms_worker_read_ahead_bytes", "Body bytes of the deliveries this replica holds", registry=self.registry
        )
        self.read_ahead_paused = Gauge(
            "dms_worker_read_ahead_reading_paused",
            "1 while the replica reads no deliveries because the read-ahead reached READ_AHEAD_BYTES",
            registry=self.registry,
        )
        self._view = _ReplicaView(lambda: [tenant for _, tenant in self._since.values()])
        self.registry.register(self._view)
        self._start_series_at_zero()

    def _start_series_at_zero(self) -> None:
        """Every series an alert or dashboard rate() reads exists from the start: a counter's first increase
        is otherwise lost to ``increase()`` (it has no earlier sample to compare with)."""
        for command_type in COMMAND_TYPES:
            for outcome in (o for o in Outcome if o is not Outcome.RETRY):
                self.commands.labels(type=command_type, outcome=outcome.value)
        for code in sorted(_codes(TransientError) - {TransientError.code} | {UnknownTenant.code}):
            self.retries.labels(error_code=code)
            self.dead_letters.labels(error_code=code)

    def watch_shards(self, loads: LoadSource) -> None:
        """Where the shard-queue gauges come from: the held shards' loads as last polled."""
        self._view.source = loads

    def watch_intake(self, intake: IntakeView, limit: Callable[[], int], paused: Callable[[], bool]) -> None:
        """Where the intake gauges come from: the dispatcher's counts, the running limit, paused reading."""
        self.concurrency_limit.set_function(limit)
        self.waiting_for_slot.set_function(lambda: intake.runnable)
        self.held_back.set_function(lambda: intake.held_back)
        self.parked.set_function(lambda: intake.parked)
        self.read_ahead.set_function(lambda: intake.held)
        self.read_ahead_bytes.set_function(lambda: intake.held_bytes)
        self.read_ahead_paused.set_function(paused)

    def command_started(self, tenant: str | None) -> object:
        """Returns the key to pass to ``command_finished``."""
        key = object()
        self._since[key] = (time.monotonic(), tenant or UNKNOWN_TENANT)
        self.in_flight.inc()
        return key

    def command_finished(self, key: object) -> None:
        if self._since.pop(key, None) is not None:
            self.in_flight.dec()

    def _oldest_in_flight(self) -> float:
        starts = [since for since, _ in self._since.values()]
        return time.monotonic() - min(starts) if starts else 0.0

    def observe_queue_wait(
        self, command_type: str, issued: dt.datetime | None, amqp_timestamp: dt.datetime | None
    ) -> float | None:
        """Seconds the command waited before its first attempt (clock skew clamped at 0), or None if unknown."""
        since = issued_at(issued, amqp_timestamp)
        if since is None:
            return None
        waited = max(0.0, (dt.datetime.now(dt.UTC) - since).total_seconds())
        self.queue_wait.labels(type=command_type).observe(waited)
        return waited

    def retry_scheduled(self, error_code: str) -> None:
        self.retries.labels(error_code=error_code).inc()

    def command_ended(
        self,
        command_type: str,
        outcome: Outcome,
        error_code: str | None,
        uploaded_bytes: int | None,
        issued: dt.datetime | None,
    ) -> None:
        """A command settled: its outcome, the bytes it uploaded, its time from being issued to its end."""
        self.commands.labels(type=command_type, outcome=outcome.value).inc()
        if outcome is Outcome.DEAD_LETTER and error_code is not None:
            self.dead_letters.labels(error_code=error_code).inc()
        if uploaded_bytes is not None:
            self.bytes_uploaded.inc(uploaded_bytes)
        if issued is not None:
            issued = issued if issued.tzinfo else issued.replace(tzinfo=dt.UTC)
            self.end_to_end.labels(type=command_type).observe(
                max(0.0, (dt.datetime.now(dt.UTC) - issued).total_seconds())
            )

    def observe_dms_request(self, operation: str, status: int, seconds: float) -> None:
        self.dms_requests.labels(operation=operation, status=str(status)).observe(seconds)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
