"""The Azure ML actions send what Microsoft's azure-ai-ml sends for the same operation: the same request
body and the same meaningful headers (the tokens' audiences, the deployment chosen, the repeatability
id), at the same resource. Volatile values (request ids, the user agent, api-versions, and the name
azure-ai-ml makes up for a job where the worker names it by its idempotency key) aside.

The SDK's side is captured offline by tests/oracles/azureml_sdk.py, in a process of its own; the
worker's side is the action run against the test bed's Azure, answering from the same documents.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.azure_bed import WORKSPACE, FakeAzure, ScopedCredential
from tests.oracles.scenarios import EVENT_ID, RULE, SCENARIOS, action_params
from tests.servers import ROOT
from tests.test_azureml_actions import event
from worker.actions import ActionSpec, PlannedAction, action_types
from worker.actions.base import ActionFate
from worker.actions.delivery.runner import ActionRunner, DeadLetterDirectory
from worker.actions.delivery.services import Services
from worker.actions.delivery.tokens import CredentialTokens
from worker.actions.retry import RetryPolicy
from worker.settings import AzureSettings

pytestmark = pytest.mark.integration

#: The request that is the operation, by scenario: its method and a pattern of its path.
OPERATION = {
    "batch": ("POST", r"/jobs$"),
    "pipeline": ("PUT", r"/jobs/[^/]+$"),
    "command": ("PUT", r"/jobs/[^/]+$"),
    "deploy": ("PUT", r"/deployments/fraud-v3$"),
    "traffic": ("PUT", r"/onlineEndpoints/fraud-scorer$"),
}
#: The headers whose values mean something to the service (compared after :func:`meaning`).
MEANINGFUL = (
    "authorization",
    "content-type",
    "azureml-model-deployment",
    "repeatability_request-id",
    "x-azureml-token",
)
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def sdk_requests(scenario: str, tmp_path: Path) -> list[dict[str, Any]]:
    out = tmp_path / f"{scenario}.json"
    # Outside any git work tree: inside one, azure-ai-ml adds the commit to a job's properties.
    done = subprocess.run(
        [sys.executable, "-m", "tests.oracles.azureml_sdk", scenario, str(out)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    requests: list[dict[str, Any]] = json.loads(out.read_text())
    return requests


async def worker_requests(scenario: str, tmp_path: Path) -> list[dict[str, Any]]:
    azure = FakeAzure()
    await azure.start()
    azure.batch_endpoint("retrain")
    azure.online_endpoint("fraud-scorer", {"blue": 100})
    kind, params = action_params(SCENARIOS[scenario], WORKSPACE)
    spec = ActionSpec(kind, 0, action_types()[kind].params.model_validate(params))
    runner = ActionRunner(
        DeadLetterDirectory(tmp_path / "dead"),
        RetryPolicy(attempts=1),
        services=Services(
            tokens=CredentialTokens(ScopedCredential()), azure=AzureSettings(resource_manager_override=azure.url)
        ),
    )
    try:
        assert await runner.run(PlannedAction(RULE, spec, event(EVENT_ID))) is ActionFate.DONE
    finally:
        await runner.aclose()
        await azure.stop()
    return [
        {
            "method": r.method,
            "url": azure.url + r.path,
            "headers": r.headers,
            "body": json.loads(r.body) if r.body else None,
        }
        for r in azure.requests
    ]


def operation(requests: list[dict[str, Any]], scenario: str) -> dict[str, Any]:
    method, pattern = OPERATION[scenario]
    [found] = [r for r in requests if r["method"] == method and re.search(pattern, r["url"].split("?")[0])]
    return found


def meaning(name: str, value: str) -> str:
    """What a header says, without what changes from call to call."""
    if name in ("authorization", "x-azureml-token"):
        return "audience " + audience(value.removeprefix("Bearer "))
    if name == "repeatability_request-id":
        return "a UUID" if _UUID.fullmatch(value) else f"not a UUID: {value!r}"
    return value


def audience(token: str) -> str:
    if token.startswith("token-for:"):
        return token.removeprefix("token-for:")
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims["aud"])


def shape(request: dict[str, Any]) -> dict[str, Any]:
    """The request as compared: its path (a job's name replaced), body and meaningful headers."""
    path = request["url"].split("?", 1)[0].split("://", 1)[1].split("/", 1)[1]
    name = re.search(r"/jobs/([^/]+)$", path)
    body = request["body"]
    if name is not None:
        path = path.replace(name[1], "NAME")
        if body["properties"].get("displayName") == name[1]:
            body = {"properties": {**body["properties"], "displayName": "NAME"}}
    headers = {key.lower(): value for key, value in request["headers"].items()}
    return {
        "path": path if not path.startswith("jobs") else "/" + path,
        "body": body,
        "headers": {key: meaning(key, headers[key]) for key in MEANINGFUL if key in headers},
    }


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_the_action_sends_what_azure_ai_ml_sends(scenario: str, tmp_path: Path):
    sdk = shape(operation(sdk_requests(scenario, tmp_path), scenario))
    ours = shape(operation(await worker_requests(scenario, tmp_path), scenario))
    assert ours["body"] == sdk["body"]
    assert ours["headers"] == sdk["headers"]
    if scenario != "batch":  # a batch job goes to the endpoint's scoring URI, where the test bed has its own host
        assert ours["path"].lower() == sdk["path"].lower()
