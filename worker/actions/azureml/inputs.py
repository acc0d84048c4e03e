"""A job's inputs and outputs, as rules write them and as Azure ML takes them.

A rule writes each input as its kind and its value, a template: ``{literal: "{{ data.runId }}"}``,
``{uri_folder: "azureml://datastores/workspaceblobstore/paths/training/"}``, ``{uri_file:
"azureml:reference-data:3"}``. A literal renders to a string, number or boolean; a URI is passed as it
is, except an asset (``azureml:NAME:VERSION``, ``azureml:NAME@latest``), which becomes its ARM id, as
azure-ai-ml does. A batch endpoint takes them in its data plane's spelling (``UriFolder``), a job in
ARM's (``uri_folder``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from worker.actions.azureml.arm import Arm
from worker.actions.azureml.workspace import AssetRef, Workspace, asset
from worker.actions.base import PlannedAction
from worker.actions.templates import Context, JsonTemplate, Template
from worker.errors import RenderError

#: Every kind an input may be: its spelling in a batch endpoint's data plane, and the asset collection an
#: ``azureml:`` reference of it names (None: a literal).
INPUT_KINDS: Final[dict[str, tuple[str, str | None]]] = {
    "literal": ("Literal", None),
    "uri_file": ("UriFile", "data"),
    "uri_folder": ("UriFolder", "data"),
    "mltable": ("MLTable", "data"),
    "custom_model": ("CustomModel", "models"),
    "mlflow_model": ("MLFlowModel", "models"),
    "triton_model": ("TritonModel", "models"),
}
#: Every kind an output may be (a literal is not one).
OUTPUT_KINDS: Final = {kind: spelled for kind, spelled in INPUT_KINDS.items() if kind != "literal"}


@dataclass(frozen=True, slots=True)
class Port:
    """One input or output: its kind and its value's template."""

    kind: str
    value: JsonTemplate | Template

    KINDS: ClassVar[Mapping[str, tuple[str, str | None]]] = INPUT_KINDS
    NOUN: ClassVar[str] = "input"

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(cls._validate)

    @classmethod
    def _validate(cls, raw: object) -> Port:
        if isinstance(raw, Port):
            return raw
        kinds = cls.KINDS
        example = "{uri_folder: azureml://datastores/NAME/paths/PATH/}"
        if not isinstance(raw, dict) or len(raw) != 1:
            raise ValueError(f"expected one kind and its value, such as {example} (kinds: {', '.join(kinds)})")
        [(kind, value)] = raw.items()
        if kind not in kinds:
            raise ValueError(f"{kind!r} is not a kind of {cls.NOUN} (kinds: {', '.join(kinds)})")
        if kind == "literal":
            return cls(kind, JsonTemplate.compile(value))
        if not isinstance(value, str):
            raise ValueError(f"{kind}: expected a URI or an asset (a template), got {value!r}")  # noqa: TRY004 - pydantic reports ValueError
        return cls(kind, Template.compile(value))

    def preview(self, context: Context) -> object:
        """What a dry run shows of it: its kind and its value, rendered for the event."""
        return {self.kind: self.value.render(context)}


@dataclass(frozen=True, slots=True)
class OutputPort(Port):
    """An output: a URI or an asset to write to."""

    KINDS: ClassVar[Mapping[str, tuple[str, str | None]]] = OUTPUT_KINDS
    NOUN: ClassVar[str] = "output"


@dataclass(frozen=True, slots=True)
class Bound:
    """An input or output with its value rendered for one event, assets resolved to their ARM ids."""

    name: str
    kind: str
    value: object


def render(ports: Mapping[str, Port], context: Context) -> list[tuple[str, str, object]]:
    """Each port's name, kind and rendered value; a literal must be a string, number or boolean."""
    rendered = []
    for name, port in ports.items():
        value = port.value.render(context)
        if port.kind == "literal":
            if not isinstance(value, str | int | float | bool):
                raise RenderError(f"input {name!r}: a literal renders to a string, number or boolean, not {value!r}")
        elif not value:
            raise RenderError(f"{name!r}: the {port.kind} rendered empty")
        rendered.append((name, port.kind, value))
    return rendered


async def bind(
    arm: Arm, action: PlannedAction, workspace: Workspace, rendered: list[tuple[str, str, object]]
) -> list[Bound]:
    """Assets resolved to their ARM ids: ``NAME:VERSION`` at once, ``NAME@latest`` by asking ARM."""
    bound = []
    for name, kind, value in rendered:
        collection = INPUT_KINDS[kind][1]
        resolved = value
        if collection is not None and isinstance(value, str) and _is_asset(value):
            try:
                ref = asset(value)
            except ValueError as exc:
                raise RenderError(f"{name!r}: {exc}") from None
            resolved = await resolve(arm, action, workspace, ref, collection)
        bound.append(Bound(name, kind, resolved))
    return bound


def _is_asset(value: str) -> bool:
    """An asset reference (``azureml:NAME...``), not a datastore URI (``azureml://datastores/...``)."""
    text = value.strip()
    return text.startswith("azureml:") and not text.startswith("azureml://")


async def resolve(arm: Arm, action: PlannedAction, workspace: Workspace, ref: AssetRef, collection: str) -> str:
    """The ARM id of ``ref``, a ``collection`` asset of ``workspace`` (its latest version asked of ARM)."""
    latest = None
    if ref.latest:
        assert ref.name is not None  # noqa: S101 - an @latest reference has a name
        container = await arm.get(action, workspace.child(collection, ref.name), f"the asset {ref}")
        properties = container.get("properties")
        latest = properties.get("latestVersion") if isinstance(properties, dict) else None
        if not isinstance(latest, str | int):
            raise RenderError(f"the asset {ref}: ARM names no latest version")
        latest = str(latest)
    return ref.resolve(workspace, collection, latest)


def batch_inputs(bound: list[Bound]) -> dict[str, object]:
    """Inputs in a batch endpoint's spelling (its data plane)."""
    return {item.name: _batch(item) for item in bound}


def batch_outputs(bound: list[Bound]) -> dict[str, object]:
    return {item.name: {"jobOutputType": INPUT_KINDS[item.kind][0], "uri": item.value} for item in bound}


def _batch(item: Bound) -> dict[str, object]:
    spelled = INPUT_KINDS[item.kind][0]
    if item.kind == "literal":
        return {"jobInputType": spelled, "value": item.value}
    return {"jobInputType": spelled, "uri": item.value}


def job_inputs(bound: list[Bound]) -> dict[str, object]:
    """Inputs in ARM's job spelling; a literal's value as text, as azure-ai-ml sends it."""
    out: dict[str, object] = {}
    for item in bound:
        if item.kind == "literal":
            out[item.name] = {"jobInputType": "literal", "value": _text(item.value)}
        else:
            out[item.name] = {"jobInputType": item.kind, "uri": item.value}
    return out


def job_outputs(bound: list[Bound]) -> dict[str, object]:
    return {item.name: {"jobOutputType": item.kind, "uri": item.value} for item in bound}


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
