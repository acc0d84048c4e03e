"""The ``azure_devops_pipeline`` action: run an Azure DevOps pipeline.

``POST {base}/{organization}/{project}/_apis/pipelines/{id}/runs?api-version=7.1`` with
``{"resources": {"repositories": {"self": {"refName": ...}}}, "templateParameters": {...}}``,
authenticated with a personal access token or, without one, an Azure AD token for Azure DevOps.
"""

from __future__ import annotations

import base64
from urllib.parse import quote

from pydantic import Field

from worker.actions.base import ActionParams, PlannedAction
from worker.actions.clients import Clients, HttpRequest
from worker.actions.http import HttpExecutor, Url, json_request, origin, render_values
from worker.actions.secrets import Secret
from worker.actions.templates import JsonTemplate, Template, context_of

#: Azure DevOps' application id: the resource of its Azure AD tokens.
DEVOPS_SCOPE = "499b84ac-1321-427f-aa17-267ca6975798/.default"


class AzureDevOpsPipelineParams(ActionParams):
    organization: str
    project: str
    pipeline_id: int
    #: The branch to run (``refs/heads/main``; a template); default: the pipeline's.
    ref: Template | None = None
    #: Runtime parameters: JSON templates by name.
    template_parameters: dict[str, JsonTemplate] = Field(default_factory=dict)
    #: A personal access token (``${env:AZURE_DEVOPS_PAT}``); without one, Azure AD.
    token: Secret | None = None
    base_url: Url = "https://dev.azure.com"
    scope: str = DEVOPS_SCOPE
    api_version: str = "7.1"


class AzureDevOpsPipelineExecutor(HttpExecutor):
    def __init__(self, params: AzureDevOpsPipelineParams, clients: Clients) -> None:
        super().__init__(clients.http, origin(params.base_url))
        self._params = params
        path = "/".join(quote(part, safe="") for part in (params.organization, params.project))
        self._url = (
            f"{params.base_url.rstrip('/')}/{path}/_apis/pipelines/{params.pipeline_id}/runs"
            f"?api-version={quote(params.api_version)}"
        )
        self._tokens = clients.tokens

    async def request(self, action: PlannedAction) -> HttpRequest:
        params, context = self._params, context_of(action)
        body: dict[str, object] = {"templateParameters": render_values(params.template_parameters, context)}
        if params.ref is not None:
            body["resources"] = {"repositories": {"self": {"refName": params.ref.render(context)}}}
        if params.token is not None:
            basic = base64.b64encode(f":{params.token.value}".encode()).decode("ascii")
            authorization = f"Basic {basic}"
        else:
            authorization = f"Bearer {await self._tokens.token(params.scope)}"
        return json_request(action, "POST", self._url, body, {"Authorization": authorization})
