"""Prometheus metrics of one worker replica (its own registry, so several workers can share a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


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
        self.end_to_end = Histogram(
            "dms_worker_end_to_end_seconds",
            "From the command's CloudEvent time to its result, by type",
            ["type"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def observe_dms_request(self, operation: str, status: int, seconds: float) -> None:
        self.dms_requests.labels(operation=operation, status=str(status)).observe(seconds)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
