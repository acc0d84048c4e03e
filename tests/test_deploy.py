"""The container and Kubernetes files agree with the worker (real settings, real endpoints), with the
Kubernetes API and KEDA's schemas, and with each other."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.manifests import (
    DEPLOY,
    EVENTHUB_FROM_ENV,
    EVENTHUB_METADATA,
    KEDA_API,
    KUBERNETES_VERSIONS,
    ROOT,
    VARIANTS,
    keda_errors,
    kubernetes_errors,
    manifests,
    the,
)
from worker.config import RunSettings, env_name
from worker.rulefiles.loading import load_rules

SETTINGS = {env_name(field) for field in RunSettings.model_fields}
DOCUMENTS = [
    pytest.param(variant, m.document, id=f"{variant}: {m.kind}") for variant in VARIANTS for m in manifests(variant)
]


def container(variant: str) -> dict[str, Any]:
    [found] = the(variant, "Deployment")["spec"]["template"]["spec"]["containers"]
    return found  # type: ignore[no-any-return]


def env_of(variant: str) -> dict[str, str]:
    """The variables the Deployment sets itself (not those from a Secret)."""
    return {e["name"]: e["value"] for e in container(variant)["env"]}


def trigger(variant: str) -> dict[str, Any]:
    [found] = the(variant, "ScaledObject")["spec"]["triggers"]
    return found  # type: ignore[no-any-return]


def default(field: str) -> Any:
    return RunSettings.model_fields[field].default


def test_every_variable_the_image_and_the_manifests_set_is_a_setting() -> None:
    used = set(re.findall(r"\bWORKER_[A-Z_]+\b", (ROOT / "Dockerfile").read_text()))
    for path in DEPLOY.rglob("*.yaml"):
        used |= set(re.findall(r"\bWORKER_[A-Z_]+\b", path.read_text()))
    assert used
    assert used <= SETTINGS, sorted(used - SETTINGS)


def test_every_manifest_belongs_to_a_variant() -> None:
    """Of the deployment's manifests: deploy/monitoring (the Prometheus operator's) has tests of its own."""
    deployment = {path for path in DEPLOY.rglob("*.yaml") if DEPLOY / "monitoring" not in path.parents}
    assert deployment == {path for paths in VARIANTS.values() for path in paths}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(("variant", "document"), DOCUMENTS)
def test_a_manifest_is_valid_for_the_kubernetes_api_or_kedas_crd(
    variant: str, document: dict[str, Any], version: str
) -> None:
    if document["apiVersion"] == KEDA_API:
        assert keda_errors(document, version) == []
    else:
        assert kubernetes_errors(document, version) == []


def test_the_schemas_refuse_a_field_they_do_not_know() -> None:
    scaled = copy.deepcopy(the("connection-string", "ScaledObject"))
    scaled["spec"]["minReplicas"] = 1
    assert keda_errors(scaled) == ["spec: Additional properties are not allowed ('minReplicas' was unexpected)"]
    deployment = copy.deepcopy(the("connection-string", "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["startupprobe"] = {}
    [error] = kubernetes_errors(deployment, KUBERNETES_VERSIONS[-1])
    assert "'startupprobe' was unexpected" in error


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_trigger_names_only_metadata_kedas_scaler_reads(variant: str) -> None:
    keys = set(trigger(variant)["metadata"])
    known = EVENTHUB_METADATA | {f"{key}FromEnv" for key in EVENTHUB_FROM_ENV}
    assert keys <= known, sorted(keys - known)
    assert trigger(variant)["type"] == "azure-eventhub"


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_deployment_probes_the_health_endpoints_on_the_metrics_port(variant: str) -> None:
    worker = container(variant)
    assert worker["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert worker["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert worker["ports"][0]["containerPort"] == default("http_port")
    # Longer than the shutdown grace, so that a rollout lets in-flight actions finish.
    grace = float(env_of(variant)["WORKER_SHUTDOWN_GRACE"])
    assert the(variant, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > grace


@pytest.mark.parametrize("variant", VARIANTS)
def test_keda_alone_sets_the_replica_count(variant: str) -> None:
    deployment = the(variant, "Deployment")
    assert the(variant, "ScaledObject")["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert "replicas" not in deployment["spec"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_root_is_read_only_and_the_working_directory_writable(variant: str) -> None:
    worker = container(variant)
    assert worker["securityContext"]["readOnlyRootFilesystem"] is True
    [workdir] = re.findall(r"^WORKDIR (\S+)$", (ROOT / "Dockerfile").read_text().split("\nFROM ")[-1], re.MULTILINE)
    writable = {m["mountPath"] for m in worker["volumeMounts"] if not m.get("readOnly")}
    assert writable == {workdir}


@pytest.mark.parametrize("variant", VARIANTS)
def test_keda_reads_the_checkpoints_the_workers_write(variant: str) -> None:
    metadata = trigger(variant)["metadata"]
    env = env_of(variant)
    assert metadata["checkpointStrategy"] == "blobMetadata"
    assert metadata["blobContainer"] == env["WORKER_CHECKPOINT_CONTAINER"]
    assert metadata["consumerGroup"] == env["WORKER_CONSUMER_GROUP"]


def test_with_connection_strings_keda_reads_the_workers_secret() -> None:
    metadata = trigger("connection-string")["metadata"]
    secret = the("connection-string", "Secret")
    [source] = container("connection-string")["envFrom"]
    assert source["secretRef"]["name"] == secret["metadata"]["name"]
    named = {metadata["connectionFromEnv"], metadata["storageConnectionFromEnv"]}
    assert named <= SETTINGS
    assert named <= set(secret["stringData"])
    # KEDA needs the hub's name in the connection string when the metadata does not name it.
    assert "EntityPath=" in secret["stringData"][metadata["connectionFromEnv"]]


def test_with_workload_identity_keda_reads_the_hub_and_the_account_the_workers_use() -> None:
    metadata = trigger("workload-identity")["metadata"]
    env = env_of("workload-identity")
    assert "envFrom" not in container("workload-identity")
    assert f"{metadata['eventHubNamespace']}.servicebus.windows.net" == env["WORKER_EVENTHUB_NAMESPACE"]
    assert metadata["eventHubName"] == env["WORKER_EVENTHUB_NAME"]
    account = urlsplit(env["WORKER_STORAGE_ACCOUNT_URL"]).netloc
    assert account == f"{metadata['storageAccountName']}.blob.core.windows.net"
    assert urlsplit(env["WORKER_DEAD_LETTERS"]).netloc == account


def test_with_workload_identity_the_workers_and_keda_use_one_identity() -> None:
    template = the("workload-identity", "Deployment")["spec"]["template"]
    account = the("workload-identity", "ServiceAccount")
    authentication = the("workload-identity", "TriggerAuthentication")
    assert template["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert template["spec"]["serviceAccountName"] == account["metadata"]["name"]
    assert trigger("workload-identity")["authenticationRef"]["name"] == authentication["metadata"]["name"]
    # The provider KEDA's scaler authenticates with (v1alpha1.PodIdentityProviderAzureWorkload).
    assert authentication["spec"]["podIdentity"]["provider"] == "azure-workload"
    client = account["metadata"]["annotations"]["azure.workload.identity/client-id"]
    assert authentication["spec"]["podIdentity"]["identityId"] == client


def test_the_variants_differ_only_in_how_they_authenticate() -> None:
    def without_identity(variant: str) -> dict[str, Any]:
        deployment = copy.deepcopy(the(variant, "Deployment"))
        template = deployment["spec"]["template"]
        template["metadata"]["labels"].pop("azure.workload.identity/use", None)
        template["spec"].pop("serviceAccountName", None)
        worker = template["spec"]["containers"][0]
        worker.pop("envFrom", None)
        identity = {"WORKER_EVENTHUB_NAMESPACE", "WORKER_EVENTHUB_NAME", "WORKER_STORAGE_ACCOUNT_URL"}
        worker["env"] = [e for e in worker["env"] if e["name"] not in identity]
        return deployment

    assert without_identity("workload-identity") == without_identity("connection-string")

    def scaling(variant: str) -> tuple[dict[str, Any], dict[str, str]]:
        spec = copy.deepcopy(the(variant, "ScaledObject")["spec"])
        metadata = spec.pop("triggers")[0]["metadata"]
        shared = ("consumerGroup", "blobContainer", "checkpointStrategy")
        thresholds = ("unprocessedEventThreshold", "activationUnprocessedEventThreshold")
        return spec, {key: metadata[key] for key in (*shared, *thresholds)}

    assert scaling("workload-identity") == scaling("connection-string")


def test_a_partition_that_keeps_up_never_asks_for_a_second_replica() -> None:
    """KEDA asks for a replica per threshold of lag. A partition's checkpoint trails what was read by
    up to WORKER_CHECKPOINT_EVENTS events (or WORKER_CHECKPOINT_INTERVAL seconds of them, whichever is
    fewer) plus what its reorder window holds; at the rate where the count starts to govern, that is
    the events plus a reorder window of that rate: still below the threshold."""
    events, interval, window = default("checkpoint_events"), default("checkpoint_interval"), default("reorder_window")
    for variant in VARIANTS:
        env = env_of(variant)
        assert not {"WORKER_CHECKPOINT_EVENTS", "WORKER_CHECKPOINT_INTERVAL", "WORKER_REORDER_WINDOW"} & set(env)
        threshold = int(trigger(variant)["metadata"]["unprocessedEventThreshold"])
        assert threshold > events + window * events / interval


def test_the_example_rules_of_the_configmap_load(tmp_path: Path) -> None:
    data = the("connection-string", "ConfigMap")["data"]
    (tmp_path / "rules.yaml").write_text(data["rules.yaml"])
    table = load_rules([tmp_path / "rules.yaml"], env={})
    assert table.rules
    assert table.warnings == ()
    # The one workspace is a placeholder, to be replaced by the workspace's topic (as the file says).
    [workspace] = yaml.safe_load(data["rules.yaml"])["workspaces"]
    assert workspace.endswith("/workspaces/WORKSPACE")
    assert "FILL IN your workspace's topic" in data["rules.yaml"]
