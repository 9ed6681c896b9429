"""The deployment files are valid: Kubernetes manifests against the bundled API schemas, the rest checked."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from worker import contract_files
from worker.amqp.names import shard_queue_name
from worker.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
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


# The SAP BTP service operator's CRDs (services.cloud.sap.com/v1) are not in the Kubernetes schemas either;
# this checks the fields the operator requires and the ones we set.
BTP_OPERATOR_SCHEMAS = {
    "ServiceInstance": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "services.cloud.sap.com/v1"},
            "spec": {
                "type": "object",
                "required": ["serviceOfferingName", "servicePlanName"],
                "properties": {"serviceOfferingName": {"type": "string"}, "servicePlanName": {"type": "string"}},
            },
        },
    },
    "ServiceBinding": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "services.cloud.sap.com/v1"},
            "spec": {
                "type": "object",
                "required": ["serviceInstanceName"],
                "properties": {
                    "serviceInstanceName": {"type": "string"},
                    "secretName": {"type": "string"},
                    "parameters": {"type": "object"},
                    "credentialsRotationPolicy": {
                        "type": "object",
                        "required": ["enabled"],
                        "properties": {"enabled": {"type": "boolean"}},
                    },
                },
            },
        },
    },
}


def manifests() -> list[dict[str, Any]]:
    documents = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        documents += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return documents


@pytest.mark.parametrize("manifest", manifests(), ids=lambda m: f"{m['kind']}/{m['metadata']['name']}")
def test_kubernetes_manifests_are_valid(manifest: dict[str, Any]) -> None:
    if manifest["apiVersion"].startswith("keda.sh/"):
        jsonschema.validate(manifest, KEDA_SCHEMAS[manifest["kind"]])
    elif manifest["apiVersion"].startswith("services.cloud.sap.com/"):
        jsonschema.validate(manifest, BTP_OPERATOR_SCHEMAS[manifest["kind"]])
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


def test_the_deployment_mounts_each_btp_binding_under_the_service_binding_root() -> None:
    (deployment,) = [m for m in manifests() if m["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    root = next(e["value"] for e in container["env"] if e["name"] == "SERVICE_BINDING_ROOT")
    secrets = {v["name"]: v["secret"] for v in pod["volumes"] if "secret" in v}
    mounted = {
        secrets[m["name"]]["secretName"]: m["mountPath"] for m in container["volumeMounts"] if m["name"] in secrets
    }
    bindings = [m for m in manifests() if m["kind"] == "ServiceBinding"]
    instances = {
        m["metadata"]["name"]: m["spec"]["serviceOfferingName"] for m in manifests() if m["kind"] == "ServiceInstance"
    }
    assert {instances[b["spec"]["serviceInstanceName"]] for b in bindings} == {"sdm", "destination"}
    for binding in bindings:
        assert mounted[binding["spec"]["secretName"]].startswith(root + "/")
    assert all(s["optional"] for s in secrets.values())  # the same Deployment runs without BTP bindings


def test_the_cloud_foundry_manifest_binds_dms_or_the_destination_service_and_probes_readiness() -> None:
    (app,) = yaml.safe_load((DEPLOY / "cf" / "manifest.yml").read_text())["applications"]
    assert app["health-check-http-endpoint"] == "/livez" and app["readiness-health-check-http-endpoint"] == "/readyz"
    names = [s if isinstance(s, str) else s["name"] for s in app["services"]]
    assert names == ["dms-upload-worker-dms", "dms-upload-worker-destination"]
    dms = next(s for s in app["services"] if isinstance(s, dict))
    assert dms["parameters"]["xsuaa"]["credential-type"] == "x509"
    assert str(app["env"]["DMS_WORKER_HTTP_PORT"]) == str(Settings(_env_file=None).http_port)


def test_the_keda_queue_pattern_matches_the_worker_queues() -> None:
    (scaled,) = [m for m in manifests() if m["kind"] == "ScaledObject"]
    pattern = re.compile(scaled["spec"]["triggers"][0]["metadata"]["queueName"])
    settings = Settings(_env_file=None)
    assert pattern.match(shard_queue_name(settings.command_queue, 0))
    assert pattern.match(shard_queue_name(settings.command_queue, settings.shard_count - 1))
    assert not pattern.match(settings.dead_letter_queue) and not pattern.match(settings.command_queue)


def test_the_k8s_memory_request_and_limit_follow_the_readme_formula() -> None:
    """~80 MB + (IN_FLIGHT_LIMIT x MAX_FILE_SIZE + READ_AHEAD_BYTES) x 2.4 (inline uploads: the body, its parsed
    copy and the decoded bytes) is requested and fits under the pod's limit."""
    (deployment,) = [m for m in manifests() if m["kind"] == "Deployment"]
    (app,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "worker"]
    names = ("IN_FLIGHT_LIMIT", "MAX_FILE_SIZE", "READ_AHEAD_BYTES")
    env = {e["name"]: int(e["value"]) for e in app["env"] if e["name"].endswith(names)}
    held = env["DMS_WORKER_IN_FLIGHT_LIMIT"] * env["DMS_WORKER_MAX_FILE_SIZE"] + env["DMS_WORKER_READ_AHEAD_BYTES"]
    budget_mib = 80 + held * 2.4 / 2**20
    request, limit = app["resources"]["requests"]["memory"], app["resources"]["limits"]["memory"]
    assert request.endswith("Mi") and budget_mib <= int(request[:-2]) <= int(limit[:-2])


def test_the_spool_is_a_writable_volume_sized_for_the_fetches_at_once() -> None:
    """The root file system is read-only: content_url bodies are spooled to an emptyDir that holds
    CONTENT_FETCH_CONCURRENCY x MAX_FILE_SIZE."""
    (deployment,) = [m for m in manifests() if m["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (app,) = [c for c in pod["containers"] if c["name"] == "worker"]
    env = {e["name"]: e["value"] for e in app["env"] if "value" in e}
    (mount,) = [m for m in app["volumeMounts"] if m["mountPath"] == env["DMS_WORKER_SPOOL_DIR"]]
    assert not mount.get("readOnly") and app["securityContext"]["readOnlyRootFilesystem"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    size_limit = volume["emptyDir"]["sizeLimit"]
    needed = int(env["DMS_WORKER_CONTENT_FETCH_CONCURRENCY"]) * int(env["DMS_WORKER_MAX_FILE_SIZE"])
    assert size_limit.endswith("Mi") and needed <= int(size_limit[:-2]) * 2**20


def test_dockerfile_runs_as_non_root_with_a_health_check() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^USER 10001", text, re.M) and "HEALTHCHECK" in text and "/livez" in text


def test_compose_wires_worker_to_broker_and_emulator() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert set(compose["services"]) == {"rabbitmq", "dms-emulator", "worker"}
    assert "dms-emulator:8085" in compose["services"]["worker"]["environment"]["DMS_WORKER_DESTINATION"]


def test_compose_does_not_take_the_local_brokers_port_and_enables_the_sharding_plugin() -> None:
    rabbitmq = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["rabbitmq"]
    host_ports = [port.rsplit(":", 2)[-2] for port in rabbitmq["ports"]]
    assert "5672" not in host_ports and "15672" not in host_ports
    (mount,) = [v for v in rabbitmq["volumes"] if v.split(":")[1] == "/etc/rabbitmq/enabled_plugins"]
    plugins = (DEPLOY / mount.split(":")[0]).read_text().strip()
    assert re.fullmatch(r"\[[a-z_,]+\]\.", plugins) and "rabbitmq_sharding" in plugins
    assert "rabbitmq_management" in plugins  # the image's own plugins stay enabled


def test_the_emulator_can_write_its_data_dir_in_compose() -> None:
    emulator = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["dms-emulator"]
    data_dir = emulator["command"][emulator["command"].index("--data-dir") + 1]
    (volume,) = emulator["volumes"]
    assert volume.split(":")[1] == data_dir  # a named volume takes the image directory's owner...
    stage = re.split(r"^FROM ", (DEPLOY / "Dockerfile").read_text(), flags=re.M)
    emulator_stage = next(part for part in stage if part.startswith("base AS emulator"))
    user = re.search(r"^USER (\d+):(\d+)$", emulator_stage, re.M)
    assert user is not None  # ...which the stage creates for the uid it runs as
    assert f"mkdir {data_dir} && chown {user.group(1)}:{user.group(2)} {data_dir}" in emulator_stage


def test_rabbitmq_definitions_match_the_topology_code() -> None:
    assert str(contract_files.DEFINITIONS_FILE) not in contract_files.stale(REPO_ROOT)


def test_the_production_image_leaves_the_testing_package_out() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    last_stage = re.split(r"^FROM ", text, flags=re.M)[-1]
    assert last_stage.startswith("base AS worker") and "COPY --from=build /install-production " in last_stage
    assert re.search(r"rm -r /install-production/\S+/site-packages/worker/testing$", text, re.M)
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert compose["services"]["dms-emulator"]["build"]["target"] == "emulator"
    assert compose["services"]["worker"]["build"]["target"] == "worker"


def console_manifests() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "console" / "console.yaml").read_text()) if d]


@pytest.mark.parametrize("manifest", console_manifests(), ids=lambda m: f"{m['kind']}/{m['metadata']['name']}")
def test_the_console_manifests_are_valid(manifest: dict[str, Any]) -> None:
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def test_the_console_runs_apart_with_the_broker_only_and_is_not_exposed() -> None:
    """Its own folder (``kubectl apply -f deploy/k8s/`` leaves it out), no DMS credentials, a ClusterIP Service
    that a NetworkPolicy guards, users from a mounted Secret file, probes that only open the port."""
    kinds = {m["kind"]: m for m in console_manifests()}
    assert not any(m["metadata"]["name"].endswith("console") for m in manifests())
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["console"] and "envFrom" not in container
    env = {e["name"]: e for e in container["env"]}
    assert {ref["valueFrom"]["secretKeyRef"]["name"] for ref in env.values() if "valueFrom" in ref} == {
        "dms-upload-worker-console"
    }
    assert not any(name.startswith(("DMS_WORKER_DESTINATION", "SERVICE_BINDING")) for name in env)
    users_file = Path(env["DMS_WORKER_CONSOLE_USERS_FILE"]["value"])
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(users_file.parent)]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "dms-upload-worker-console"
    assert users_file.name in kinds["Secret"]["stringData"]
    port = int(env["DMS_WORKER_CONSOLE_PORT"]["value"])
    assert "tcpSocket" in container["readinessProbe"] and "tcpSocket" in container["livenessProbe"]
    assert kinds["Service"]["spec"]["type"] == "ClusterIP" and "Ingress" not in kinds
    assert kinds["NetworkPolicy"]["spec"]["ingress"][0]["ports"] == [{"port": port, "protocol": "TCP"}]
    (app,) = yaml.safe_load((DEPLOY / "cf" / "console.yml").read_text())["applications"]
    assert app["no-route"] is True and "services" not in app and app["command"].endswith("worker console")
    assert Settings(_env_file=None).console_host == "127.0.0.1"  # the default the CF tunnel relies on
