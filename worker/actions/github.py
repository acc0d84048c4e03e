"""The ``github_workflow`` action: start a GitHub Actions workflow (``workflow_dispatch``).

``POST {api}/repos/{owner}/{repo}/actions/workflows/{workflow}/dispatches`` with
``{"ref": ..., "inputs": {...}}``; GitHub answers 204.
"""

from __future__ import annotations

from urllib.parse import quote

from pydantic import Field

from worker.actions.base import ActionParams, PlannedAction
from worker.actions.clients import Clients, HttpRequest
from worker.actions.http import HttpExecutor, Url, json_request, origin, render_values
from worker.actions.secrets import Secret
from worker.actions.templates import JsonTemplate, Template, context_of


class GitHubWorkflowParams(ActionParams):
    owner: str
    repo: str
    #: The workflow's file name (``deploy.yml``) or id.
    workflow: str
    #: The branch or tag to run on (a template).
    ref: Template = Template.compile("main")
    #: The workflow's inputs: JSON templates by name (the workflow must declare them).
    inputs: dict[str, JsonTemplate] = Field(default_factory=dict)
    #: A token allowed to dispatch workflows (``actions: write``): ``${env:GITHUB_TOKEN}``.
    token: Secret
    api_url: Url = "https://api.github.com"


class GitHubWorkflowExecutor(HttpExecutor):
    def __init__(self, params: GitHubWorkflowParams, clients: Clients) -> None:
        super().__init__(clients.http, origin(params.api_url))
        self._params = params
        path = "/".join(quote(part, safe="") for part in (params.owner, params.repo))
        self._url = f"{params.api_url.rstrip('/')}/repos/{path}/actions/workflows/{quote(params.workflow, safe='')}"
        self._url += "/dispatches"

    async def request(self, action: PlannedAction) -> HttpRequest:
        params, context = self._params, context_of(action)
        body = {"ref": params.ref.render(context), "inputs": render_values(params.inputs, context)}
        headers = {
            "Authorization": f"Bearer {params.token.value}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }
        return json_request(action, "POST", self._url, body, headers)
