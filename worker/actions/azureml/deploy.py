"""The ``azureml_deploy`` action: a registered model version deployed to a managed online endpoint.

Then the new deployment is given its traffic.

1. ``PUT .../onlineEndpoints/{endpoint}/deployments/{deployment}`` creates or updates the deployment
   (the model by ARM id, its instance type and count; code, scoring script and environment for a
   model that is not MLflow), and the long-running operation is followed to Succeeded, Failed or
   Canceled (:meth:`~worker.actions.azureml.arm.Arm.finish`). A failed one is permanent, with the
   service's error. The endpoint's location comes from the endpoint (``GET``, which also says it
   exists).
2. The endpoint's traffic is read and written back whole (the API takes no partial update): with
   ``traffic: N``, the deployment gets N percent and the others share the rest in their proportions;
   with a map, the map. ``mirror`` copies a share of live traffic to it. Nothing is written when the
   traffic already is what was asked.

Each step is idempotent: a retry, or a worker restarted in the middle (the event was not finished, so
its checkpoint did not pass it), puts the same deployment again and follows it to its end, and finds
the traffic already set or sets it. One deployment, never two, never none.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Self

import structlog
from pydantic import Field, field_validator, model_validator

from worker.actions.azureml.arm import ArmExecutor, Reply
from worker.actions.azureml.batch import NameTemplate, WorkspaceTemplate, check_name, name_of, workspace_of
from worker.actions.azureml.inputs import resolve
from worker.actions.azureml.workspace import asset
from worker.actions.base import ActionParams, PlannedAction
from worker.actions.templates import Template, constant, context_of
from worker.errors import RenderError, TargetRejected

log = structlog.get_logger("worker.actions")

#: Most of an endpoint's live traffic that may be mirrored (the service's limit).
MAX_MIRROR: Final = 50
#: The endpoint's properties a full write carries back, as azure-ai-ml writes them.
_ENDPOINT_PROPERTIES: Final = ("description", "authMode", "properties", "publicNetworkAccess")


class AzureMLDeployParams(ActionParams):
    #: The workspace's ARM id: ``{{ event.topic }}`` is the workspace the event came from.
    workspace: WorkspaceTemplate
    endpoint: NameTemplate
    #: The deployment's name: 3 to 32 letters, digits and hyphens, starting with a letter.
    deployment: NameTemplate
    #: ``azureml:NAME:VERSION`` (``azureml:{{ data.ModelName }}:{{ data.ModelVersion }}``), ``@latest``, or an ARM id.
    model: Template
    instance_type: Template
    instance_count: int = Field(default=1, ge=1)
    #: Percent of live traffic to the new deployment (the others share the rest in their proportions), or
    #: every deployment's percent (summing to 100); unset: the traffic is left as it is.
    traffic: int | dict[Template, int] | None = None
    #: Percent of live traffic mirrored to the new deployment.
    mirror: int = Field(default=0, ge=0, le=MAX_MIRROR)
    #: For a model that is not MLflow: its code (``azureml:NAME:VERSION`` or an ARM id), scoring script
    #: and environment.
    code: Template | None = None
    scoring_script: str | None = None
    environment: Template | None = None
    environment_variables: dict[str, Template] = Field(default_factory=dict)
    #: Seconds between polls of the deployment when the service does not say (``Retry-After``).
    poll_interval: float = Field(default=15.0, gt=0)

    @field_validator("model", "code", "environment")
    @classmethod
    def _asset(cls, value: Template | None) -> Template | None:
        fixed = constant(value) if value is not None else None
        if fixed is not None:
            asset(fixed)
        return value

    @field_validator("traffic")
    @classmethod
    def _traffic(cls, value: int | dict[Template, int] | None) -> int | dict[Template, int] | None:
        if isinstance(value, int) and not 0 <= value <= 100:
            raise ValueError(f"{value}: a percent, 0 to 100")
        if isinstance(value, dict):
            for name, percent in value.items():
                check_name(name)
                if not 0 <= percent <= 100:
                    raise ValueError(f"{name.source}: {percent} is not a percent, 0 to 100")
            total = sum(value.values())
            if total != 100:
                raise ValueError(f"the percents add up to {total}, not 100")
        return value

    @model_validator(mode="after")
    def _custom_model(self) -> Self:
        given = [self.code is not None, self.scoring_script is not None, self.environment is not None]
        if any(given) and not all(given):
            raise ValueError("a model that is not MLflow needs all of code, scoring_script and environment")
        return self


def shifted(current: Mapping[str, int], deployment: str, percent: int) -> dict[str, int]:
    """The traffic with ``percent`` to ``deployment`` and the rest shared by the others as they shared it
    (largest remainders, so the percents add up to 100). With no other deployment taking traffic, the
    new one takes it all: an endpoint's traffic adds up to 100."""
    others = {name.lower(): share for name, share in current.items() if name.lower() != deployment and share > 0}
    total = sum(others.values())
    if percent >= 100 or total == 0:
        return {deployment: 100}
    rest = 100 - percent
    exact = {name: share * rest / total for name, share in others.items()}
    floors = {name: int(value) for name, value in exact.items()}
    left = rest - sum(floors.values())
    for name in sorted(exact, key=lambda n: (floors[n] - exact[n], n))[:left]:
        floors[name] += 1
    out = {name: share for name, share in floors.items() if share > 0}
    if percent > 0:
        out[deployment] = percent
    return out


def endpoint_body(endpoint: Mapping[str, object], traffic: dict[str, int], mirror: dict[str, int]) -> dict[str, object]:
    """The endpoint as it is, with ``traffic`` and ``mirror``, in the shape a full write takes (what
    azure-ai-ml writes: its location, identity, tags, and the properties a client may set)."""
    properties = endpoint.get("properties")
    given = properties if isinstance(properties, dict) else {}
    body: dict[str, object] = {
        "location": endpoint.get("location"),
        "properties": {
            **{name: given[name] for name in _ENDPOINT_PROPERTIES if given.get(name) is not None},
            "traffic": traffic,
            "mirrorTraffic": mirror,
        },
        "tags": endpoint.get("tags") or {},
    }
    identity = endpoint.get("identity")
    if isinstance(identity, dict) and identity.get("type"):
        kept: dict[str, object] = {"type": identity["type"]}
        assigned = identity.get("userAssignedIdentities")
        if isinstance(assigned, dict) and assigned:
            kept["userAssignedIdentities"] = {key: {} for key in assigned}
        body["identity"] = kept
    return body


def _shares(value: object) -> dict[str, int]:
    return {str(k).lower(): int(v) for k, v in value.items() if isinstance(v, int)} if isinstance(value, dict) else {}


class AzureMLDeployExecutor(ArmExecutor[AzureMLDeployParams]):
    async def execute(self, action: PlannedAction) -> None:
        params, context, arm = self._params, context_of(action), self._arm
        workspace = workspace_of(params.workspace, context)
        endpoint = name_of(params.endpoint, context, "endpoint")
        deployment = name_of(params.deployment, context, "deployment")
        try:
            model_ref = asset(params.model.render(context))
        except ValueError as exc:
            raise RenderError(f"model: {exc}") from None
        model = await resolve(arm, action, workspace, model_ref, "models")
        endpoint_id = workspace.child("onlineEndpoints", endpoint)
        what_endpoint = f"the online endpoint {endpoint!r}"
        found = await arm.get(action, endpoint_id, what_endpoint)
        deployment_id = workspace.child("onlineEndpoints", endpoint, "deployments", deployment)
        what = f"the deployment {deployment!r} of {what_endpoint} (model {model_ref})"
        body = await self._deployment(action, found.get("location"), model, context)
        reply = await arm.put(action, deployment_id, body, what, accept=(409,))
        if reply.status == 409:  # an operation on it is under way (this one, before a restart): follow that
            reply = Reply(reply.status, {}, await arm.get(action, deployment_id, what))
        said = log.bind(
            rule=action.rule,
            event_id=action.event.id,
            endpoint=endpoint,
            deployment=deployment,
            model=str(model_ref),
            idempotency_key=action.idempotency_key,
        )
        said.info(
            "azureml.deploying", operation=reply.headers.get("azure-asyncoperation") or reply.headers.get("location")
        )
        await arm.finish(action, reply, deployment_id, what, interval=params.poll_interval)
        traffic = await self._route(action, endpoint_id, deployment, context, what_endpoint)
        said.info("azureml.deployed", traffic=traffic)

    async def _deployment(
        self, action: PlannedAction, location: object, model: str, context: dict[str, object]
    ) -> dict[str, object]:
        """The deployment's body, as azure-ai-ml writes it."""
        params = self._params
        properties: dict[str, object] = {
            "model": model,
            "properties": {},
            "environmentVariables": {k: v.render(context) for k, v in params.environment_variables.items()},
            "appInsightsEnabled": False,
            "instanceType": params.instance_type.render(context),
            "endpointComputeType": "Managed",
        }
        if params.code is not None and params.environment is not None:
            workspace = workspace_of(params.workspace, context)
            code = await resolve(self._arm, action, workspace, asset(params.code.render(context)), "codes")
            environment = await resolve(
                self._arm, action, workspace, asset(params.environment.render(context)), "environments"
            )
            properties["codeConfiguration"] = {"codeId": code, "scoringScript": params.scoring_script}
            properties["environmentId"] = environment
        return {
            "location": location,
            "properties": properties,
            "tags": {},
            "sku": {"name": "Default", "capacity": params.instance_count},
        }

    async def _route(
        self, action: PlannedAction, endpoint_id: str, deployment: str, context: dict[str, object], what: str
    ) -> dict[str, int] | None:
        """Set the endpoint's traffic as asked (a read, then a full write, followed to its end); the traffic."""
        params, arm = self._params, self._arm
        if params.traffic is None and params.mirror == 0:
            return None
        endpoint = await arm.get(action, endpoint_id, what)
        properties = endpoint.get("properties")
        given = properties if isinstance(properties, dict) else {}
        current, mirrored = _shares(given.get("traffic")), _shares(given.get("mirrorTraffic"))
        name = deployment.lower()
        if params.traffic is None:
            traffic = current
        elif isinstance(params.traffic, int):
            traffic = shifted(current, name, params.traffic)
        else:
            traffic = {}
            for template, percent in params.traffic.items():
                key = name_of(template, context, "deployment in traffic").lower()
                if percent > 0:
                    traffic[key] = traffic.get(key, 0) + percent
        mirror = {key: share for key, share in mirrored.items() if key != name}
        if params.mirror > 0:
            if traffic.get(name):
                raise TargetRejected(f"{what}: {deployment!r} cannot take live and mirrored traffic at once")
            mirror[name] = params.mirror
        if traffic == current and mirror == mirrored:
            return traffic
        reply = await arm.put(action, endpoint_id, endpoint_body(endpoint, traffic, mirror), f"{what} (its traffic)")
        await arm.finish(action, reply, endpoint_id, f"{what} (its traffic)", interval=params.poll_interval)
        return traffic
