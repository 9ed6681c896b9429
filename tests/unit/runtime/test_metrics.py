"""The replica's own view: shards held, queue depth, bounded per-tenant series, queue wait, oldest in flight."""

from __future__ import annotations

import datetime as dt

from worker.intake.shard_consumers import QueueDepth
from worker.runtime.metrics import TOP_TENANTS, WorkerMetrics, tenant_commands


def sample(metrics: WorkerMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


class TestTenantCommands:
    """Top tenants by demand, the rest summed as ``other``: bounded whatever the number of tenants."""

    def test_waiting_goes_to_the_queue_head_and_in_flight_is_counted_exactly(self) -> None:
        loads = {0: QueueDepth(5, "a"), 1: QueueDepth(3, "b"), 2: QueueDepth(0, None)}
        assert tenant_commands(loads, ["a", "a", "b"]) == {"a": (5, 2), "b": (3, 1), "unknown": (0, 0)}

    def test_beyond_the_top_tenants_the_rest_is_other(self) -> None:
        loads = {i: QueueDepth(100 - i, f"t{i:02}") for i in range(25)}
        result = tenant_commands(loads, ["t24"])
        assert len(result) == TOP_TENANTS + 1
        assert set(result) - {"other"} == {f"t{i:02}" for i in range(TOP_TENANTS)}
        assert result["other"] == (sum(100 - i for i in range(TOP_TENANTS, 25)), 1)


def test_shard_gauges_are_read_from_the_held_shards_at_scrape_time() -> None:
    metrics = WorkerMetrics()
    assert sample(metrics, "dms_worker_shards_held") == 0
    loads = {0: QueueDepth(4, "a"), 3: QueueDepth(6, "b")}
    metrics.watch_shards(lambda: loads)
    key = metrics.command_started("a")
    assert sample(metrics, "dms_worker_shards_held") == 2
    assert sample(metrics, "dms_worker_queue_depth") == 10
    assert sample(metrics, "dms_worker_tenant_commands", tenant="b", state="waiting") == 6
    assert sample(metrics, "dms_worker_tenant_commands", tenant="a", state="in_flight") == 1
    assert sample(metrics, "dms_worker_in_flight") == 1
    assert (sample(metrics, "dms_worker_oldest_in_flight_seconds") or 0) > 0
    metrics.command_finished(key)
    metrics.command_finished(key)  # twice is harmless
    assert sample(metrics, "dms_worker_in_flight") == 0 and sample(metrics, "dms_worker_oldest_in_flight_seconds") == 0


def test_queue_wait_runs_from_the_cloudevent_time_else_the_amqp_timestamp() -> None:
    metrics = WorkerMetrics()
    now = dt.datetime.now(dt.UTC)
    waited = metrics.observe_queue_wait("dms.upload", now - dt.timedelta(seconds=30), None)
    assert waited is not None and 29 < waited < 60
    naive_timestamp = (now - dt.timedelta(seconds=5)).replace(tzinfo=None)  # AMQP timestamps come without a zone
    waited = metrics.observe_queue_wait("dms.upload", None, naive_timestamp)
    assert waited is not None and 4 < waited < 30
    assert metrics.observe_queue_wait("dms.upload", now + dt.timedelta(hours=1), None) == 0  # a clock ahead of ours
    assert metrics.observe_queue_wait("dms.upload", None, None) is None
    assert sample(metrics, "dms_worker_queue_wait_seconds_count", type="dms.upload") == 3
