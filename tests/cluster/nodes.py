"""Drives tests/cluster/cluster.sh: a real RabbitMQ cluster (3 nodes, or a lone node) on this machine, away from
its own broker."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("cluster.sh")
NODES = (1, 2, 3)


@dataclass
class Cluster:
    directory: Path
    port: int = 5681
    dist_port: int = 25681
    prefix: str = "dmsc"
    save_logs: Path | None = None
    size: int = len(NODES)

    @property
    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "CLUSTER_DIR": str(self.directory),
            "CLUSTER_PORT": str(self.port),
            "CLUSTER_DIST_PORT": str(self.dist_port),
            "CLUSTER_NODE_PREFIX": self.prefix,
            "CLUSTER_NODES": str(self.size),
            **({"CLUSTER_SAVE_LOGS": str(self.save_logs)} if self.save_logs else {}),
        }

    def _run(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run(
            ["bash", str(SCRIPT), *args], env=self._env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"cluster.sh {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
        return done.stdout

    def start(self) -> None:
        self._run("start")

    def stop(self) -> None:
        self._run("stop")

    def kill(self, node: int) -> None:
        self._run("kill", str(node))

    def restart(self, node: int) -> None:
        self._run("restart", str(node))

    def url(self, node: int) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port + node - 1}/"

    def urls(self, first: int = 1) -> list[str]:
        """Every node's URL, starting with node ``first``: the node a client connects to while it is up."""
        order = [first, *(n for n in NODES if n != first)]
        return [self.url(n) for n in order]

    def node_name(self, node: int) -> str:
        return f"{self.prefix}{node}@localhost"

    def node_of(self, name: str) -> int:
        return next(n for n in NODES if self.node_name(n) == name)

    def ctl(self, node: int, *args: str) -> str:
        return self._run("ctl", str(node), *args, timeout=60)

    def running_nodes(self, asked: int) -> set[int]:
        out = self.ctl(asked, "eval", "rabbit_nodes:all_running().")
        return {n for n in NODES if self.node_name(n) in out}

    def quorum_queues(self, asked: int, prefix: str) -> dict[str, tuple[int, set[int], set[int]]]:
        """name -> (leader node, member nodes, online nodes) of the quorum queues whose name starts with prefix."""
        rows: dict[str, tuple[int, set[int], set[int]]] = {}
        out = self.ctl(asked, "list_queues", "name", "leader", "members", "online", "--no-table-headers")
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) != 4 or not parts[0].startswith(prefix):
                continue
            members = {n for n in NODES if self.node_name(n) in parts[2]}
            online = {n for n in NODES if self.node_name(n) in parts[3]}
            rows[parts[0]] = (self.node_of(parts[1]), members, online)
        return rows


def _cannot_run_nodes() -> str | None:
    if shutil.which("rabbitmq-server") is None or shutil.which("rabbitmqctl") is None:
        return "RabbitMQ is not installed (bash deploy/dev.sh test installs it)"
    if os.geteuid() != 0:
        return "starting cluster nodes needs root (Debian's wrapper runs them as the rabbitmq user)"
    return None


def started_nodes(tmp_path_factory: pytest.TempPathFactory, name: str, shape: Cluster) -> Iterator[Cluster]:
    """Starts the nodes ``shape`` describes in a directory of their own."""
    reason = _cannot_run_nodes()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    logs = tmp_path_factory.mktemp(f"{name}-logs")  # the nodes' logs are kept here after the nodes are gone
    directory = Path("/tmp") / f"dms-upload-worker-{name}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    nodes = dataclasses.replace(shape, directory=directory, save_logs=logs)
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()
