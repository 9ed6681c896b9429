"""A real 3-node RabbitMQ cluster for the session, started from tests/cluster/cluster.sh and removed afterwards,
also when a test fails. The machine's own broker (5672) is never touched."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .nodes import NODES, Cluster


def _can_run_nodes() -> str | None:
    if shutil.which("rabbitmq-server") is None or shutil.which("rabbitmqctl") is None:
        return "RabbitMQ is not installed (bash deploy/dev.sh test installs it)"
    if os.geteuid() != 0:
        return "starting cluster nodes needs root (Debian's wrapper runs them as the rabbitmq user)"
    return None


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    reason = _can_run_nodes()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    logs = tmp_path_factory.mktemp("cluster-logs")  # the nodes' logs are kept here after the cluster is gone
    nodes = Cluster(Path("/tmp") / f"dms-upload-worker-cluster-{os.getpid()}-{uuid.uuid4().hex[:6]}", save_logs=logs)
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture
def all_nodes_up(cluster: Cluster) -> Iterator[Cluster]:
    """The cluster with all three nodes running, before the test and (for the next one) after it."""
    _revive(cluster)
    yield cluster
    _revive(cluster)


def _revive(cluster: Cluster) -> None:
    for node in NODES:
        pid_file = cluster.directory / f"node{node}" / "pid"
        try:
            alive = pid_file.exists() and _pid_alive(int(pid_file.read_text().strip()))
        except ValueError:
            alive = False
        if not alive:
            cluster.restart(node)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
