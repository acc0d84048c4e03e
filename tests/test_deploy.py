"""The container and Kubernetes files agree with the worker: real settings, real endpoints."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from worker.config import RunSettings, env_name

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {env_name(field) for field in RunSettings.model_fields}


def manifests() -> dict[str, dict[str, object]]:
    out = {}
    for path in sorted((ROOT / "deploy").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            out[f"{document['kind']}/{path.name}"] = document
    return out


def test_every_variable_the_image_and_the_manifests_set_is_a_setting() -> None:
    used = set(re.findall(r"\bWORKER_[A-Z_]+\b", (ROOT / "Dockerfile").read_text()))
    for path in (ROOT / "deploy").glob("*.yaml"):
        used |= set(re.findall(r"\bWORKER_[A-Z_]+\b", path.read_text()))
    assert used
    assert used <= SETTINGS, sorted(used - SETTINGS)


def test_the_deployment_probes_the_health_endpoints_on_the_metrics_port() -> None:
    found = manifests()
    deployment = next(doc for name, doc in found.items() if name.startswith("Deployment/"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]  # type: ignore[index]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["ports"][0]["containerPort"] == RunSettings.model_fields["http_port"].default
    # Longer than the shutdown grace, so that a rollout lets in-flight actions finish.
    grace = next(float(e["value"]) for e in container["env"] if e["name"] == "WORKER_SHUTDOWN_GRACE")
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > grace  # type: ignore[index]


def test_keda_reads_the_checkpoints_the_workers_write() -> None:
    found = manifests()
    scaled = next(doc for name, doc in found.items() if name.startswith("ScaledObject/"))
    deployment = next(doc for name, doc in found.items() if name.startswith("Deployment/"))
    [trigger] = scaled["spec"]["triggers"]  # type: ignore[index]
    assert trigger["type"] == "azure-eventhub"
    metadata = trigger["metadata"]
    assert metadata["checkpointStrategy"] == "blobMetadata"
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}  # type: ignore[index]
    assert metadata["blobContainer"] == env["WORKER_CHECKPOINT_CONTAINER"]
    assert metadata["consumerGroup"] == env["WORKER_CONSUMER_GROUP"]
    assert {metadata["connectionFromEnv"], metadata["storageConnectionFromEnv"]} <= SETTINGS
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]  # type: ignore[index]
