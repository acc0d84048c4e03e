"""Links to Azure ML studio from an event: the run, the model version, the endpoint. Pure.

Studio takes the workspace as ``wsid`` (its ARM id, as azure-ai-ml writes it: ``/subscriptions/S/
resourcegroups/G/workspaces/W``) and the asset in its path: ``/runs/{run id}``,
``/model/{name}:{version}/details``, ``/endpoints/realtime/{name}/detail``. The workspace is the
event's topic; the asset, its subject.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

from worker.actions.azureml.workspace import NotAWorkspace, Workspace

_RUN: Final = re.compile(r"experiments/[^/]+/runs/(?P<run>[^/]+)")
_DRIFT_RUN: Final = re.compile(r"datadrift/[^/]+/run/(?P<run>[^/]+)")
_MODEL: Final = re.compile(r"models/(?P<name>[^/:]+):(?P<version>[^/]+)")
_ENDPOINT: Final = re.compile(r"endpoints/(?P<name>[^/]+)")


def workspace_of(topic: str | None) -> Workspace | None:
    """The workspace an event's topic names; None for a topic that is no Azure ML workspace."""
    try:
        return Workspace.parse(topic or "")
    except NotAWorkspace:
        return None


def wsid(workspace: Workspace) -> str:
    """The workspace as studio's links name it."""
    return (
        f"/subscriptions/{workspace.subscription}/resourcegroups/{workspace.resource_group}/workspaces/{workspace.name}"
    )


@dataclass(frozen=True, slots=True)
class Link:
    """A button: what it opens, and where."""

    label: str
    url: str


def studio_link(host: str, topic: str | None, subject: str | None) -> Link | None:
    """The studio page of what ``subject`` names in the workspace ``topic`` (the workspace's own page
    for a subject it does not know); None for a topic that is no Azure ML workspace."""
    workspace = workspace_of(topic)
    if workspace is None:
        return None
    subject = (subject or "").strip("/")
    query = "?wsid=" + quote(wsid(workspace), safe="/")
    base = host.rstrip("/")
    if found := (_RUN.fullmatch(subject) or _DRIFT_RUN.fullmatch(subject)):
        return Link("Open the run in Azure ML studio", f"{base}/runs/{_segment(found['run'])}{query}")
    if found := _MODEL.fullmatch(subject):
        path = f"/model/{_segment(found['name'])}:{_segment(found['version'])}/details"
        return Link("Open the model in Azure ML studio", base + path + query)
    if found := _ENDPOINT.fullmatch(subject):
        return Link(
            "Open the endpoint in Azure ML studio", f"{base}/endpoints/realtime/{_segment(found['name'])}/detail{query}"
        )
    return Link("Open the workspace in Azure ML studio", f"{base}/home{query}")


def _segment(text: str) -> str:
    return quote(text, safe="")
