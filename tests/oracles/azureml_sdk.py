"""What Microsoft's azure-ai-ml sends for an operation, captured offline: ``python -m tests.oracles.azureml_sdk
SCENARIO FILE`` writes the requests to FILE, a JSON list (azure-ai-ml prints its progress on stdout).

MLClient is given an azure-core transport over a ``requests`` session whose adapter records each request
and answers it from the test bed's own documents (tests/azure_bed.py): nothing leaves the process. The
credential hands out tokens that azure-ai-ml can read (it reads the Azure ML token's audience before it
submits a pipeline job). It runs in a process of its own: azure-ai-ml imports OpenTelemetry and much
else that the worker's tests should not carry.
"""

from __future__ import annotations

import base64
import io
import json
import sys
from typing import Any, Final

import requests
import urllib3
from azure.ai.ml import Input, MLClient, Output
from azure.ai.ml.constants._endpoint import EndpointInvokeFields
from azure.ai.ml.entities import Command, ManagedOnlineDeployment, PipelineJob, PipelineJobSettings
from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import RequestsTransport

from tests.azure_bed import (
    LATEST,
    LOCATION,
    SUBSCRIPTION,
    WORKSPACE,
    batch_endpoint_document,
    component_document,
    online_endpoint_document,
)
from tests.oracles.scenarios import SCENARIOS, Scenario

_SCORING: Final = "https://retrain.westeurope.inference.ml.azure.com/jobs"
_OPERATION: Final = "https://management.azure.com/operations/op-1?api-version=2025-12-01"


def jwt(audience: str) -> str:
    """A token azure-ai-ml can decode (it checks the Azure ML token's audience), unsigned."""

    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part({'aud': audience, 'exp': 2**31})}.c2ln"


class Credential:
    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(jwt(scopes[0].removesuffix("/.default")), 2**31)


class Recorder(requests.adapters.BaseAdapter):
    """Records each request and answers it from the test bed's documents."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[dict[str, Any]] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        body: Any = request.body
        document = json.loads(body.decode() if isinstance(body, bytes) else body) if body else None
        self.requests.append(
            {"method": request.method, "url": request.url, "headers": dict(request.headers), "body": document}
        )
        status, answer, headers = route(str(request.method), str(request.url), document)
        response = requests.Response()
        data = json.dumps(answer).encode()
        response.status_code = status
        response.headers.update({"Content-Type": "application/json", **headers})
        response.raw = urllib3.HTTPResponse(io.BytesIO(data), preload_content=False, status=status)
        response.url, response.request, response._content = str(request.url), request, data
        return response

    def close(self) -> None:
        return None


def route(method: str, url: str, body: Any) -> tuple[int, Any, dict[str, str]]:
    """The answer ARM (or the scoring host) gives, as the test bed gives it."""
    path = url.split("?", 1)[0].split("management.azure.com", 1)[-1]
    rest = path[len(WORKSPACE) :] if path.lower().startswith(WORKSPACE.lower()) else path
    parts = [part for part in rest.split("/") if part]
    async_headers = {"Azure-AsyncOperation": _OPERATION, "Retry-After": "0"}
    if url.startswith(_SCORING):
        return 201, {"id": "j", "name": "batchjob-1", "properties": {"status": "Preparing"}}, {}
    if path.startswith("/operations/"):
        return 200, {"status": "Succeeded"}, {}
    if not parts:
        return 200, {"id": WORKSPACE, "name": "ml-prod", "location": LOCATION, "properties": {}}, {}
    kind = parts[0]
    if kind == "batchEndpoints":
        if parts[-1] == "deployments":
            return 200, {"value": [{"name": "nightly", "id": path + "/nightly", "properties": {}}]}, {}
        return 200, batch_endpoint_document(parts[1], _SCORING), {}
    if kind == "components" and len(parts) == 4:
        return 200, component_document(parts[1], parts[3]), {}
    if kind in ("data", "models", "components") and len(parts) == 2:
        return 200, {"id": path, "name": parts[1], "properties": {"latestVersion": LATEST[kind, parts[1]]}}, {}
    if kind == "jobs" and method == "PUT":
        return 201, {"id": path, "name": parts[1], "properties": {**body["properties"], "status": "NotStarted"}}, {}
    if kind == "onlineEndpoints" and len(parts) == 2:
        if method == "PUT":
            return 201, {**body, "id": path, "name": parts[1]}, async_headers
        return 200, online_endpoint_document(parts[1], {"blue": 100}), {}
    if kind == "onlineEndpoints" and parts[2:] == ["deployments"]:
        return 200, {"value": []}, {}
    if kind == "onlineEndpoints" and len(parts) == 4:
        if method == "PUT":
            return 201, {**body, "id": path, "name": parts[3]}, async_headers
        deployed = {
            "id": path,
            "name": parts[3],
            "location": LOCATION,
            "sku": {"name": "Default", "capacity": 1},
            "properties": {
                "provisioningState": "Succeeded",
                "endpointComputeType": "Managed",
                "scaleSettings": {"scaleType": "Default"},
            },
        }
        return 200, deployed, {}
    return 404, {"error": {"code": "NotFound", "message": path}}, {}


def run(ml: MLClient, scenario: Scenario) -> None:
    """The operation, as azure-ai-ml's documentation writes it."""
    batch = scenario.kind == "batch"
    inputs: dict[str, Any] = {name: _input(kind, value, batch=batch) for name, (kind, value) in scenario.inputs.items()}
    outputs: dict[str, Any] = {name: Output(type=kind, path=value) for name, (kind, value) in scenario.outputs.items()}
    if scenario.kind == "batch":
        EndpointInvokeFields.DEFAULT_HEADER = {"Content-Type": "application/json"}  # azure-ai-ml leaks it across calls
        ml.batch_endpoints.invoke(
            scenario.endpoint,
            deployment_name=scenario.deployment,
            experiment_name=scenario.experiment,
            inputs=inputs,
            outputs=outputs,
        )
    elif scenario.kind == "pipeline":
        component = ml.components.get(*scenario.component)
        settings = PipelineJobSettings(default_compute=scenario.compute)
        job = PipelineJob(
            component=component,
            inputs=inputs,
            outputs=outputs,
            experiment_name=scenario.experiment,
            tags=scenario.tags,
            settings=settings,
        )
        ml.jobs.create_or_update(job)
    elif scenario.kind == "command":
        component = ml.components.get(*scenario.component)
        node = Command(
            component=component,
            inputs=inputs,
            outputs=outputs,
            compute=scenario.compute,
            environment=component.environment,
            tags=scenario.tags,
            experiment_name=scenario.experiment,
        )
        ml.jobs.create_or_update(node)
    elif scenario.kind == "deploy":
        deployment = ManagedOnlineDeployment(
            name=scenario.deployment or "",
            endpoint_name=scenario.endpoint,
            model=scenario.model,
            instance_type=scenario.instance_type,
            instance_count=scenario.instance_count,
        )
        ml.online_deployments.begin_create_or_update(deployment).result()
    elif scenario.kind == "traffic":
        endpoint = ml.online_endpoints.get(scenario.endpoint)
        endpoint.traffic = dict(scenario.traffic)
        ml.online_endpoints.begin_create_or_update(endpoint).result()


def _input(kind: str, value: Any, *, batch: bool) -> Any:
    """An input as azure-ai-ml takes it: a literal of a job as its value, of a batch endpoint as a typed input
    (given bare, azure-ai-ml would send the bare value, which the service does not take)."""
    if kind != "literal":
        return Input(type=kind, path=value)
    if not batch:
        return value
    typed = {bool: "boolean", int: "integer", float: "number", str: "string"}[type(value)]
    return Input(type=typed, default=value)


def main(argv: list[str]) -> int:
    name, out = argv
    recorder = Recorder()
    session = requests.Session()
    session.mount("https://", recorder)
    transport = RequestsTransport(session=session, session_owner=False)
    ml = MLClient(
        Credential(), SUBSCRIPTION, "ml-rg", "ml-prod", transport=transport, enable_telemetry=False, show_progress=False
    )
    run(ml, SCENARIOS[name])
    with open(out, "w", encoding="utf-8") as file:
        json.dump(recorder.requests, file)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
