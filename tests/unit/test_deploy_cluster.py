"""The cluster examples in deploy/ give the worker every node, in a form the settings accept."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from worker.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_the_cluster_compose_file_gives_the_worker_all_three_nodes() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.cluster.yaml").read_text())
    nodes = sorted(name for name in compose["services"] if name.startswith("rabbit-"))
    assert nodes == ["rabbit-1", "rabbit-2", "rabbit-3"]
    worker = compose["services"]["worker"]
    assert set(worker["depends_on"]) >= set(nodes)  # quorum queues get members on the nodes present
    urls = json.loads(worker["environment"]["DMS_WORKER_AMQP_URLS"])
    assert urls == [f"amqp://guest:guest@{node}:5672/" for node in nodes]
    conf = (DEPLOY / "rabbitmq" / "cluster.conf").read_text()
    assert all(f"rabbit@{node}" in conf for node in nodes)
    assert len({compose["services"][n]["environment"]["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"] for n in nodes}) == 1


def test_the_k8s_secret_lists_the_nodes_as_the_settings_read_them(monkeypatch) -> None:
    secret = yaml.safe_load((DEPLOY / "k8s" / "secret.yaml").read_text())
    monkeypatch.setenv("DMS_WORKER_AMQP_URLS", secret["stringData"]["DMS_WORKER_AMQP_URLS"])
    assert len(Settings(_env_file=None).broker_urls()) == 3
