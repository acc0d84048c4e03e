"""The ``azureml_job`` action: submit a job from a registered pipeline or command component, through ARM.

The component's version is read from ARM (``azureml:NAME@latest`` asks which is the latest), and the
job is put as azure-ai-ml would build it from the component: a pipeline job carrying the component's
id and its jobs (with ``x-azureml-token``, a token for Azure ML's audience, as the service asks of
pipeline jobs), or a command job carrying the component's command, code and environment. The job's
name is made from the action's idempotency key, so a retry, a re-delivery or a restart that finds
"a job with this name already exists" has found its own job: done once, not an error.
"""

from __future__ import annotations

from typing import Final

import structlog
from pydantic import Field, field_validator

from worker.actions.azureml.arm import ArmExecutor, error_of
from worker.actions.azureml.batch import WorkspaceTemplate, workspace_of
from worker.actions.azureml.inputs import OutputPort, Port, bind, job_inputs, job_outputs, render, resolve
from worker.actions.azureml.workspace import Workspace, asset, job_name
from worker.actions.base import ActionParams, PlannedAction
from worker.actions.clients import HttpRequest
from worker.actions.templates import Template, constant, context_of
from worker.errors import RenderError, TargetRejected

log = structlog.get_logger("worker.actions")

#: What azure-ai-ml marks the parts of a job copied from a registered component with.
_SOURCE: Final = "REMOTE.WORKSPACE.COMPONENT"
#: The tags every job carries besides the rule's: what started it.
EVENT_TAG: Final = "triggered_by_event"
RULE_TAG: Final = "triggered_by_rule"


class AzureMLJobParams(ActionParams):
    #: The workspace's ARM id: ``{{ event.topic }}`` is the workspace the event came from.
    workspace: WorkspaceTemplate
    #: ``azureml:NAME:VERSION``, ``azureml:NAME@latest`` or the component's ARM id.
    component: Template
    #: The compute cluster the job runs on (its name, or ARM id); unset: serverless compute.
    compute: Template | None = None
    experiment: Template = Template.compile("Default")
    display_name: Template | None = None
    inputs: dict[str, Port] = Field(default_factory=dict)
    outputs: dict[str, OutputPort] = Field(default_factory=dict)
    tags: dict[str, Template] = Field(default_factory=dict)

    @field_validator("component")
    @classmethod
    def _component(cls, value: Template) -> Template:
        fixed = constant(value)
        if fixed is not None:
            asset(fixed)
        return value


def compute_id(workspace: Workspace, text: str) -> str:
    text = text.strip().removeprefix("azureml:")
    return text if text.startswith("/subscriptions/") else workspace.child("computes", text)


def _arm_id(reference: object) -> str | None:
    """An ``azureml:``-prefixed ARM id in a component's spec, as an ARM id."""
    return reference.removeprefix("azureml:") if isinstance(reference, str) else None


class AzureMLJobExecutor(ArmExecutor[AzureMLJobParams]):
    async def execute(self, action: PlannedAction) -> None:
        params, context, arm = self._params, context_of(action), self._arm
        workspace = workspace_of(params.workspace, context)
        try:
            ref = asset(params.component.render(context))
        except ValueError as exc:
            raise RenderError(f"component: {exc}") from None
        component_id = await resolve(arm, action, workspace, ref, "components")
        component = await arm.get(action, component_id, f"the component {ref}")
        properties = component.get("properties")
        spec = properties.get("componentSpec") if isinstance(properties, dict) else None
        if not isinstance(spec, dict):
            raise TargetRejected(f"the component {ref}: ARM returned no componentSpec")
        name = job_name(action.rule, action.idempotency_key)
        tags = {key: template.render(context) for key, template in params.tags.items()}
        tags |= {EVENT_TAG: action.event.id, RULE_TAG: action.rule}
        inputs = job_inputs(await bind(arm, action, workspace, render(params.inputs, context)))
        outputs = job_outputs(await bind(arm, action, workspace, render(params.outputs, context)))
        compute = compute_id(workspace, params.compute.render(context)) if params.compute is not None else None
        shown = params.display_name.render(context) if params.display_name is not None else None
        common: dict[str, object] = {
            "properties": {},
            "experimentName": params.experiment.render(context),
            "isArchived": False,
            "inputs": inputs,
            "outputs": outputs,
            "tags": tags,
        }
        kind = spec.get("type")
        headers: dict[str, str] = {}
        if kind == "pipeline":
            job = pipeline_job(common, component_id, spec, compute, shown)
            headers["x-azureml-token"] = await arm.token(arm.azure.azureml_scope)
        elif kind == "command":
            job = command_job(common, spec, compute, shown or name)
        else:
            raise TargetRejected(f"the component {ref} is a {kind!r} component: jobs run pipeline or command ones")
        what = f"the job {name!r} (component {ref})"
        url = arm.url(workspace.child("jobs", name))
        response, document = await arm.call(
            action, "PUT", url, what, {"properties": job}, headers=headers, accept=(400, 409)
        )
        existed = response.status in (400, 409)
        if existed and not _already_exists(document):
            raise error_of(HttpRequest("PUT", url), response, what)
        if existed:  # a retry, a re-delivery or a restart: the job is the one this action submitted
            document = await arm.get(action, workspace.child("jobs", name), what)
        properties = document.get("properties")
        services = properties.get("services") if isinstance(properties, dict) else None
        studio = services.get("Studio") if isinstance(services, dict) else None
        log.info(
            "azureml.job",
            rule=action.rule,
            event_id=action.event.id,
            job=name,
            component=str(ref),
            submitted=not existed,
            status=properties.get("status") if isinstance(properties, dict) else None,
            studio=studio.get("endpoint") if isinstance(studio, dict) else None,
            idempotency_key=action.idempotency_key,
        )


def pipeline_job(
    common: dict[str, object], component_id: str, spec: dict[str, object], compute: str | None, shown: str | None
) -> dict[str, object]:
    """A pipeline job running a registered pipeline component, as azure-ai-ml builds it: the component's
    id and a copy of its jobs."""
    jobs = spec.get("jobs")
    settings: dict[str, object] = {"_source": _SOURCE}
    if compute is not None:
        settings["default_compute"] = compute
    return {
        **common,
        "jobType": "Pipeline",
        "componentId": component_id,
        "displayName": shown or spec.get("display_name") or spec.get("name"),
        "jobs": {key: {**node, "_source": _SOURCE} for key, node in jobs.items() if isinstance(node, dict)}
        if isinstance(jobs, dict)
        else {},
        "settings": settings,
    }


def command_job(
    common: dict[str, object], spec: dict[str, object], compute: str | None, shown: str
) -> dict[str, object]:
    """A command job running a registered command component, as azure-ai-ml builds it: the component's
    command, code and environment."""
    job = {
        **common,
        "jobType": "Command",
        "command": spec.get("command"),
        "codeId": _arm_id(spec.get("code")),
        "environmentId": _arm_id(spec.get("environment")),
        "environmentVariables": {},
        "displayName": shown,
    }
    if compute is not None:
        job["computeId"] = compute
    return job


def _already_exists(document: dict[str, object]) -> bool:
    """Whether the service refused the job as one it already has (a second PUT of the same name)."""
    error = document.get("error")
    if not isinstance(error, dict):
        return False
    inner = error.get("innererror") or error.get("innerError")
    codes = {error.get("code"), inner.get("code") if isinstance(inner, dict) else None}
    message = str(error.get("message", "")).lower()
    return "already exists" in message or bool(codes & {"Immutable", "JobPropertyImmutable", "Conflict"})
