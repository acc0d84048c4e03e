"""The ``datafactory_pipeline`` action: create a Data Factory pipeline run through Azure Resource Manager.

``POST {arm}/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.DataFactory/factories/
{factory}/pipelines/{pipeline}/createRun?api-version=2018-06-01`` with the parameters as the JSON
body and an Azure AD token for ``{arm}/.default``.
"""

from __future__ import annotations

from urllib.parse import quote

from pydantic import Field

from worker.actions.base import ActionParams, PlannedAction
from worker.actions.clients import Clients, HttpRequest
from worker.actions.http import HttpExecutor, Url, json_request, origin, render_values
from worker.actions.templates import JsonTemplate, context_of


class DataFactoryPipelineParams(ActionParams):
    subscription: str
    resource_group: str
    factory: str
    pipeline: str
    #: Pipeline parameters: JSON templates by name.
    parameters: dict[str, JsonTemplate] = Field(default_factory=dict)
    #: Azure Resource Manager; another cloud's for sovereign clouds.
    arm_url: Url = "https://management.azure.com"
    #: Default: the ARM URL's ``/.default``.
    scope: str | None = None
    api_version: str = "2018-06-01"


def create_run_url(params: DataFactoryPipelineParams) -> str:
    segments = (
        f"subscriptions/{quote(params.subscription, safe='')}",
        f"resourceGroups/{quote(params.resource_group, safe='')}",
        f"providers/Microsoft.DataFactory/factories/{quote(params.factory, safe='')}",
        f"pipelines/{quote(params.pipeline, safe='')}/createRun",
    )
    return f"{params.arm_url.rstrip('/')}/{'/'.join(segments)}?api-version={quote(params.api_version)}"


class DataFactoryPipelineExecutor(HttpExecutor):
    def __init__(self, params: DataFactoryPipelineParams, clients: Clients) -> None:
        super().__init__(clients.http, origin(params.arm_url))
        self._params = params
        self._url = create_run_url(params)
        self._scope = params.scope or params.arm_url.rstrip("/") + "/.default"
        self._tokens = clients.tokens

    async def request(self, action: PlannedAction) -> HttpRequest:
        body = render_values(self._params.parameters, context_of(action))
        token = await self._tokens.token(self._scope)
        return json_request(action, "POST", self._url, body, {"Authorization": f"Bearer {token}"})
