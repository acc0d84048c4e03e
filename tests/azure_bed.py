"""A stand-in for Azure in the test bed: Azure Resource Manager as the Azure ML actions use it, a batch
endpoint's scoring host, and a managed identity endpoint, in one aiohttp server on a loopback port.

What it does as the services do (docs/azureml.md cites them): tokens are checked for their audience
(ARM's for ARM, Azure ML's for a scoring URI); a batch job posted twice with one
``repeatability_request-id`` is one job; a job put twice under one name is refused as "already
exists"; a deployment's PUT starts a long-running operation (``Azure-AsyncOperation``,
``Retry-After``) that is polled to Succeeded or Failed, and a PUT of the same deployment while it runs
goes on with the same operation; an endpoint's traffic must add up to 100 and name deployments that
exist. Faults are set per test: a status for the next requests of a kind (429 with ``Retry-After``,
5xx), a role the identity lacks (403), what does not exist (404).

Tokens are ``token-for:AUDIENCE``; :class:`ScopedCredential` hands them out directly, and
``/identity`` as App Service's managed identity endpoint does (``IDENTITY_ENDPOINT`` and
``IDENTITY_HEADER``), for azure-identity's own managed identity credential.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from aiohttp import web
from azure.core.credentials import AccessToken

from tests.targets import HttpTarget, Received

SUBSCRIPTION: Final = "00000000-0000-0000-0000-000000000000"
WORKSPACE: Final = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/ml-rg/providers/Microsoft.MachineLearningServices/workspaces/ml-prod"
)
ARM_AUDIENCE: Final = "https://management.azure.com"
ML_AUDIENCE: Final = "https://ml.azure.com"
IDENTITY_HEADER: Final = "identity-header-for-tests"
LOCATION: Final = "westeurope"

#: Registered components, as ARM returns their versions: a pipeline component of one command step,
#: and the command component it runs.
COMPONENTS: Final[dict[tuple[str, str], dict[str, Any]]] = {
    ("train_pipeline", "3"): {
        "name": "train_pipeline",
        "version": "3",
        "type": "pipeline",
        "display_name": "Train the fraud model",
        "inputs": {"training_data": {"type": "uri_folder"}, "lr": {"type": "number", "default": 0.01}},
        "outputs": {"model_dir": {"type": "uri_folder"}},
        "jobs": {
            "train": {
                "name": "train",
                "type": "command",
                "componentId": f"{WORKSPACE}/components/train_model/versions/1",
                "inputs": {
                    "training_data": {"job_input_type": "literal", "value": "${{parent.inputs.training_data}}"},
                    "lr": {"job_input_type": "literal", "value": "${{parent.inputs.lr}}"},
                },
                "outputs": {"model": {"type": "literal", "value": "${{parent.outputs.model_dir}}"}},
            }
        },
    },
    ("train_model", "1"): {
        "name": "train_model",
        "version": "1",
        "type": "command",
        "command": "python train.py --data ${{inputs.training_data}} --lr ${{inputs.lr}} --model ${{outputs.model}}",
        "code": f"azureml:{WORKSPACE}/codes/0000-code/versions/1",
        "environment": f"azureml:{WORKSPACE}/environments/sklearn-env/versions/1",
        "inputs": {"training_data": {"type": "uri_folder"}, "lr": {"type": "number", "default": 0.01}},
        "outputs": {"model": {"type": "uri_folder"}},
    },
}
#: The latest version of each asset a test may ask for by ``@latest``, by (collection, name).
LATEST: Final = {("components", "train_pipeline"): "3", ("data", "reference-data"): "7", ("models", "fraud"): "3"}


def batch_endpoint_document(name: str, scoring_uri: str) -> dict[str, Any]:
    """A batch endpoint as ARM returns it."""
    return {
        "id": f"{WORKSPACE}/batchEndpoints/{name}",
        "name": name,
        "location": LOCATION,
        "properties": {"scoringUri": scoring_uri, "authMode": "AADToken"},
    }


def online_endpoint_document(name: str, traffic: dict[str, int]) -> dict[str, Any]:
    """A managed online endpoint as ARM returns it: with what is read only (its state, its scoring URI,
    its identity's principal), which a full write leaves out."""
    return {
        "id": f"{WORKSPACE}/onlineEndpoints/{name}",
        "name": name,
        "location": LOCATION,
        "kind": "Managed",
        "identity": {"type": "SystemAssigned", "principalId": "p", "tenantId": "t"},
        "tags": {"team": "fraud"},
        "properties": {
            "authMode": "Key",
            "description": "scores transactions",
            "properties": {},
            "traffic": dict(traffic),
            "mirrorTraffic": {},
            "provisioningState": "Succeeded",
            "publicNetworkAccess": "Enabled",
            "scoringUri": f"https://{name}.{LOCATION}.inference.ml.azure.com/score",
        },
    }


def component_document(name: str, version: str) -> dict[str, Any] | None:
    spec = COMPONENTS.get((name, version))
    if spec is None:
        return None
    return {
        "id": f"{WORKSPACE}/components/{name}/versions/{version}",
        "name": version,
        "properties": {"componentSpec": spec},
    }


def token_for(scope_or_resource: str) -> str:
    return f"token-for:{scope_or_resource.removesuffix('/.default').rstrip('/')}"


class ScopedCredential:
    """An azure.core async credential whose token names its audience, recording the scopes asked for."""

    def __init__(self) -> None:
        self.scopes: list[str] = []

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.extend(scopes)
        return AccessToken(token_for(scopes[0]), int(time.time()) + 3600)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> ScopedCredential:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


@dataclass
class Fault:
    """The next ``count`` requests matching ``method`` and ``pattern`` (a regex on the path) get ``status``."""

    method: str
    pattern: str
    status: int
    count: int = 1
    headers: dict[str, str] = field(default_factory=dict)
    code: str = "ServiceError"
    message: str = "the service failed"


@dataclass
class Operation:
    """A long-running operation: in progress for ``polls`` polls, then ``outcome``."""

    resource: tuple[str, ...]
    polls: int
    outcome: str = "Succeeded"
    error: dict[str, str] | None = None
    polled: int = 0

    def status(self) -> str:
        return "InProgress" if self.polled <= self.polls else self.outcome


_ARM: Final = re.compile(
    r"(?P<workspace>/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.MachineLearningServices/workspaces/[^/]+)(?P<rest>(/[^/]+)*)",
    re.IGNORECASE,
)


class FakeAzure(HttpTarget):
    """The server: start it, point the worker's ARM at :attr:`url`, and read what it was asked."""

    def __init__(self) -> None:
        super().__init__(client_max_size=16 * 1024 * 1024)
        self.respond = self._dispatch
        self.faults: list[Fault] = []
        #: (method, collection) pairs the identity may not do: answered 403 AuthorizationFailed.
        self.forbidden: set[tuple[str, str]] = set()
        self.batch_endpoints: dict[str, dict[str, Any]] = {}
        self.batch_jobs: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.online_endpoints: dict[str, dict[str, Any]] = {}
        self.deployments: dict[tuple[str, str], dict[str, Any]] = {}
        #: How many times each deployment was created (not updated): one is right.
        self.created: Counter[tuple[str, str]] = Counter()
        self.operations: dict[str, Operation] = {}
        #: Polls an operation stays in progress, and the Retry-After it answers with.
        self.polls = 2
        self.retry_after = "0"
        #: Deployments whose operation ends Failed, with the service's error.
        self.failing: dict[str, dict[str, str]] = {}

    @property
    def identity_endpoint(self) -> str:
        return f"{self.url}/identity"

    def batch_endpoint(self, name: str) -> None:
        self.batch_endpoints[name.lower()] = batch_endpoint_document(name, f"{self.url}/score/{name}/jobs")

    def online_endpoint(self, name: str, traffic: dict[str, int]) -> None:
        self.online_endpoints[name.lower()] = online_endpoint_document(name, traffic)
        for deployment in traffic:
            self.deployments[name.lower(), deployment.lower()] = {
                "name": deployment,
                "properties": {"provisioningState": "Succeeded", "model": f"{WORKSPACE}/models/fraud/versions/1"},
            }

    def fail(self, method: str, pattern: str, status: int, count: int = 1, **options: Any) -> None:
        self.faults.append(Fault(method, pattern, status, count, **options))

    def received(self, method: str, pattern: str) -> list[Received]:
        return [r for r in self.requests if r.method == method and re.search(pattern, r.path)]

    def times(self, method: str, pattern: str) -> list[float]:
        """When the requests :meth:`received` names came."""
        return [
            at
            for r, at in zip(self.requests, self.arrived, strict=True)
            if r.method == method and re.search(pattern, r.path)
        ]

    # --- dispatch ----------------------------------------------------------------------------

    async def _dispatch(self, received: Received) -> web.StreamResponse:
        if received.path == "/identity":
            return self._identity(received)
        for fault in self.faults:
            if fault.count > 0 and fault.method == received.method and re.search(fault.pattern, received.path):
                fault.count -= 1
                return _error(fault.status, fault.code, fault.message, fault.headers)
        if received.path.startswith("/score/"):
            return self._score(received)
        if not self._token_is(received, ARM_AUDIENCE):
            return _error(401, "InvalidAuthenticationToken", "the access token is invalid (audience)")
        if received.path.startswith("/operations/"):
            return self._operation(received.path.rsplit("/", 1)[1])
        found = _ARM.fullmatch(received.path)
        if found is None or found["workspace"].lower() != WORKSPACE.lower():
            return _error(404, "ResourceNotFound", f"the workspace of {received.path} was not found")
        parts = tuple(part for part in found["rest"].split("/") if part)
        if not parts:
            return web.json_response({"id": WORKSPACE, "name": "ml-prod", "location": LOCATION, "properties": {}})
        if (received.method, parts[0]) in self.forbidden:
            verb = "read" if received.method == "GET" else "write"
            action = f"Microsoft.MachineLearningServices/workspaces/{parts[0]}/{verb}"
            return _error(
                403,
                "AuthorizationFailed",
                f"The client 'worker' does not have authorization to perform action '{action}' "
                f"over scope '{WORKSPACE}'",
            )
        if received.query.get("api-version") is None:
            return _error(400, "MissingApiVersionParameter", "The api-version query parameter is required")
        return self._arm(received, parts)

    def _token_is(self, received: Received, audience: str) -> bool:
        return received.header("Authorization") == f"Bearer {token_for(audience)}"

    # --- the managed identity endpoint -----------------------------------------------------------

    def _identity(self, received: Received) -> web.StreamResponse:
        if received.header("X-IDENTITY-HEADER") != IDENTITY_HEADER:
            return web.json_response({"error": "invalid identity header"}, status=401)
        resource = received.query.get("resource", "")
        return web.json_response(
            {
                "access_token": token_for(resource),
                "expires_on": str(int(time.time()) + 3600),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": "worker-identity",
            }
        )

    # --- Azure Resource Manager ------------------------------------------------------------------

    def _arm(self, received: Received, parts: tuple[str, ...]) -> web.StreamResponse:
        method, collection = received.method, parts[0]
        if collection == "batchEndpoints" and method == "GET" and len(parts) == 2:
            return self._get(self.batch_endpoints.get(parts[1].lower()), "batch endpoint", parts[1])
        if collection in ("components", "data", "models") and method == "GET":
            return self._asset(collection, parts)
        if collection == "jobs" and len(parts) == 2:
            return self._job(received, parts[1])
        if collection == "onlineEndpoints" and len(parts) == 2:
            return self._endpoint(received, parts[1])
        if collection == "onlineEndpoints" and len(parts) == 4 and parts[2] == "deployments":
            return self._deployment(received, parts[1], parts[3])
        return _error(404, "NotFound", f"no route for {method} {received.path}")

    def _get(self, found: dict[str, Any] | None, kind: str, name: str) -> web.StreamResponse:
        if found is None:
            return _error(404, "UserError", f"{kind} {name} not found in workspace ml-prod")
        return web.json_response(found)

    def _asset(self, collection: str, parts: tuple[str, ...]) -> web.StreamResponse:
        name = parts[1]
        if len(parts) == 2:
            latest = LATEST.get((collection, name))
            if latest is None:
                return _error(404, "UserError", f"{collection} container {name} was not found")
            return web.json_response(
                {"id": f"{WORKSPACE}/{collection}/{name}", "name": name, "properties": {"latestVersion": latest}}
            )
        version = parts[3]
        if collection == "components":
            found = component_document(name, version)
            if found is None:
                return _error(404, "UserError", f"component {name}:{version} was not found")
            return web.json_response(found)
        return web.json_response({"id": f"{WORKSPACE}/{collection}/{name}/versions/{version}", "properties": {}})

    def _job(self, received: Received, name: str) -> web.StreamResponse:
        if received.method == "GET":
            return self._get(self.jobs.get(name), "job", name)
        if name in self.jobs:
            return _error(
                400,
                "UserError",
                "A job with this name already exists. If you are trying to create a new job, use a different name. "
                "If you are trying to update an existing job, the existing job's Settings, Inputs, Outputs, Jobs, "
                "InputBindings, OutputBindings cannot be changed.",
                inner="Immutable",
            )
        body = received.json()
        job = {
            "id": f"{WORKSPACE}/jobs/{name}",
            "name": name,
            "properties": {
                **body["properties"],
                "status": "NotStarted",
                "services": {"Studio": {"endpoint": f"https://ml.azure.com/runs/{name}?wsid={WORKSPACE}"}},
            },
        }
        self.jobs[name] = job
        return web.json_response(job, status=201)

    def _endpoint(self, received: Received, name: str) -> web.StreamResponse:
        found = self.online_endpoints.get(name.lower())
        if received.method == "GET":
            return self._get(found, "online endpoint", name)
        if found is None:
            return _error(404, "UserError", f"online endpoint {name} not found")
        body = received.json()
        traffic = body["properties"]["traffic"]
        if traffic and sum(traffic.values()) != 100:
            return _error(400, "BadArgument", f"Traffic must add up to 100, got {sum(traffic.values())}")
        for deployment in [*traffic, *body["properties"].get("mirrorTraffic", {})]:
            state = self.deployments.get((name.lower(), deployment.lower()), {}).get("properties", {})
            if state.get("provisioningState") != "Succeeded":
                return _error(400, "BadArgument", f"Deployment {deployment} does not exist or is not ready")
        found["properties"]["traffic"] = dict(traffic)
        found["properties"]["mirrorTraffic"] = dict(body["properties"].get("mirrorTraffic", {}))
        operation = self._operation_for(("onlineEndpoints", name.lower()), polls=0)
        return web.json_response(found, status=200, headers=self._async_headers(operation))

    def _deployment(self, received: Received, endpoint: str, name: str) -> web.StreamResponse:
        key = (endpoint.lower(), name.lower())
        found = self.deployments.get(key)
        if received.method == "GET":
            return self._get(found, "deployment", name)
        if endpoint.lower() not in self.online_endpoints:
            return _error(404, "UserError", f"online endpoint {endpoint} not found")
        running = next(
            (
                op_id
                for op_id, op in self.operations.items()
                if op.resource == ("deployments", *key) and op.status() == "InProgress"
            ),
            None,
        )
        if running is not None:  # the same PUT again while it runs: the service goes on with it
            return web.json_response(found, status=201, headers=self._async_headers(running))
        body = received.json()
        if found is None:
            self.created[key] += 1
        found = self.deployments[key] = {
            "id": f"{WORKSPACE}/onlineEndpoints/{endpoint}/deployments/{name}",
            "name": name,
            **body,
            "properties": {**body["properties"], "provisioningState": "Creating"},
        }
        error = self.failing.get(name.lower())
        operation = self._operation_for(
            ("deployments", *key), polls=self.polls, outcome="Failed" if error else "Succeeded", error=error
        )
        return web.json_response(found, status=201, headers=self._async_headers(operation))

    def _operation_for(
        self, resource: tuple[str, ...], polls: int, outcome: str = "Succeeded", error: dict[str, str] | None = None
    ) -> str:
        op_id = uuid.uuid4().hex
        self.operations[op_id] = Operation(resource, polls, outcome, error)
        return op_id

    def _async_headers(self, op_id: str) -> dict[str, str]:
        return {
            "Azure-AsyncOperation": f"{self.url}/operations/{op_id}?api-version=2025-12-01",
            "Retry-After": self.retry_after,
        }

    def _operation(self, op_id: str) -> web.StreamResponse:
        operation = self.operations.get(op_id)
        if operation is None:
            return _error(404, "NotFound", f"operation {op_id}")
        operation.polled += 1
        status = operation.status()
        if status != "InProgress" and operation.resource[0] == "deployments":
            deployment = self.deployments[operation.resource[1], operation.resource[2]]
            deployment["properties"]["provisioningState"] = status
        document: dict[str, Any] = {"id": op_id, "name": op_id, "status": status}
        if status == "Failed" and operation.error is not None:
            document["error"] = operation.error
        return web.json_response(document, headers={"Retry-After": self.retry_after})

    # --- a batch endpoint's scoring host ------------------------------------------------------------

    def _score(self, received: Received) -> web.StreamResponse:
        if not self._token_is(received, ML_AUDIENCE):
            return _error(401, "Unauthorized", "the token's audience is not Azure ML's")
        endpoint = received.path.split("/")[2]
        if endpoint.lower() not in self.batch_endpoints:
            return _error(404, "UserError", f"batch endpoint {endpoint} not found")
        repeat = received.header("repeatability_request-id")
        if not repeat:
            return _error(400, "BadRequest", "repeatability_request-id is required")
        job = self.batch_jobs.get(repeat)
        if job is None:
            name = f"batchjob-{uuid.uuid4()}"
            job = self.batch_jobs[repeat] = {
                "id": f"{WORKSPACE}/batchEndpoints/{endpoint}/jobs/{name}",
                "name": name,
                "type": "Microsoft.MachineLearningServices/workspaces/batchEndpoints/deployments/jobs",
                "properties": {
                    **received.json()["properties"],
                    "status": "Preparing",
                    "interactionEndpoints": {
                        "Studio": {"endpoint": f"https://ml.azure.com/runs/{name}?wsid={WORKSPACE}"}
                    },
                },
            }
        return web.json_response(job, status=201)


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, inner: str | None = None
) -> web.Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if inner is not None:
        error["innererror"] = {"code": inner}
    return web.Response(
        status=status, body=orjson.dumps({"error": error}), content_type="application/json", headers=headers
    )
