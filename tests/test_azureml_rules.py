"""The Azure ML actions as rules write them: what ``validate`` refuses (with file and line), what it
warns of, the traffic a canary share leaves the others, and the Azure clouds and settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.actions.azureml.deploy import endpoint_body, shifted
from worker.actions.azureml.workspace import AssetRef, Workspace, asset, check_endpoint_name, job_name
from worker.config import load_azure_settings, load_settings
from worker.errors import RulesError, SettingsError
from worker.rulefiles.loading import load_rules
from worker.settings import AzureSettings, insecure_url

WS = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/ml-rg"
    "/providers/Microsoft.MachineLearningServices/workspaces/ml-prod"
)
HUB = "Endpoint=sb://127.0.0.1:5672;SharedAccessKeyName=k;SharedAccessKey=s3cr3t;EntityPath=ml-events"

DEPLOY = """\
rules:
  - name: deploy-tagged
    filter: {includedEventTypes: [Microsoft.MachineLearningServices.ModelRegistered]}
    actions:
      - type: azureml_deploy
        workspace: "{{ event.topic }}"
        endpoint: ENDPOINT
        deployment: DEPLOYMENT
        model: "azureml:{{ data.ModelName }}:{{ data.ModelVersion }}"
        instance_type: Standard_DS3_v2
        traffic: TRAFFIC
"""


def rules(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(RulesError) as caught:
        load_rules([rules(tmp_path, text)])
    return [str(problem) for problem in caught.value.problems]


def deploy_rule(
    endpoint: str = "fraud-scorer", deployment: str = '"fraud-v{{ data.ModelVersion }}"', traffic: str = "10"
) -> str:
    return DEPLOY.replace("ENDPOINT", endpoint).replace("DEPLOYMENT", deployment).replace("TRAFFIC", traffic)


def test_the_v2_actions_load_with_templates_everywhere(tmp_path: Path):
    table = load_rules([rules(tmp_path, deploy_rule())])
    assert [spec.type for spec in table.rules[0].actions] == ["azureml_deploy"]
    assert table.warnings == ()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"deployment": "fraud_v3"},
            "rules.yaml:8:21: rule 'deploy-tagged': action 0 (azureml_deploy): deployment: name 'fraud_v3': 3 to 32",
        ),
        (
            {"deployment": "v"},
            "rules.yaml:8:21: rule 'deploy-tagged': action 0 (azureml_deploy): deployment: name 'v': 3 to 32",
        ),
        (
            {"deployment": '"3-{{ data.ModelVersion }}"'},
            "deployment: '3-{{ data.ModelVersion }}': a name starts with a letter",
        ),
        (
            {"endpoint": "fraud-scorer-"},
            "rules.yaml:7:19: rule 'deploy-tagged': action 0 (azureml_deploy): endpoint: name 'fraud-scorer-'",
        ),
        (
            {"traffic": "{blue: 80, green: 10}"},
            "rules.yaml:11:18: rule 'deploy-tagged': action 0 (azureml_deploy): traffic: the percents add up to 90",
        ),
        ({"traffic": "140"}, "traffic: 140: a percent, 0 to 100"),
    ],
    ids=["underscore", "too-short", "starts-with-a-digit", "ends-with-a-hyphen", "traffic-sum", "traffic-percent"],
)
def test_what_validate_refuses_in_a_deployment(tmp_path: Path, change: dict[str, str], expected: str):
    found = problems(tmp_path, deploy_rule(**change))
    assert any(expected in problem for problem in found), found


def test_an_input_of_no_known_kind_and_a_workspace_that_is_no_arm_id(tmp_path: Path):
    found = problems(
        tmp_path,
        """\
rules:
  - name: retrain-on-breach
    filter: {}
    actions:
      - type: azureml_batch_endpoint
        workspace: /subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/data
        endpoint: retrain
        inputs:
          training_data: {uri_directory: "azureml://datastores/workspaceblobstore/paths/training/"}
          run: {literal: "{{ data.runId }}", uri_file: "x"}
        outputs:
          scores: {literal: "1"}
""",
    )
    text = "\n".join(found)
    assert (
        "rules.yaml:6:20: rule 'retrain-on-breach': action 0 (azureml_batch_endpoint): workspace: '/subscriptions/s/"
        in text
    )
    assert "is not an Azure ML workspace's ARM id" in text
    assert (
        "rules.yaml:9:26: rule 'retrain-on-breach': action 0 (azureml_batch_endpoint): inputs.training_data: "
        "'uri_directory' is not a kind of input (kinds: literal, uri_file, uri_folder, mltable" in text
    )
    assert "inputs.run: expected one kind and its value" in text
    assert "outputs.scores: 'literal' is not a kind of output" in text


def test_a_custom_model_needs_its_code_scoring_script_and_environment(tmp_path: Path):
    text = deploy_rule() + "        code: azureml:score-code:1\n"
    assert any("needs all of code, scoring_script and environment" in p for p in problems(tmp_path, text))


def test_a_published_pipeline_loads_with_a_warning_naming_its_replacement(tmp_path: Path):
    table = load_rules(
        [
            rules(
                tmp_path,
                """\
rules:
  - name: legacy-retrain
    filter: {}
    actions:
      - type: azureml_pipeline
        endpoint: https://westeurope.api.azureml.ms/pipelines/v1.0/subscriptions/s/PipelineRuns/PipelineEndpointSubmit/Id/1
        experiment: retrain
""",
            )
        ]
    )
    [warning] = table.warnings
    assert warning.startswith(f"{tmp_path / 'rules.yaml'}:5: action 0 (azureml_pipeline): published pipelines")
    assert "support ended on 2026-06-30" in warning
    assert "azureml_batch_endpoint" in warning


# --- the traffic a canary share leaves the others ---------------------------------------------------


@pytest.mark.parametrize(
    ("current", "percent", "expected"),
    [
        ({"blue": 100}, 10, {"blue": 90, "new": 10}),
        ({"blue": 70, "green": 30}, 10, {"blue": 63, "green": 27, "new": 10}),
        ({"blue": 50, "green": 50}, 33, {"blue": 34, "green": 33, "new": 33}),
        ({"blue": 100}, 100, {"new": 100}),
        ({}, 10, {"new": 100}),  # an endpoint's traffic adds up to 100: alone, the new one takes it all
        ({"blue": 90, "new": 10}, 25, {"blue": 75, "new": 25}),  # its own share is not one of the others'
        ({"Blue": 100, "retired": 0}, 0, {"blue": 100}),
    ],
)
def test_a_canary_share_leaves_the_others_their_proportions(
    current: dict[str, int], percent: int, expected: dict[str, int]
):
    assert shifted(current, "new", percent) == expected


@given(
    st.dictionaries(st.sampled_from(["blue", "green", "red", "gray"]), st.integers(0, 100), max_size=4),
    st.integers(0, 100),
)
def test_the_shares_always_add_up_to_100(current: dict[str, int], percent: int):
    out = shifted(current, "new", percent)
    assert sum(out.values()) == 100
    assert all(share > 0 for share in out.values())
    if any(share > 0 for share in current.values()):
        assert out.get("new", 0) == percent


def test_an_endpoint_is_written_back_with_what_a_client_may_set():
    endpoint = {
        "id": "/x",
        "name": "fraud-scorer",
        "location": "westeurope",
        "kind": "Managed",
        "identity": {"type": "UserAssigned", "userAssignedIdentities": {"/id/1": {"principalId": "p"}}},
        "tags": {"team": "fraud"},
        "systemData": {"createdBy": "someone"},
        "properties": {
            "authMode": "AADToken",
            "traffic": {"blue": 100},
            "provisioningState": "Succeeded",
            "scoringUri": "https://x",
            "publicNetworkAccess": "Disabled",
        },
    }
    assert endpoint_body(endpoint, {"blue": 90, "new": 10}, {}) == {
        "location": "westeurope",
        "identity": {"type": "UserAssigned", "userAssignedIdentities": {"/id/1": {}}},
        "tags": {"team": "fraud"},
        "properties": {
            "authMode": "AADToken",
            "publicNetworkAccess": "Disabled",
            "traffic": {"blue": 90, "new": 10},
            "mirrorTraffic": {},
        },
    }


# --- workspaces, assets and names ------------------------------------------------------------------


def test_a_workspace_is_its_arm_id_and_its_children_are_quoted():
    workspace = Workspace.parse(WS + "/")
    assert workspace.id == WS
    assert workspace.child("onlineEndpoints", "a b") == WS + "/onlineEndpoints/a%20b"
    with pytest.raises(ValueError, match="is not an Azure ML workspace's ARM id"):
        Workspace.parse(WS + "/jobs/x")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("azureml:fraud:3", AssetRef("fraud", "3")),
        ("fraud:3", AssetRef("fraud", "3")),
        ("azureml:fraud@latest", AssetRef("fraud", None)),
        (WS + "/models/fraud/versions/3", AssetRef(None, None, WS + "/models/fraud/versions/3")),
    ],
)
def test_assets_are_named_as_the_cli_names_them(text: str, expected: AssetRef):
    assert asset(text) == expected


def test_a_job_name_is_its_rule_and_its_idempotency_key():
    name = job_name("Retrain on breach!", "0123456789abcdef0123456789abcdef")
    assert name == "retrain-on-breach-0123456789abcdef0123456789abcdef"
    assert check_endpoint_name("fraud-v3") == "fraud-v3"


# --- clouds and settings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cloud", "arm", "ml", "authority"),
    [
        ("AzureCloud", "https://management.azure.com", "https://ml.azure.com/.default", "login.microsoftonline.com"),
        (
            "AzureChinaCloud",
            "https://management.chinacloudapi.cn",
            "https://ml.azure.cn/.default",
            "login.chinacloudapi.cn",
        ),
        (
            "AzureUSGovernment",
            "https://management.usgovcloudapi.net",
            "https://ml.azure.us/.default",
            "login.microsoftonline.us",
        ),
    ],
)
def test_each_cloud_gives_its_endpoints_scopes_and_authority(
    monkeypatch: pytest.MonkeyPatch, cloud: str, arm: str, ml: str, authority: str
):
    monkeypatch.setenv("WORKER_AZURE_CLOUD", cloud)
    settings = load_azure_settings()
    assert (settings.resource_manager, settings.azureml_scope, settings.authority) == (arm, ml, authority)
    assert settings.resource_manager_scope == arm + "/.default"


def test_the_resource_manager_override_keeps_the_clouds_audience_and_must_be_https(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("WORKER_AZURE_RESOURCE_MANAGER", "http://127.0.0.1:8443/")
    monkeypatch.setenv("WORKER_AZUREML_API_VERSION", "2026-07-01")
    settings = load_azure_settings()
    assert settings == AzureSettings("AzureCloud", "http://127.0.0.1:8443/", "2026-07-01")
    assert settings.resource_manager == "http://127.0.0.1:8443"
    assert settings.resource_manager_scope == "https://management.azure.com/.default"
    monkeypatch.setenv("WORKER_AZURE_RESOURCE_MANAGER", "http://arm.example.com")
    with pytest.raises(SettingsError, match=r"WORKER_AZURE_RESOURCE_MANAGER .*a token is sent over https only"):
        load_azure_settings()


def test_worker_run_takes_the_azure_settings_and_refuses_an_unknown_cloud(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("WORKER_AZURE_CLOUD", "AzureGermanCloud")
    with pytest.raises(SettingsError, match="WORKER_AZURE_CLOUD"):
        load_settings({"eventhub_connection_string": HUB, "checkpoint_dir": "checkpoints", "rules": "r.yaml"})
    monkeypatch.setenv("WORKER_AZURE_CLOUD", "AzureChinaCloud")
    run = load_settings({"eventhub_connection_string": HUB, "checkpoint_dir": "checkpoints", "rules": "r.yaml"})
    assert run.processing().azure.cloud == "AzureChinaCloud"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://management.azure.com", None),
        ("http://127.0.0.1:8080", None),
        ("http://localhost:8080", None),
        ("http://[::1]:8080", None),
        ("http://10.0.0.4:8080", "a token is sent over https only"),
        ("ftp://x", "is not an http:// or https:// URL"),
    ],
)
def test_a_token_goes_over_https_or_to_a_loopback_address(url: str, problem: str | None):
    found = insecure_url(url)
    assert (found is None) if problem is None else (problem in (found or ""))
