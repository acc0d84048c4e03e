"""The operations held to azure-ai-ml: each once as the SDK is called for it, and once as a rule's action.

A scenario names everything both need; :func:`action_params` writes it as the worker's action, and
tests/oracles/azureml_sdk.py calls azure-ai-ml with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

DATASTORE: Final = "azureml://datastores/workspaceblobstore/paths"
EVENT_ID: Final = "ev-1"
RULE: Final = "retrain"


@dataclass(frozen=True)
class Scenario:
    kind: str
    endpoint: str = ""
    deployment: str | None = None
    experiment: str = "retraining"
    component: tuple[str, str] = ("", "")
    compute: str = "cpu-cluster"
    #: By name: (kind, value); a literal's value as the SDK takes it.
    inputs: dict[str, tuple[str, object]] = field(default_factory=dict)
    outputs: dict[str, tuple[str, str]] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    model: str = ""
    instance_type: str = "Standard_DS3_v2"
    instance_count: int = 1
    traffic: dict[str, int] = field(default_factory=dict)


_TRAINING: Final = {"training_data": ("uri_folder", f"{DATASTORE}/training/"), "lr": ("literal", 0.05)}
_TAGS: Final = {"model": "fraud", "triggered_by_event": EVENT_ID, "triggered_by_rule": RULE}

SCENARIOS: Final = {
    "batch": Scenario(
        "batch",
        endpoint="retrain",
        deployment="nightly",
        inputs={
            "monitor_run": ("literal", "run-1"),
            "training_data": ("uri_folder", f"{DATASTORE}/training/"),
            "reference": ("uri_file", "azureml:reference-data:3"),
        },
        outputs={"model_dir": ("uri_folder", f"{DATASTORE}/models/run-1/")},
    ),
    "pipeline": Scenario(
        "pipeline",
        component=("train_pipeline", "3"),
        inputs=_TRAINING,
        outputs={"model_dir": ("uri_folder", f"{DATASTORE}/models/run-1/")},
        tags=_TAGS,
    ),
    "command": Scenario(
        "command",
        component=("train_model", "1"),
        inputs=_TRAINING,
        outputs={"model": ("uri_folder", f"{DATASTORE}/models/run-1/")},
        tags=_TAGS,
    ),
    "deploy": Scenario("deploy", endpoint="fraud-scorer", deployment="fraud-v3", model="azureml:fraud:3"),
    "traffic": Scenario(
        "traffic",
        endpoint="fraud-scorer",
        deployment="fraud-v3",
        model="azureml:fraud:3",
        traffic={"blue": 90, "fraud-v3": 10},
    ),
}


def action_params(scenario: Scenario, workspace: str) -> tuple[str, dict[str, object]]:
    """The action type and parameters of the rule's action that does what ``scenario`` does."""
    inputs = {name: {kind: value} for name, (kind, value) in scenario.inputs.items()}
    outputs = {name: {kind: value} for name, (kind, value) in scenario.outputs.items()}
    if scenario.kind == "batch":
        return "azureml_batch_endpoint", {
            "workspace": workspace,
            "endpoint": scenario.endpoint,
            "deployment": scenario.deployment,
            "experiment": scenario.experiment,
            "inputs": inputs,
            "outputs": outputs,
        }
    if scenario.kind in ("pipeline", "command"):
        name, version = scenario.component
        return "azureml_job", {
            "workspace": workspace,
            "component": f"azureml:{name}:{version}",
            "compute": scenario.compute,
            "experiment": scenario.experiment,
            "inputs": inputs,
            "outputs": outputs,
            "tags": {"model": scenario.tags["model"]},
        }
    return "azureml_deploy", {
        "workspace": workspace,
        "endpoint": scenario.endpoint,
        "deployment": scenario.deployment,
        "model": scenario.model,
        "instance_type": scenario.instance_type,
        "instance_count": scenario.instance_count,
        "traffic": scenario.traffic.get(scenario.deployment or "") if scenario.traffic else None,
        "poll_interval": 0.01,
    }
