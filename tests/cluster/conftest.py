"""A real 3-node RabbitMQ cluster for the session, started from tests/cluster/cluster.sh and removed afterwards,
also when a test fails. The machine's own broker (5672) is never touched."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .nodes import NODES, Cluster, started_nodes


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from started_nodes(tmp_path_factory, "cluster", Cluster(Path()))


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
