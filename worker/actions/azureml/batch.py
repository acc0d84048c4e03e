"""The ``azureml_batch_endpoint`` action: invoke a batch endpoint (a pipeline component or a model deployment).

The endpoint's scoring URI is read from ARM once per workspace and endpoint (``GET
.../batchEndpoints/{endpoint}``); the job is posted there with a token for Azure ML's audience, the
deployment chosen by the ``azureml-model-deployment`` header (else the endpoint's default), and the
action's idempotency key as the ``repeatability_request-id`` (so a retry the service has already
taken is not a second job). What pipeline published endpoints did in SDK v1.
"""

from __future__ import annotations

from typing import Annotated, Final

import structlog
from pydantic import AfterValidator, Field

from worker.actions.azureml.arm import ArmExecutor
from worker.actions.azureml.inputs import OutputPort, Port, batch_inputs, batch_outputs, bind, render
from worker.actions.azureml.workspace import Workspace, check_endpoint_name
from worker.actions.base import ActionParams, PlannedAction
from worker.actions.clients import Clients
from worker.actions.templates import Template, constant, context_of
from worker.errors import RenderError, TargetRejected
from worker.settings import insecure_url

log = structlog.get_logger("worker.actions")

_SCORING: Final = "scoringUri"


def check_workspace(template: Template) -> Template:
    """A workspace written without templates is checked when the rules load."""
    fixed = constant(template)
    if fixed is not None:
        Workspace.parse(fixed)
    return template


def check_name(template: Template | None) -> Template | None:
    """An endpoint's or deployment's name written without templates is checked when the rules load; one
    that starts with text, that its first character is a letter."""
    if template is None:
        return None
    fixed = constant(template)
    if fixed is not None:
        check_endpoint_name(fixed, "name")
    elif not template.source.startswith("{") and not template.source[:1].isalpha():
        raise ValueError(f"{template.source!r}: a name starts with a letter")
    return template


#: A workspace's ARM id, and an endpoint's or deployment's name, as templates: checked when the rules
#: load when written without templates.
WorkspaceTemplate = Annotated[Template, AfterValidator(check_workspace)]
NameTemplate = Annotated[Template, AfterValidator(check_name)]


class AzureMLBatchEndpointParams(ActionParams):
    #: The workspace's ARM id: ``{{ event.topic }}`` is the workspace the event came from.
    workspace: WorkspaceTemplate
    endpoint: NameTemplate
    #: The deployment to run; the endpoint's default when unset.
    deployment: NameTemplate | None = None
    #: The experiment its job is filed under (pipeline component deployments).
    experiment: Template | None = None
    inputs: dict[str, Port] = Field(default_factory=dict)
    outputs: dict[str, OutputPort] = Field(default_factory=dict)


def workspace_of(template: Template, context: dict[str, object]) -> Workspace:
    text = template.render(context)
    try:
        return Workspace.parse(text)
    except ValueError as exc:
        raise RenderError(f"workspace: {exc}") from None


def name_of(template: Template, context: dict[str, object], what: str) -> str:
    try:
        return check_endpoint_name(template.render(context).strip(), what)
    except ValueError as exc:
        raise RenderError(str(exc)) from None


class AzureMLBatchEndpointExecutor(ArmExecutor[AzureMLBatchEndpointParams]):
    def __init__(self, params: AzureMLBatchEndpointParams, clients: Clients) -> None:
        super().__init__(params, clients)
        #: Scoring URIs by (workspace, endpoint), read from ARM once.
        self._scoring: dict[tuple[str, str], str] = {}

    async def execute(self, action: PlannedAction) -> None:
        params, context = self._params, context_of(action)
        workspace = workspace_of(params.workspace, context)
        endpoint = name_of(params.endpoint, context, "endpoint")
        deployment = name_of(params.deployment, context, "deployment") if params.deployment is not None else None
        inputs = await bind(self._arm, action, workspace, render(params.inputs, context))
        outputs = await bind(self._arm, action, workspace, render(params.outputs, context))
        job: dict[str, object] = {"inputData": batch_inputs(inputs)}
        if outputs:
            job["outputData"] = batch_outputs(outputs)
        if params.experiment is not None:
            job["properties"] = {"experimentName": params.experiment.render(context)}
        headers = {"repeatability_request-id": action.request_id}
        if deployment is not None:
            headers["azureml-model-deployment"] = deployment
        what = f"the batch endpoint {endpoint!r}"
        scoring = await self._scoring_uri(action, workspace, endpoint, what)
        _, created = await self._arm.call(
            action, "POST", scoring, what, {"properties": job}, scope=self._arm.azure.azureml_scope, headers=headers
        )
        properties = created.get("properties")
        studio = None
        if isinstance(properties, dict):
            links = properties.get("interactionEndpoints")
            studio = links.get("Studio", {}).get("endpoint") if isinstance(links, dict) else None
        log.info(
            "azureml.batch_job",
            rule=action.rule,
            event_id=action.event.id,
            endpoint=endpoint,
            deployment=deployment,
            job=created.get("name"),
            status=properties.get("status") if isinstance(properties, dict) else None,
            studio=studio,
            idempotency_key=action.idempotency_key,
        )

    async def _scoring_uri(self, action: PlannedAction, workspace: Workspace, endpoint: str, what: str) -> str:
        key = (workspace.id.lower(), endpoint.lower())
        found = self._scoring.get(key)
        if found is None:
            resource = await self._arm.get(action, workspace.child("batchEndpoints", endpoint), what)
            properties = resource.get("properties")
            uri = properties.get(_SCORING) if isinstance(properties, dict) else None
            if not isinstance(uri, str) or not uri:
                raise TargetRejected(f"{what}: ARM reports no scoring URI for it (is it a batch endpoint?)")
            problem = insecure_url(uri)
            if problem is not None:
                raise TargetRejected(f"{what}: its scoring URI: {problem}")
            found = self._scoring[key] = uri
        return found
