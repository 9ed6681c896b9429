"""The deployment files are valid: Kubernetes manifests against the bundled API schemas, the rest checked."""

from __future__ import annotations

import re
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from worker import contract_files

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S_VERSION = "1.30"

# KEDA's CRDs are not in the Kubernetes schemas; this checks the fields KEDA requires for what we use.
KEDA_SCHEMAS = {
    "ScaledObject": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"},
            "spec": {
                "type": "object",
                "required": ["scaleTargetRef", "triggers"],
                "properties": {
                    "scaleTargetRef": {"type": "object", "required": ["name"]},
                    "minReplicaCount": {"type": "integer", "minimum": 0},
                    "maxReplicaCount": {"type": "integer", "minimum": 1},
                    "triggers": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["type", "metadata"],
                            "properties": {"metadata": {"type": "object", "additionalProperties": {"type": "string"}}},
                        },
                    },
                },
            },
        },
    },
    "TriggerAuthentication": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "secretTargetRef": {
                        "type": "array",
                        "items": {"type": "object", "required": ["parameter", "name", "key"]},
                    }
                },
            }
        },
    },
}


def manifests() -> list[dict]:
    documents = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        documents += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return documents


@pytest.mark.parametrize("manifest", manifests(), ids=lambda m: f"{m['kind']}/{m['metadata']['name']}")
def test_kubernetes_manifests_are_valid(manifest: dict) -> None:
    if manifest["apiVersion"].startswith("keda.sh/"):
        jsonschema.validate(manifest, KEDA_SCHEMAS[manifest["kind"]])
    else:
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def test_the_deployment_probes_the_endpoints_the_worker_serves() -> None:
    (deployment,) = [m for m in manifests() if m["kind"] == "Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    worker_grace = next(e["value"] for e in container["env"] if e["name"] == "DMS_WORKER_SHUTDOWN_GRACE_S")
    assert grace > float(worker_grace)
    secret_keys = next(m for m in manifests() if m["kind"] == "Secret")["stringData"]
    keda_auth = next(m for m in manifests() if m["kind"] == "TriggerAuthentication")
    assert all(ref["key"] in secret_keys for ref in keda_auth["spec"]["secretTargetRef"])


def test_the_keda_queue_pattern_matches_the_worker_queues() -> None:
    (scaled,) = [m for m in manifests() if m["kind"] == "ScaledObject"]
    pattern = re.compile(scaled["spec"]["triggers"][0]["metadata"]["queueName"])
    assert pattern.match("dms.commands") and pattern.match("dms.commands.shard.7")
    assert not pattern.match("dms.commands.dlq")


def test_dockerfile_runs_as_non_root_with_a_health_check() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^USER 10001", text, re.M) and "HEALTHCHECK" in text and "/livez" in text


def test_compose_wires_worker_to_broker_and_emulator() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert set(compose["services"]) == {"rabbitmq", "dms-emulator", "worker"}
    assert "dms-emulator:8085" in compose["services"]["worker"]["environment"]["DMS_WORKER_DESTINATION"]


def test_rabbitmq_definitions_match_the_topology_code() -> None:
    assert str(contract_files.DEFINITIONS_FILE.relative_to(contract_files.REPO_ROOT)) not in contract_files.stale()
