"""Azure ML workspaces and what lives in them, by ARM id: parsed, checked, and built. Pure.

A workspace is given as its ARM id (``/subscriptions/SUB/resourceGroups/RG/providers/
Microsoft.MachineLearningServices/workspaces/NAME``), which is what an Azure ML event's ``topic`` is:
``workspace: "{{ event.topic }}"`` acts on the workspace the event came from. Assets are named as the
Azure ML CLI names them: ``azureml:NAME:VERSION``, ``azureml:NAME@latest``, or their ARM id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

_PROVIDER: Final = "Microsoft.MachineLearningServices"
_WORKSPACE: Final = re.compile(
    r"/subscriptions/(?P<subscription>[^/]+)/resourceGroups/(?P<group>[^/]+)"
    r"/providers/Microsoft\.MachineLearningServices/workspaces/(?P<name>[^/]+)",
    re.IGNORECASE,
)
#: Online and batch endpoints and deployments: 3 to 32 letters, digits and hyphens, starting with a
#: letter and not ending with a hyphen (the service's rule, as azure-ai-ml checks it).
ENDPOINT_NAME: Final = re.compile(r"[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?")
#: Job names: ARM's rule for them.
JOB_NAME: Final = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_-]{0,254}")
#: An asset reference: ``azureml:NAME:VERSION`` or ``azureml:NAME@latest`` (``azureml:`` optional).
_ASSET: Final = re.compile(r"(?:azureml:)?(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)(?::(?P<version>[^:@/]+)|@latest)")


class NotAWorkspace(ValueError):
    """A text that is not a workspace's ARM id, or a name the service refuses."""


@dataclass(frozen=True, slots=True)
class Workspace:
    """One Azure ML workspace, by its place in Azure Resource Manager."""

    subscription: str
    resource_group: str
    name: str

    @classmethod
    def parse(cls, text: str) -> Workspace:
        """From its ARM id (a trailing slash, and what follows the workspace's name, such as an event's
        subject, are refused: the id is the workspace's alone)."""
        found = _WORKSPACE.fullmatch(text.strip().rstrip("/"))
        if found is None:
            raise NotAWorkspace(
                f"{text!r} is not an Azure ML workspace's ARM id (/subscriptions/SUBSCRIPTION/resourceGroups/GROUP/"
                f"providers/{_PROVIDER}/workspaces/NAME; an event's topic is one)"
            )
        return cls(found["subscription"], found["group"], found["name"])

    @property
    def id(self) -> str:
        return (
            f"/subscriptions/{quote(self.subscription, safe='')}/resourceGroups/{quote(self.resource_group, safe='')}"
            f"/providers/{_PROVIDER}/workspaces/{quote(self.name, safe='')}"
        )

    def child(self, *segments: str) -> str:
        """The ARM id of a resource inside the workspace (``child("onlineEndpoints", "fraud")``)."""
        return self.id + "".join("/" + quote(segment, safe="") for segment in segments)

    @property
    def studio(self) -> str:
        """The ``wsid`` Azure ML studio's links take."""
        return self.id


@dataclass(frozen=True, slots=True)
class AssetRef:
    """An asset of the workspace (a data asset, a model, a component, an environment, a code snapshot):
    by name and version, by name and ``@latest``, or by ARM id."""

    name: str | None
    version: str | None
    #: Given whole: an ARM id (or another URI the service takes as it is).
    id: str | None = None

    @property
    def latest(self) -> bool:
        return self.id is None and self.version is None

    def resolve(self, workspace: Workspace, kind: str, latest_version: str | None = None) -> str:
        """The ARM id, ``kind`` being the collection (``data``, ``models``, ``components``...)."""
        if self.id is not None:
            return self.id
        version = self.version or latest_version
        if self.name is None or version is None:
            raise ValueError(f"asset {self!r}: its version is unknown")
        return workspace.child(kind, self.name, "versions", version)

    def __str__(self) -> str:
        if self.id is not None:
            return self.id
        return f"azureml:{self.name}" + (f":{self.version}" if self.version else "@latest")


def asset(text: str) -> AssetRef:
    """``azureml:NAME:VERSION``, ``azureml:NAME@latest`` (``azureml:`` may be left out), or an ARM id."""
    text = text.strip()
    if text.startswith("/subscriptions/"):
        return AssetRef(None, None, text)
    found = _ASSET.fullmatch(text)
    if found is None:
        raise ValueError(f"{text!r} is not azureml:NAME:VERSION, azureml:NAME@latest or an ARM id")
    return AssetRef(found["name"], found["version"])


def check_endpoint_name(name: str, what: str = "name") -> str:
    """``name`` if the service takes it for an endpoint or deployment, else NotAWorkspace naming the rule."""
    if not 3 <= len(name) <= 32 or ENDPOINT_NAME.fullmatch(name) is None:
        raise NotAWorkspace(
            f"{what} {name!r}: 3 to 32 letters, digits and hyphens, starting with a letter and not ending with a hyphen"
        )
    return name


def job_name(rule: str, idempotency_key: str) -> str:
    """A job's name made from its action's idempotency key: a retry, a re-delivery or a restart submits the
    same name, which the service holds once. The rule's name leads, so the studio's list reads well."""
    slug = re.sub(r"[^a-z0-9_-]+", "-", rule.lower()).strip("-_")[:40] or "job"
    return f"{slug}-{idempotency_key}"
