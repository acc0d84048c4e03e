"""What an action would do, shown instead of done: its parameters rendered for one planned action.

A dry run executes nothing; a backtest report still wants to show what each action would have sent
(a mail's subject, a webhook's body). :func:`render_params` renders every parameter of an action's
spec the way its executor would: a text template to its string, a JSON template to its JSON value,
nested models and collections member by member. Secrets are never shown, not even the placeholders
of a dry run; a template that fails on the event shows the error in the parameter's place (the
executor would dead-letter the action with it) instead of raising. Parameters left unset whose
default is ``None`` or empty (``retry``, ``timeout``, no ``headers``) are left out. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from enum import Enum
from pathlib import PurePath
from typing import Final, Protocol, runtime_checkable

from pydantic import BaseModel

from worker.actions.base import PlannedAction
from worker.actions.secrets import Secret
from worker.actions.templates import Context, JsonTemplate, Template, context_of
from worker.errors import ActionError, RenderError
from worker.masking import MASK
from worker.settings import AZURE_CLOUDS

#: What a secret parameter shows.
HIDDEN: Final = MASK


@runtime_checkable
class Previewable(Protocol):
    """A parameter that shows itself: what it renders to for one event (a job's input: its kind and value)."""

    def preview(self, context: Context) -> object: ...


@runtime_checkable
class ShowsMessage(Protocol):
    """Parameters that make a whole message (a Teams card, a Slack message): shown as it would be sent."""

    def message_preview(self, action: PlannedAction, studio: str) -> object: ...


def render_params(action: PlannedAction, studio: str = AZURE_CLOUDS["AzureCloud"].studio) -> dict[str, object]:
    """Every parameter of ``action``'s spec, rendered for it: JSON-ready data; for an action that makes
    a whole message, that message too (``message``; ``studio``: where its links go)."""
    params = action.spec.params
    out = _model(params, context_of(action))
    if isinstance(params, ShowsMessage):
        try:
            out["message"] = params.message_preview(action, studio)
        except ActionError as exc:  # a template failing, a message over its limits: the action would fail so
            out["message"] = {"error": str(exc)}
    return out


def _model(model: BaseModel, context: Context) -> dict[str, object]:
    given = model.model_fields_set
    out: dict[str, object] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if name not in given and (value is None or (isinstance(value, dict | list) and not value)):
            continue
        out[name] = _value(value, context)
    return out


def _value(value: object, context: Context) -> object:
    if isinstance(value, Secret):
        return HIDDEN
    if isinstance(value, Template | JsonTemplate):
        try:
            return value.render(context)
        except RenderError as exc:
            return {"error": str(exc)}
    if isinstance(value, BaseModel):
        return _model(value, context)
    if isinstance(value, Previewable):
        try:
            return value.preview(context)
        except RenderError as exc:
            return {"error": str(exc)}
    if isinstance(value, Mapping):
        return {_key(key, context): _value(item, context) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_value(item, context) for item in value]
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Decimal):
        return float(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _key(key: object, context: Context) -> str:
    """A mapping's key as shown: a template's (a deployment's name in a traffic map) rendered."""
    if isinstance(key, Template):
        try:
            return key.render(context)
        except RenderError as exc:
            return f"(error: {exc})"
    return str(key)
