"""What an action is: its validated parameters, its place in a rule, and the executor interface."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from worker.events import Event


class ActionParams(BaseModel):
    """Base of every action type's parameters: frozen, unknown fields rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """One entry of a rule's ``actions`` list, validated against its action type."""

    type: str
    index: int
    params: ActionParams


def idempotency_key(event_id: str, rule: str, action_index: int) -> str:
    """A key stable for (event id, rule, action index): the same on every retry and restart."""
    digest = hashlib.sha256(f"{event_id}\x1f{rule}\x1f{action_index}".encode()).hexdigest()
    return digest[:32]


@dataclass(frozen=True, slots=True)
class PlannedAction:
    """An action a matched rule asks for, on one event."""

    rule: str
    spec: ActionSpec
    event: Event
    #: Set when the event arrived after a later one of its subject had been processed.
    late: bool = False

    @property
    def idempotency_key(self) -> str:
        return idempotency_key(self.event.id, self.rule, self.spec.index)


class Executor(Protocol):
    """Executes planned actions of one action type. Raises ActionError on failure."""

    async def execute(self, action: PlannedAction) -> None: ...

    async def aclose(self) -> None: ...
