"""The ``log`` action: write one structured log event per executed action."""

from __future__ import annotations

from typing import Literal

import structlog

from worker.actions.base import ActionParams, PlannedAction
from worker.actions.clients import Clients


class LogParams(ActionParams):
    #: A fixed message added to the log event.
    message: str | None = None
    level: Literal["debug", "info", "warning", "error"] = "info"


class LogExecutor:
    #: The log never fails for want of a target; one circuit serves every log action.
    target = "log"

    def __init__(self, params: LogParams, clients: Clients) -> None:
        self._params = params
        self._level = _LEVELS[params.level]
        # Bound once: the lazy proxy would rebuild the logger on every call. Written synchronously: a
        # log line costs less than the thread hop of structlog's async methods.
        self._log = structlog.get_logger("worker.actions").bind()

    async def execute(self, action: PlannedAction) -> None:
        self.execute_now(action)

    def execute_now(self, action: PlannedAction) -> None:
        event = action.event
        self._log.log(
            self._level,
            "action.log",
            message=self._params.message,
            rule=action.rule,
            action_index=action.spec.index,
            event_id=event.id,
            event_type=event.type,
            subject=event.subject,
            partition_id=event.position.partition_id,
            sequence_number=event.position.sequence_number,
            idempotency_key=action.idempotency_key,
            late=action.late,
        )

    async def aclose(self) -> None:
        return None


_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
