"""What an action is: its validated parameters, its place in a rule, and the executor interface."""

from __future__ import annotations

import enum
import hashlib
import uuid
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from worker.events import Event


class ActionFate(enum.StrEnum):
    """How a planned action ended."""

    DONE = "done"
    DEAD_LETTERED = "dead_lettered"
    PLANNED = "planned"  # a dry run: the action would have run


class RetryParams(BaseModel):
    """A rule's own retry policy for one action; what it leaves out comes from the type's default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    attempts: int | None = Field(default=None, ge=1, le=100)
    first_delay: float | None = Field(default=None, ge=0)
    max_delay: float | None = Field(default=None, ge=0)


class ActionParams(BaseModel):
    """Base of every action type's parameters: frozen, unknown fields rejected.

    ``retry`` and ``timeout`` (seconds per attempt) are common to every type; unset, the type's
    defaults apply.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    retry: RetryParams | None = None
    timeout: float | None = Field(default=None, gt=0)


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


class Memo(Protocol):
    """What a rule that remembers acts on (:mod:`worker.core.memos`): an expectation that expired, or a
    group's notification."""

    @property
    def id(self) -> str:
        """Stable across restarts: what the action's idempotency key is made from."""

    @property
    def kind(self) -> str:
        """``expiry`` or ``group``."""

    @property
    def late(self) -> bool: ...

    def template_context(self) -> dict[str, object]:
        """The names it adds to a template's context (``expectation``, or ``group`` and ``events``)."""

    def record(self) -> dict[str, object]:
        """The fields it adds to a ``file`` action's line."""


@dataclass(frozen=True, slots=True)
class PlannedAction:
    """An action a matched rule asks for, on one event."""

    rule: str
    spec: ActionSpec
    event: Event
    #: Set when the event arrived after a later one of its subject had been processed.
    late: bool = False
    #: For a rule that remembers: the expiry or group notification it acts on (``event`` is its event).
    memo: Memo | None = None

    @property
    def idempotency_key(self) -> str:
        memo = self.memo
        return idempotency_key(self.event.id if memo is None else memo.id, self.rule, self.spec.index)

    @property
    def request_id(self) -> str:
        """The idempotency key spelled as a UUID, for services that take one (``x-ms-client-request-id``)."""
        return str(uuid.UUID(self.idempotency_key))


class Executor(Protocol):
    """Executes planned actions of one action entry. Raises ActionError on failure."""

    #: What a circuit breaker and a concurrency limit are kept for: the remote service the action
    #: talks to (an HTTP origin, an SMTP server, an Event Hub).
    target: str

    async def execute(self, action: PlannedAction) -> None: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class ImmediateExecutor(Executor, Protocol):
    """An executor whose actions complete synchronously, with no I/O that can wait or fail (``log``).

    The runner calls :meth:`execute_now` in place of an attempt: no task, timeout, retry or breaker,
    which would cost more than the action. It must not raise.
    """

    def execute_now(self, action: PlannedAction) -> None: ...
