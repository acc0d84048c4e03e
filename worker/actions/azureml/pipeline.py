"""The ``azureml_pipeline`` action: submit a run of a published Azure ML pipeline endpoint.

``POST {endpoint}`` with ``{"ExperimentName": ..., "ParameterAssignments": {...}}`` and an Azure AD
token for ``https://ml.azure.com/.default``.
"""

from __future__ import annotations

from pydantic import Field

from worker.actions.base import ActionParams, PlannedAction
from worker.actions.clients import Clients, HttpRequest
from worker.actions.http import HttpExecutor, Url, json_request, origin, render_values
from worker.actions.templates import JsonTemplate, Template, context_of


class AzureMLPipelineParams(ActionParams):
    #: The published pipeline's (or pipeline endpoint's) REST endpoint URL.
    endpoint: Url
    #: The experiment the run is filed under (a template).
    experiment: Template
    #: Pipeline parameter assignments: JSON templates by parameter name.
    parameters: dict[str, JsonTemplate] = Field(default_factory=dict)
    scope: str = "https://ml.azure.com/.default"


class AzureMLPipelineExecutor(HttpExecutor):
    def __init__(self, params: AzureMLPipelineParams, clients: Clients) -> None:
        super().__init__(clients.http, origin(params.endpoint))
        self._params = params
        self._tokens = clients.tokens

    async def request(self, action: PlannedAction) -> HttpRequest:
        params, context = self._params, context_of(action)
        body = {
            "ExperimentName": params.experiment.render(context),
            "ParameterAssignments": render_values(params.parameters, context),
        }
        token = await self._tokens.token(params.scope)
        return json_request(action, "POST", params.endpoint, body, {"Authorization": f"Bearer {token}"})
