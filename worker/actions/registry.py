"""The registry of action types: the rules loader validates ``actions`` entries against it, so a
new action type is added by registering it, without touching the rules engine."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from worker.actions.base import ActionParams, Executor
from worker.actions.retry import RetryPolicy
from worker.actions.services import Services


@dataclass(frozen=True, slots=True)
class ActionType:
    name: str
    params: type[ActionParams]
    #: Builds the executor for one action entry from its validated parameters and the shared clients.
    executor: Callable[[Any, Services], Executor]
    summary: str
    #: The retry policy of actions of this type whose rule sets none.
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: Seconds one attempt may take.
    timeout: float = 30.0


_TYPES: dict[str, ActionType] = {}


def register(action_type: ActionType) -> ActionType:
    if action_type.name in _TYPES:
        raise ValueError(f"action type {action_type.name!r} is registered twice")
    _TYPES[action_type.name] = action_type
    return action_type


def action_types() -> Mapping[str, ActionType]:
    """Every registered action type, by name."""
    return _TYPES
