"""``worker run`` acting on Azure ML, end to end on the test bed: the local hub, Azurite, and the test bed's
Azure (tests/azure_bed.py), with its tokens from azure-identity's managed identity credential, through
a local identity endpoint as Container Apps and App Service provide one (``IDENTITY_ENDPOINT``,
``IDENTITY_HEADER``). A model registered with its deployment tag is deployed and given its canary
traffic; a model monitor's breach invokes the retraining batch endpoint; and a worker SIGKILLed while
it follows a deployment, then restarted, finishes it with exactly one deployment.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from asyncio.subprocess import Process
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from tests.azure_bed import IDENTITY_HEADER, WORKSPACE, FakeAzure
from tests.live import held_partitions, local_hub, metrics_of, start_worker, stop_worker, wait_for, worker_env
from tests.servers import Azurite, free_port
from tests.support import capture
from worker.cli import main
from worker.localhub.hub import LocalHub
from worker.sending import mlevents
from worker.sending.publish import Outgoing, publish

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180), pytest.mark.usefixtures("sdk_garbage")]

RULES = f"""\
workspaces: [{WORKSPACE}]
rules:
  - name: deploy-by-model-tags
    filter:
      includedEventTypes: [{mlevents.MODEL_REGISTERED}]
      advancedFilters:
        - {{operatorType: StringIn, key: data.ModelTags.deploy, values: ["true"]}}
    actions:
      - type: azureml_deploy
        workspace: "{{{{ event.topic }}}}"
        endpoint: fraud-scorer
        deployment: "fraud-v{{{{ data.ModelVersion }}}}"
        model: "azureml:{{{{ data.ModelName }}}}:{{{{ data.ModelVersion }}}}"
        instance_type: Standard_DS3_v2
        traffic: 10
        poll_interval: 0.05
  - name: retrain-on-monitor-breach
    filter:
      includedEventTypes: [{mlevents.RUN_STATUS_CHANGED}]
      advancedFilters:
        - operatorType: StringContains
          key: data.RunTags.{mlevents.BREACH_TAG}
          values: [{mlevents.BREACH}]
    actions:
      - type: azureml_batch_endpoint
        workspace: "{{{{ event.topic }}}}"
        endpoint: retrain
        inputs:
          monitor_run: {{literal: "{{{{ data.runId }}}}"}}
"""


def registered(version: int) -> bytes:
    return json.dumps(
        [
            {
                "id": f"model-fraud-{version}",
                "topic": WORKSPACE,
                "subject": f"models/fraud:{version}",
                "eventType": mlevents.MODEL_REGISTERED,
                "eventTime": "2026-11-02T09:00:00Z",
                "data": {"modelName": "fraud", "modelVersion": str(version), "modelTags": {"deploy": "true"}},
                "dataVersion": "2",
            }
        ]
    ).encode()


def breach(run_id: str) -> bytes:
    return json.dumps(
        [
            {
                "id": f"breach-{run_id}",
                "topic": WORKSPACE,
                "subject": f"experiments/e-monitor/runs/{run_id}",
                "eventType": mlevents.RUN_STATUS_CHANGED,
                "eventTime": "2026-11-02T09:00:00Z",
                "data": {
                    "experimentName": "fraud-detection",
                    "runId": run_id,
                    "runStatus": "Failed",
                    "runTags": {mlevents.BREACH_TAG: f"Model monitor fraud-scorer-monitor {mlevents.BREACH}"},
                },
                "dataVersion": "2",
            }
        ]
    ).encode()


@pytest.fixture
async def azure() -> AsyncIterator[FakeAzure]:
    fake = FakeAzure()
    await fake.start()
    fake.batch_endpoint("retrain")
    fake.online_endpoint("fraud-scorer", {"blue": 100})
    yield fake
    await fake.stop()


@pytest.fixture
async def processes() -> AsyncIterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        if process.returncode is None:
            process.kill()
            await process.wait()


def azure_env(hub: LocalHub, azurite: Azurite, azure: FakeAzure, rules: Path, port: int) -> dict[str, str]:
    env = worker_env(
        hub,
        azurite,
        f"azureml-{uuid.uuid4().hex[:12]}",
        rules,
        azure_resource_manager=azure.url,
        http_port=port,
        load_balancing_interval=0.5,
        ownership_expiry=2,
        reorder_window=0,
    )
    # azure-identity's managed identity, as Container Apps and App Service give it; nothing else to sign in with.
    for name in [key for key in env if key.startswith(("AZURE_", "MSI_", "IDENTITY_"))]:
        del env[name]
    env.update(IDENTITY_ENDPOINT=azure.identity_endpoint, IDENTITY_HEADER=IDENTITY_HEADER)
    return env


async def send(hub: LocalHub, *bodies: bytes) -> None:
    await publish(hub.connection_string(), [Outgoing(body, {}, None) for body in bodies], partition_id="0")


async def test_a_tagged_model_is_deployed_and_a_breach_retrains_with_managed_identity_tokens(
    tmp_path: Path, azurite: Azurite, azure: FakeAzure, processes: list[Process]
):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    cwd = tmp_path / "worker"
    async with local_hub("azureml", partitions=1) as hub:
        processes.append(await start_worker(azure_env(hub, azurite, azure, rules, free_port()), cwd))
        await send(hub, registered(3), breach("fraud_scorer_monitor_1"))

        def done() -> bool:
            traffic = azure.online_endpoints["fraud-scorer"]["properties"]["traffic"]
            return traffic == {"blue": 90, "fraud-v3": 10} and len(azure.batch_jobs) == 1

        await azure.until(done)
        assert await stop_worker(processes[-1]) == 0
    assert azure.created == {("fraud-scorer", "fraud-v3"): 1}
    [job] = azure.batch_jobs.values()
    assert job["properties"]["inputData"]["monitor_run"]["value"] == "fraud_scorer_monitor_1"
    # Every token came from the managed identity endpoint, one audience each (azure-identity caches them).
    audiences = {request.query["resource"] for request in azure.received("GET", r"^/identity$")}
    assert audiences == {"https://management.azure.com", "https://ml.azure.com"}


async def test_a_worker_killed_while_it_follows_a_deployment_finishes_it_once_after_a_restart(
    tmp_path: Path, azurite: Azurite, azure: FakeAzure, processes: list[Process]
):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    cwd = tmp_path / "worker"
    port = free_port()
    azure.polls = 1_000_000  # the deployment runs until the test lets it end
    async with local_hub("azureml-kill", partitions=1) as hub:
        env = azure_env(hub, azurite, azure, rules, port)
        processes.append(await start_worker(env, cwd))
        await send(hub, registered(4))
        await azure.until(lambda: len(azure.received("GET", r"^/operations/")) >= 3)

        async def running() -> bool:  # what /metrics shows of a deployment under way
            metrics = await metrics_of(port)
            return (
                metrics.get("azml_worker_actions_running", 0) == 1
                and metrics.get("azml_worker_action_running_seconds", 0) > 0
            )

        await wait_for(running, 60, "/metrics to show the deployment under way")
        assert await stop_worker(processes[-1], signal.SIGKILL) == -signal.SIGKILL
        assert azure.online_endpoints["fraud-scorer"]["properties"]["traffic"] == {"blue": 100}

        for operation in azure.operations.values():
            operation.polls = operation.polled + 2  # it ends while the worker is down, or soon after
        processes.append(await start_worker(env, cwd))

        async def holding() -> bool:
            return "0" in held_partitions(cwd)

        await wait_for(holding, 60, "the restarted worker to hold the partition")
        await azure.until(
            lambda: azure.online_endpoints["fraud-scorer"]["properties"]["traffic"] == {"blue": 90, "fraud-v4": 10}
        )
        assert await stop_worker(processes[-1]) == 0
    assert azure.created == {("fraud-scorer", "fraud-v4"): 1}  # put twice, created once
    assert len(azure.received("PUT", r"/deployments/fraud-v4$")) == 2
    assert len([op for op in azure.operations.values() if op.resource[0] == "deployments"]) == 1


async def test_a_replay_dead_letters_an_invoke_the_endpoint_refused_and_a_redrive_runs_it(
    tmp_path: Path, azure: FakeAzure, monkeypatch: pytest.MonkeyPatch
):
    """``replay`` reaches Azure as ``worker run`` does (WORKER_AZURE_*, managed identity), and an Azure ML
    action dead-lettered for an endpoint that did not exist yet is re-driven once it does."""
    for name in [key for key in os.environ if key.startswith(("AZURE_", "MSI_", "IDENTITY_", "WORKER_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("WORKER_AZURE_RESOURCE_MANAGER", azure.url)
    monkeypatch.setenv("IDENTITY_ENDPOINT", azure.identity_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", IDENTITY_HEADER)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    source = capture(tmp_path / "capture", "0", [breach("fraud_scorer_monitor_2")])
    dead = tmp_path / "dead"
    del azure.batch_endpoints["retrain"]  # not made yet
    args = ["--rules", str(rules), "--dead-letters", str(dead), "--window", "0", "--log-level", "error"]
    assert await asyncio.to_thread(main, ["replay", *args, str(source)]) == 0
    [letter] = [orjson.loads(path.read_bytes()) for path in dead.glob("*.json")]
    assert "the batch endpoint 'retrain' was not found" in letter["attempts"][0]["error"]
    assert azure.batch_jobs == {}

    azure.batch_endpoint("retrain")
    report = tmp_path / "redrive.json"
    redrive = ["replay", "--from-dead-letters", "--report", str(report), *args, str(dead)]
    assert await asyncio.to_thread(main, redrive) == 0
    assert orjson.loads(report.read_bytes())["rules"]["retrain-on-monitor-breach"]["actions"] == {
        "azureml_batch_endpoint": {"done": 1}
    }
    [job] = azure.batch_jobs.values()
    assert job["properties"]["inputData"]["monitor_run"]["value"] == "fraud_scorer_monitor_2"
