"""The Grafana dashboard and the Prometheus alert rules in deploy/ only read metrics the worker exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from worker.runtime.metrics import WorkerMetrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARDS = sorted((DEPLOY / "grafana").glob("*.json"))
METRIC_NAME = re.compile(r"\bdms_[a-z0-9_]+")
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"), "gauge": ("",)}


def exported_names() -> set[str]:
    """Every series name a worker's registry can serve, samples or not yet."""
    names: set[str] = set()
    for family in WorkerMetrics().registry.collect():
        names |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
        names |= {sample.name for sample in family.samples}
    return names


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))  # a collapsed row keeps its panels inside


def test_there_is_a_dashboard() -> None:
    assert [p.name for p in DASHBOARDS] == ["dms-upload-worker.json"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_panel_query_names_metrics_the_worker_exports(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    exported = exported_names()
    queries = [
        (panel["title"], target["expr"]) for panel in panels(dashboard["panels"]) for target in panel.get("targets", [])
    ]
    assert len(queries) >= 15
    for title, expr in queries:
        named = set(METRIC_NAME.findall(expr))
        assert named, f"{title!r} queries no worker metric: {expr}"
        assert named <= exported, f"{title!r} queries {sorted(named - exported)}, which the worker does not export"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_the_dashboard_has_its_rows_and_unique_panel_ids(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    everything = list(panels(dashboard["panels"]))
    assert len({p["id"] for p in everything}) == len(everything)
    rows = [p["title"] for p in everything if p["type"] == "row"]
    assert rows == [
        "Throughput and outcomes",
        "Retries and dead letters",
        "Latency",
        "Work in progress",
        "Tokens and fleet",
    ]
    datasources = {t["datasource"]["uid"] for p in everything for t in p.get("targets", [])}
    assert datasources == {"${datasource}"}  # chosen on import, never a uid from someone's Grafana


def test_alert_rules_read_only_exported_metrics_and_each_rule_is_unit_tested() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    tests = yaml.safe_load((DEPLOY / "prometheus" / "alerts.test.yml").read_text())
    exported = exported_names()
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    for rule in alerts:
        named = set(METRIC_NAME.findall(rule["expr"]))
        assert named and named <= exported, rule["alert"]
    tested = {case["alertname"] for test in tests["tests"] for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert tested == {rule["alert"] for rule in alerts}  # every alert is shown to fire in a promtool test
