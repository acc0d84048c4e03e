"""ARM and Azure ML's data plane for the Azure ML actions: tokens, errors, long-running operations.

Requests carry the worker's Entra ID token; the service's errors are read once, here; a long-running
operation is followed to its end.

Status codes mean what they mean to every HTTP action (:mod:`worker.actions.http`): 408, 409, 429 and
5xx are transient (retried, honouring ``Retry-After``); any other 4xx is permanent (dead-lettered),
with the service's own message. A 403 adds the role the worker's identity needs; a 404 says what was
not found. A long-running operation (``Azure-AsyncOperation``, else ``Location``, else the resource's
``provisioningState``) is polled at the service's ``Retry-After`` (else every ``interval``) until it
succeeds, fails or is cancelled: a failed one is permanent, with the service's error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Generic, TypeVar

import orjson

from worker.actions.base import PlannedAction
from worker.actions.clients import Clients, HttpRequest, HttpResponse
from worker.actions.retry import retry_after_seconds
from worker.errors import ActionError, TargetRejected, TargetUnavailable
from worker.jsontext import dumps
from worker.masking import MASKER

#: Bytes of a response read: an ARM resource (a component's spec) is seldom more than a few hundred KB.
MAX_DOCUMENT: Final = 8 * 1024 * 1024
#: The role that lets an identity invoke batch endpoints, submit jobs and deploy models in a workspace.
ROLE: Final = "AzureML Data Scientist"
_TERMINAL: Final = {"succeeded": "Succeeded", "failed": "Failed", "canceled": "Canceled", "cancelled": "Canceled"}
_EXCERPT: Final = 500


@dataclass(frozen=True, slots=True)
class Reply:
    """A response whose status is a success, with its JSON document ({} when it has none)."""

    status: int
    headers: Mapping[str, str]
    document: dict[str, object]


def service_error(document: object) -> tuple[str, str]:
    """The ``error.code`` and ``error.message`` of an ARM (or Azure ML) error document, as far as given."""
    error = document.get("error") if isinstance(document, dict) else None
    if not isinstance(error, dict):
        return "", ""
    code, message = error.get("code"), error.get("message")
    inner = error.get("innererror") or error.get("innerError")
    if isinstance(inner, dict) and isinstance(inner.get("code"), str):
        code = f"{code}/{inner['code']}" if isinstance(code, str) else inner["code"]
    return (code if isinstance(code, str) else ""), (message if isinstance(message, str) else "")


def error_of(request: HttpRequest, response: HttpResponse, what: str) -> ActionError:
    """The error a failed response stands for, named after ``what`` was asked (``the batch endpoint
    'retrain'``), with the service's code and message."""
    status = response.status
    try:
        document: object = orjson.loads(response.body) if response.body else None
    except orjson.JSONDecodeError:
        document = None
    code, message = service_error(document)
    if not message:
        message = response.body[:_EXCERPT].decode("utf-8", "replace").strip()
    said = MASKER.mask(f"{code}: {message}" if code else message)[:_EXCERPT]
    text = f"{request.where}: HTTP {status}" + (f" ({said})" if said else "")
    if status in (408, 409, 429) or status >= 500:
        retry_after = retry_after_seconds(response.headers.get("retry-after"), datetime.now(UTC))
        return TargetUnavailable(f"{what}: {text}", retry_after=retry_after)
    if status == 404:
        return TargetRejected(f"{what} was not found: {text}")
    if status == 403:
        return TargetRejected(
            f"{what}: the worker's identity is not allowed: {text}; give it the {ROLE} role on the workspace "
            "(or a role with the action named)"
        )
    if status == 401:
        return TargetRejected(f"{what}: the token was refused: {text}; is WORKER_AZURE_CLOUD the workspace's cloud?")
    return TargetRejected(f"{what}: {text}")


class Arm:
    """Requests of one action type: ARM with its token and api-version, and the data plane with Azure ML's."""

    def __init__(self, clients: Clients) -> None:
        self._http = clients.http
        self._tokens = clients.tokens
        self.azure = clients.azure

    @property
    def target(self) -> str:
        """What the runner keeps a circuit for: Azure Resource Manager."""
        return self.azure.resource_manager

    def url(self, resource: str) -> str:
        return f"{self.azure.resource_manager}{resource}?api-version={self.azure.azureml_api_version}"

    async def token(self, scope: str | None = None) -> str:
        return await self._tokens.token(scope or self.azure.resource_manager_scope)

    async def call(
        self,
        action: PlannedAction,
        method: str,
        url: str,
        what: str,
        body: object = None,
        *,
        scope: str | None = None,
        headers: Mapping[str, str] | None = None,
        accept: tuple[int, ...] = (),
    ) -> tuple[HttpResponse, dict[str, object]]:
        """Send one request; return a success, or a status in ``accept``, with its JSON document; raise the
        error any other status stands for."""
        request = HttpRequest(
            method,
            url,
            {
                "Authorization": f"Bearer {await self.token(scope)}",
                "x-ms-client-request-id": action.request_id,
                **({"Content-Type": "application/json"} if body is not None else {}),
                **(headers or {}),
            },
            None if body is None else dumps(body),
        )
        response = await self._http.exchange(request, limit=MAX_DOCUMENT)
        if not (200 <= response.status < 300 or response.status in accept):
            raise error_of(request, response, what)
        try:
            document = orjson.loads(response.body) if response.body.strip() else {}
        except orjson.JSONDecodeError:
            document = {}
        return response, document if isinstance(document, dict) else {}

    async def get(self, action: PlannedAction, resource: str, what: str) -> dict[str, object]:
        return (await self.call(action, "GET", self.url(resource), what))[1]

    async def put(
        self,
        action: PlannedAction,
        resource: str,
        body: object,
        what: str,
        *,
        headers: Mapping[str, str] | None = None,
        accept: tuple[int, ...] = (),
    ) -> Reply:
        response, document = await self.call(
            action, "PUT", self.url(resource), what, body, headers=headers, accept=accept
        )
        return Reply(response.status, response.headers, document)

    async def finish(
        self, action: PlannedAction, reply: Reply, resource: str, what: str, *, interval: float
    ) -> dict[str, object]:
        """Follow the long-running operation ``reply`` started on ``resource`` to its end; the resource as
        it then is. A failed or cancelled operation raises TargetRejected with the service's error."""
        headers = reply.headers
        status_url = headers.get("azure-asyncoperation") or headers.get("location")
        wait = _wait(headers, interval)
        if status_url is not None:
            while True:
                await asyncio.sleep(wait)
                response, document = await self._poll(action, status_url, what)
                if headers.get("azure-asyncoperation") is None and response.status == 202:  # Location: 202 until done
                    wait = _wait(response.headers, interval)
                    continue
                state = _TERMINAL.get(
                    str(document.get("status", "succeeded" if response.status != 202 else "")).lower()
                )
                if state is None:
                    wait = _wait(response.headers, interval)
                    continue
                if state != "Succeeded":
                    raise TargetRejected(f"{what}: the operation ended {state}: {_operation_error(document)}")
                break
        document = reply.document if status_url is None else await self.get(action, resource, what)
        while True:  # the resource's own state says when it is done, and how
            state = _provisioning(document)
            if state is None or state == "Succeeded":
                return document
            if state in ("Failed", "Canceled"):
                raise TargetRejected(f"{what}: provisioning ended {state}: {_operation_error(document)}")
            await asyncio.sleep(interval)
            document = await self.get(action, resource, what)

    async def _poll(self, action: PlannedAction, url: str, what: str) -> tuple[HttpResponse, dict[str, object]]:
        """One poll of an operation; a transient failure is tried again at the next poll, not the whole action."""
        while True:
            try:
                return await self.call(action, "GET", url, f"{what} (the operation's status)")
            except TargetUnavailable as exc:
                await asyncio.sleep(exc.retry_after if exc.retry_after is not None else 5.0)


Params = TypeVar("Params")


class ArmExecutor(Generic[Params]):
    """An Azure ML action's executor: its parameters, and ARM as its target (one circuit for all of ARM)."""

    def __init__(self, params: Params, clients: Clients) -> None:
        self._params = params
        self._arm = Arm(clients)
        self.target = self._arm.target

    async def aclose(self) -> None:
        return None


def _wait(headers: Mapping[str, str], interval: float) -> float:
    after = retry_after_seconds(headers.get("retry-after"), datetime.now(UTC))
    return interval if after is None else after


def _provisioning(document: Mapping[str, object]) -> str | None:
    properties = document.get("properties")
    state = properties.get("provisioningState") if isinstance(properties, dict) else None
    if not isinstance(state, str):
        return None
    return _TERMINAL.get(state.lower(), state)


def _operation_error(document: Mapping[str, object]) -> str:
    """The error an operation (or a resource) carries, as the service wrote it."""
    code, message = service_error(document)
    if not message:
        properties = document.get("properties")
        if isinstance(properties, dict):
            code, message = service_error({"error": properties.get("error")})
    text = f"{code}: {message}" if code else message
    return MASKER.mask(text)[:_EXCERPT] or "the service gave no reason"
