"""The Azure ML actions against the test bed's Azure (tests/azure_bed.py): batch endpoints, jobs and
deployments, with their tokens, long-running operations, duplicates and failures; and ``webhook``'s
Entra ID token."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from tests.azure_bed import ARM_AUDIENCE, ML_AUDIENCE, WORKSPACE, FakeAzure, ScopedCredential, token_for
from tests.targets import HttpTarget
from worker.actions import ActionSpec, PlannedAction, action_types
from worker.actions.azureml.workspace import job_name
from worker.actions.base import ActionFate
from worker.actions.breaker import BreakerSettings
from worker.actions.delivery.runner import ActionRunner, DeadLetterDirectory, RunnerSettings
from worker.actions.delivery.services import Services
from worker.actions.delivery.tokens import CredentialTokens
from worker.actions.retry import RetryPolicy
from worker.core.decoding import decode_body
from worker.events import Event, Position
from worker.settings import AzureSettings

pytestmark = pytest.mark.integration

MONITOR_RUN = "monitor-fraud-signal-42"


def event(event_id: str = "ev-1", topic: str = WORKSPACE, **data: Any) -> Event:
    envelope = {
        "id": event_id,
        "topic": topic,
        "subject": "models/fraud:3",
        "eventType": "Microsoft.MachineLearningServices.ModelRegistered",
        "eventTime": "2026-11-01T09:00:00Z",
        "data": {"ModelName": "fraud", "ModelVersion": "3", "runId": MONITOR_RUN, **data},
        "dataVersion": "2",
    }
    (decoded,) = decode_body(json.dumps([envelope]), Position("0", "1", 1))
    assert isinstance(decoded, Event)
    return decoded


def spec(kind: str, **params: object) -> ActionSpec:
    return ActionSpec(kind, 0, action_types()[kind].params.model_validate(params))


class Bed:
    """A runner reaching the test bed's Azure, with a recording sleep between attempts."""

    def __init__(self, azure: FakeAzure, dead: Path, *, attempts: int = 3) -> None:
        self.azure = azure
        self.dead = dead
        self.waits: list[float] = []
        self.credential = ScopedCredential()
        self.runner = ActionRunner(
            DeadLetterDirectory(dead),
            RetryPolicy(attempts=attempts, first_delay=0.001, max_delay=5.0),
            services=Services(
                tokens=CredentialTokens(self.credential), azure=AzureSettings(resource_manager_override=azure.url)
            ),
            settings=RunnerSettings(breaker=BreakerSettings(failures=100)),
            sleep=self._sleep,
        )

    async def _sleep(self, seconds: float) -> None:
        self.waits.append(seconds)

    async def run(self, action_spec: ActionSpec, the_event: Event | None = None, rule: str = "retrain") -> ActionFate:
        return await self.runner.run(PlannedAction(rule, action_spec, the_event or event()))

    def letters(self) -> list[dict[str, Any]]:
        return [orjson.loads(p.read_bytes()) for p in sorted(self.dead.glob("*.json"))]


@pytest.fixture
async def azure():
    fake = FakeAzure()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def bed(azure: FakeAzure, tmp_path: Path):
    made = Bed(azure, tmp_path / "dead")
    yield made
    await made.runner.aclose()


def batch(**extra: object) -> ActionSpec:
    params: dict[str, object] = {
        "workspace": "{{ event.topic }}",
        "endpoint": "retrain",
        "deployment": "nightly",
        "experiment": "retraining",
        "inputs": {
            "monitor_run": {"literal": "{{ data.runId }}"},
            "training_data": {"uri_folder": "azureml://datastores/workspaceblobstore/paths/training/"},
            "reference": {"uri_file": "azureml:reference-data@latest"},
        },
        "outputs": {
            "model_dir": {"uri_folder": "azureml://datastores/workspaceblobstore/paths/models/{{ data.runId }}/"}
        },
    }
    return spec("azureml_batch_endpoint", **(params | extra))


# --- azureml_batch_endpoint ------------------------------------------------------------------------


async def test_a_batch_endpoint_is_invoked_at_its_scoring_uri_with_an_azure_ml_token(azure: FakeAzure, bed: Bed):
    azure.batch_endpoint("retrain")
    action = PlannedAction("retrain", batch(), event())
    with capture_logs() as logs:
        assert await bed.runner.run(action) is ActionFate.DONE
    [lookup] = azure.received("GET", r"/batchEndpoints/retrain$")
    assert lookup.header("Authorization") == f"Bearer {token_for(ARM_AUDIENCE)}"
    assert lookup.query["api-version"] == "2025-12-01"
    [posted] = azure.received("POST", r"^/score/retrain/jobs$")
    assert posted.header("Authorization") == f"Bearer {token_for(ML_AUDIENCE)}"
    assert posted.header("repeatability_request-id") == action.request_id
    assert posted.header("azureml-model-deployment") == "nightly"
    assert posted.json() == {
        "properties": {
            "inputData": {
                "monitor_run": {"jobInputType": "Literal", "value": MONITOR_RUN},
                "training_data": {
                    "jobInputType": "UriFolder",
                    "uri": "azureml://datastores/workspaceblobstore/paths/training/",
                },
                "reference": {"jobInputType": "UriFile", "uri": f"{WORKSPACE}/data/reference-data/versions/7"},
            },
            "outputData": {
                "model_dir": {
                    "jobOutputType": "UriFolder",
                    "uri": f"azureml://datastores/workspaceblobstore/paths/models/{MONITOR_RUN}/",
                }
            },
            "properties": {"experimentName": "retraining"},
        }
    }
    [job] = azure.batch_jobs.values()
    [logged] = [entry for entry in logs if entry["event"] == "azureml.batch_job"]
    assert logged["job"] == job["name"]
    assert logged["deployment"] == "nightly"


async def test_the_scoring_uri_is_read_once_and_a_redelivery_is_one_batch_job(azure: FakeAzure, bed: Bed):
    azure.batch_endpoint("retrain")
    action = batch()  # one rule's action, as the rules table holds it
    assert await bed.run(action) is ActionFate.DONE
    assert await bed.run(action) is ActionFate.DONE  # Event Grid delivered the event twice
    assert await bed.run(action, event("ev-2")) is ActionFate.DONE
    assert len(azure.received("GET", r"/batchEndpoints/retrain$")) == 1
    assert len(azure.received("POST", r"^/score/")) == 3
    assert len(azure.batch_jobs) == 2  # the repeated one was the same request to the service


async def test_a_busy_scoring_host_is_retried_after_its_retry_after(azure: FakeAzure, bed: Bed):
    azure.batch_endpoint("retrain")
    azure.fail("POST", r"^/score/", 429, headers={"Retry-After": "3"}, code="TooManyRequests", message="slow down")
    assert await bed.run(batch()) is ActionFate.DONE
    assert len(azure.received("POST", r"^/score/")) == 2
    assert bed.waits[0] >= 3


@pytest.mark.parametrize(
    ("forbidden", "endpoint", "expected"),
    [
        (None, "nightly-scoring", r"the batch endpoint 'nightly-scoring' was not found: .*HTTP 404 \(UserError: batch"),
        (("GET", "batchEndpoints"), "retrain", r"not allowed: .*AuthorizationFailed.*AzureML Data Scientist role"),
    ],
    ids=["unknown-endpoint", "missing-role"],
)
async def test_an_unknown_endpoint_or_a_missing_role_is_dead_lettered_at_once(
    azure: FakeAzure, bed: Bed, forbidden: tuple[str, str] | None, endpoint: str, expected: str
):
    azure.batch_endpoint("retrain")
    if forbidden is not None:
        azure.forbidden.add(forbidden)
    assert await bed.run(batch(endpoint=endpoint)) is ActionFate.DEAD_LETTERED
    [letter] = bed.letters()
    [attempt] = letter["attempts"]
    assert attempt["transient"] is False
    assert azure.received("POST", r"^/score/") == []
    assert re.search(expected, attempt["error"]), attempt["error"]


async def test_a_scoring_uri_in_plain_http_to_another_host_gets_no_token(azure: FakeAzure, bed: Bed):
    azure.batch_endpoint("retrain")
    azure.batch_endpoints["retrain"]["properties"]["scoringUri"] = "http://10.0.0.4/jobs"
    assert await bed.run(batch()) is ActionFate.DEAD_LETTERED
    [letter] = bed.letters()
    assert "its scoring URI: 'http://10.0.0.4/jobs': a token is sent over https only" in letter["attempts"][0]["error"]


async def test_a_workspace_that_is_not_an_arm_id_fails_the_action_naming_it(azure: FakeAzure, bed: Bed):
    odd = event("ev-odd", topic="/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/x")
    assert await bed.run(batch(), odd) is ActionFate.DEAD_LETTERED
    [letter] = bed.letters()
    assert "is not an Azure ML workspace's ARM id" in letter["attempts"][0]["error"]
    assert azure.requests == []


# --- azureml_job -----------------------------------------------------------------------------------


def job(**extra: object) -> ActionSpec:
    params: dict[str, object] = {
        "workspace": "{{ event.topic }}",
        "component": "azureml:train_pipeline:3",
        "compute": "cpu-cluster",
        "experiment": "retraining",
        "inputs": {
            "training_data": {"uri_folder": "azureml://datastores/workspaceblobstore/paths/training/"},
            "lr": {"literal": 0.05},
        },
        "outputs": {"model_dir": {"uri_folder": "azureml://datastores/workspaceblobstore/paths/models/{{ id }}/"}},
        "tags": {"model": "{{ data.ModelName }}"},
    }
    return spec("azureml_job", **(params | extra))


async def test_a_pipeline_component_is_submitted_as_a_pipeline_job_named_by_its_idempotency_key(
    azure: FakeAzure, bed: Bed
):
    action = PlannedAction("retrain", job(), event())
    assert await bed.runner.run(action) is ActionFate.DONE
    name = job_name("retrain", action.idempotency_key)
    [put] = azure.received("PUT", r"/jobs/")
    assert put.path.endswith(f"/jobs/{name}")
    assert put.header("Authorization") == f"Bearer {token_for(ARM_AUDIENCE)}"
    assert put.header("x-azureml-token") == token_for(ML_AUDIENCE)  # the service asks it of pipeline jobs
    body = put.json()["properties"]
    assert body["jobType"] == "Pipeline"
    assert body["componentId"] == f"{WORKSPACE}/components/train_pipeline/versions/3"
    assert body["displayName"] == "Train the fraud model"
    assert body["jobs"]["train"]["componentId"] == f"{WORKSPACE}/components/train_model/versions/1"
    assert body["settings"] == {
        "default_compute": f"{WORKSPACE}/computes/cpu-cluster",
        "_source": "REMOTE.WORKSPACE.COMPONENT",
    }
    assert body["inputs"]["lr"] == {"jobInputType": "literal", "value": "0.05"}
    assert body["outputs"]["model_dir"]["uri"] == "azureml://datastores/workspaceblobstore/paths/models/ev-1/"
    assert body["tags"] == {"model": "fraud", "triggered_by_event": "ev-1", "triggered_by_rule": "retrain"}
    assert list(azure.jobs) == [name]


async def test_a_command_component_is_submitted_as_a_command_job(azure: FakeAzure, bed: Bed):
    assert (
        await bed.run(job(component="azureml:train_model:1", outputs={"model": {"uri_folder": "azureml://x/"}}))
        is ActionFate.DONE
    )
    [put] = azure.received("PUT", r"/jobs/")
    assert put.header("x-azureml-token") is None
    body = put.json()["properties"]
    assert body["jobType"] == "Command"
    assert body["command"].startswith("python train.py")
    assert body["codeId"] == f"{WORKSPACE}/codes/0000-code/versions/1"
    assert body["environmentId"] == f"{WORKSPACE}/environments/sklearn-env/versions/1"
    assert body["computeId"] == f"{WORKSPACE}/computes/cpu-cluster"


async def test_a_job_submitted_again_under_its_name_is_a_duplicate_done_once(azure: FakeAzure, bed: Bed):
    with capture_logs() as logs:
        assert await bed.run(job()) is ActionFate.DONE
        assert await bed.run(job()) is ActionFate.DONE  # a re-delivery, a retry, or a restart
    assert len(azure.jobs) == 1
    assert [entry["submitted"] for entry in logs if entry["event"] == "azureml.job"] == [True, False]
    assert bed.letters() == []


async def test_the_latest_component_version_is_asked_of_arm(azure: FakeAzure, bed: Bed):
    assert await bed.run(job(component="azureml:train_pipeline@latest")) is ActionFate.DONE
    assert azure.received("GET", r"/components/train_pipeline$")
    [put] = azure.received("PUT", r"/jobs/")
    assert put.json()["properties"]["componentId"].endswith("/components/train_pipeline/versions/3")


async def test_an_unknown_component_is_dead_lettered_with_the_services_message(azure: FakeAzure, bed: Bed):
    assert await bed.run(job(component="azureml:train_pipeline:9")) is ActionFate.DEAD_LETTERED
    [letter] = bed.letters()
    assert "the component azureml:train_pipeline:9 was not found" in letter["attempts"][0]["error"]
    assert "component train_pipeline:9 was not found" in letter["attempts"][0]["error"]


# --- azureml_deploy --------------------------------------------------------------------------------


def deploy(**extra: object) -> ActionSpec:
    params: dict[str, object] = {
        "workspace": "{{ event.topic }}",
        "endpoint": "fraud-scorer",
        "deployment": "fraud-v{{ data.ModelVersion }}",
        "model": "azureml:{{ data.ModelName }}:{{ data.ModelVersion }}",
        "instance_type": "Standard_DS3_v2",
        "instance_count": 2,
        "traffic": 10,
        "poll_interval": 0.01,
    }
    return spec("azureml_deploy", **(params | extra))


async def test_a_model_is_deployed_followed_to_succeeded_and_given_its_canary_share(azure: FakeAzure, bed: Bed):
    azure.online_endpoint("fraud-scorer", {"blue": 100})
    with capture_logs() as logs:
        assert await bed.run(deploy()) is ActionFate.DONE
    [put] = azure.received("PUT", r"/onlineEndpoints/fraud-scorer/deployments/fraud-v3$")
    assert put.json() == {
        "location": "westeurope",
        "properties": {
            "model": f"{WORKSPACE}/models/fraud/versions/3",
            "properties": {},
            "environmentVariables": {},
            "appInsightsEnabled": False,
            "instanceType": "Standard_DS3_v2",
            "endpointComputeType": "Managed",
        },
        "tags": {},
        "sku": {"name": "Default", "capacity": 2},
    }
    [operation] = [op for op in azure.operations.values() if op.resource[0] == "deployments"]
    assert operation.polled == azure.polls + 1  # followed until it ended
    endpoint = azure.online_endpoints["fraud-scorer"]["properties"]
    assert endpoint["traffic"] == {"blue": 90, "fraud-v3": 10}
    [written] = azure.received("PUT", r"/onlineEndpoints/fraud-scorer$")
    assert written.json()["identity"] == {"type": "SystemAssigned"}  # the endpoint written back whole
    assert written.json()["properties"]["authMode"] == "Key"
    assert azure.created == {("fraud-scorer", "fraud-v3"): 1}
    [logged] = [entry for entry in logs if entry["event"] == "azureml.deployed"]
    assert logged["traffic"] == {"blue": 90, "fraud-v3": 10}


async def test_polls_wait_for_the_retry_after_the_service_gives(azure: FakeAzure, bed: Bed):
    azure.online_endpoint("fraud-scorer", {"blue": 100})
    azure.retry_after, azure.polls = "1", 1
    assert await bed.run(deploy(traffic=None)) is ActionFate.DONE
    [put] = azure.times("PUT", r"/deployments/fraud-v3$")
    polls = azure.times("GET", r"^/operations/")
    assert len(polls) == 2
    # Never sooner than the service asked (a busy machine may make it later: that is not what is checked).
    assert polls[0] - put >= 0.99
    assert polls[1] - polls[0] >= 0.99


async def test_a_deployment_that_fails_is_dead_lettered_with_the_services_error(azure: FakeAzure, bed: Bed):
    azure.online_endpoint("fraud-scorer", {"blue": 100})
    azure.failing["fraud-v3"] = {"code": "ResourceNotReady", "message": "User container has crashed or terminated"}
    assert await bed.run(deploy()) is ActionFate.DEAD_LETTERED
    [letter] = bed.letters()
    assert "the operation ended Failed: ResourceNotReady: User container has crashed" in letter["attempts"][0]["error"]
    assert azure.online_endpoints["fraud-scorer"]["properties"]["traffic"] == {"blue": 100}  # no traffic moved


async def test_a_deployment_interrupted_and_started_again_is_one_deployment(azure: FakeAzure, bed: Bed):
    """As a worker killed while it follows a deployment, restarted: the same PUT, the same operation."""
    azure.online_endpoint("fraud-scorer", {"blue": 100})
    azure.retry_after, azure.polls = "0", 50
    action = PlannedAction("deploy", deploy(poll_interval=0.01), event())
    first = asyncio.create_task(bed.runner.run(action))
    await azure.until(lambda: len(azure.received("GET", r"^/operations/")) >= 3)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    azure.polls = 5  # the deployment finishes while nobody follows it, or soon after
    assert await bed.runner.run(action) is ActionFate.DONE
    assert azure.created == {("fraud-scorer", "fraud-v3"): 1}
    assert len(azure.received("PUT", r"/deployments/fraud-v3$")) == 2
    # One operation, followed by both.
    assert [op.resource for op in azure.operations.values() if op.resource[0] == "deployments"] == [
        ("deployments", "fraud-scorer", "fraud-v3")
    ]
    assert azure.online_endpoints["fraud-scorer"]["properties"]["traffic"] == {"blue": 90, "fraud-v3": 10}


async def test_a_throttled_resource_manager_is_retried_after_its_retry_after(azure: FakeAzure, bed: Bed):
    azure.online_endpoint("fraud-scorer", {"blue": 100})
    azure.fail("PUT", r"/deployments/fraud-v3$", 429, headers={"Retry-After": "4"}, code="TooManyRequests")
    assert await bed.run(deploy()) is ActionFate.DONE
    assert bed.waits[0] >= 4
    assert len(azure.received("PUT", r"/deployments/fraud-v3$")) == 2
    assert azure.created == {("fraud-scorer", "fraud-v3"): 1}


async def test_a_poll_that_fails_for_a_moment_does_not_fail_the_deployment(azure: FakeAzure, bed: Bed):
    azure.online_endpoint("fraud-scorer", {"blue": 100})
    azure.fail("GET", r"^/operations/", 503, count=2, headers={"Retry-After": "0"}, code="ServiceUnavailable")
    assert await bed.run(deploy()) is ActionFate.DONE
    assert len(azure.received("PUT", r"/deployments/fraud-v3$")) == 1  # followed on, not put again
    assert azure.online_endpoints["fraud-scorer"]["properties"]["traffic"] == {"blue": 90, "fraud-v3": 10}


async def test_traffic_as_a_map_and_mirrored_traffic(azure: FakeAzure, bed: Bed):
    azure.online_endpoint("fraud-scorer", {"blue": 70, "green": 30})
    assert await bed.run(deploy(traffic={"blue": 50, "fraud-v{{ data.ModelVersion }}": 50})) is ActionFate.DONE
    assert azure.online_endpoints["fraud-scorer"]["properties"]["traffic"] == {"blue": 50, "fraud-v3": 50}
    azure.online_endpoint("shadow-scorer", {"blue": 100})
    assert await bed.run(deploy(endpoint="shadow-scorer", traffic=None, mirror=20), event("ev-2")) is ActionFate.DONE
    properties = azure.online_endpoints["shadow-scorer"]["properties"]
    assert (properties["traffic"], properties["mirrorTraffic"]) == ({"blue": 100}, {"fraud-v3": 20})


async def test_an_unknown_endpoint_is_dead_lettered_before_anything_is_deployed(azure: FakeAzure, bed: Bed):
    assert await bed.run(deploy(endpoint="missing-scorer")) is ActionFate.DEAD_LETTERED
    [letter] = bed.letters()
    assert "the online endpoint 'missing-scorer' was not found" in letter["attempts"][0]["error"]
    assert azure.created == {}


async def test_a_deployment_name_the_service_refuses_fails_the_action_naming_the_rule(azure: FakeAzure, bed: Bed):
    azure.online_endpoint("fraud-scorer", {"blue": 100})
    assert await bed.run(deploy(), event(ModelVersion="3_beta")) is ActionFate.DEAD_LETTERED
    [letter] = bed.letters()
    assert "'fraud-v3_beta': 3 to 32 letters, digits and hyphens" in letter["attempts"][0]["error"]
    assert azure.requests == []


# --- webhook with an Entra ID token ----------------------------------------------------------------


async def test_a_webhook_with_entra_auth_sends_a_bearer_token_for_its_scope(http_target: HttpTarget, bed: Bed):
    hook = spec("webhook", url=http_target.url + "/api/retrain", auth={"entra": "api://ml-functions"})
    assert await bed.run(hook) is ActionFate.DONE
    [request] = http_target.requests
    assert request.header("Authorization") == f"Bearer {token_for('api://ml-functions')}"
    assert bed.credential.scopes == ["api://ml-functions/.default"]


def test_an_entra_token_goes_over_https_or_to_a_loopback_address_only():
    with pytest.raises(ValueError, match="a token is sent over https only"):
        spec("webhook", url="http://functions.example.com/api/retrain", auth={"entra": "api://ml-functions"})
    spec("webhook", url="https://functions.example.com/api/retrain", auth={"entra": "api://ml-functions/.default"})
