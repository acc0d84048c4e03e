"""Running planned actions: one executor per rule action, retries, and the dead-letter lane.

An action either completes or, once its attempts are spent (or at once on a permanent error), is
written to the dead-letter lane with everything needed to re-drive it. Only then does its event
count as finished. A dead letter that cannot be written is fatal: the error propagates, and the
event is never reported finished.
"""

from __future__ import annotations

import asyncio
import base64
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import orjson
import structlog

from worker.accounting import ActionFate
from worker.actions.base import ActionSpec, Executor, PlannedAction
from worker.actions.registry import ActionType, action_types
from worker.errors import ActionError, WorkerError

log = structlog.get_logger("worker.actions")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Attempts per action, and the exponential backoff (with full jitter) between them."""

    attempts: int = 3
    first_delay: float = 0.5
    max_delay: float = 30.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        ceiling = min(self.max_delay, self.first_delay * 2 ** (attempt - 1))
        return rng.uniform(0, ceiling)


@dataclass(frozen=True, slots=True)
class Attempt:
    at: datetime
    error: str
    transient: bool


class DeadLetterLane(Protocol):
    """Where actions that could not be completed are kept, to be re-driven later."""

    async def write(self, action: PlannedAction, attempts: tuple[Attempt, ...]) -> str:
        """Keep the action; return where it went. Raises OSError (or a WorkerError) when it cannot."""
        ...


def dead_letter_record(action: PlannedAction, attempts: tuple[Attempt, ...]) -> dict[str, object]:
    """A dead letter: the raw message, its position, the rule, the action and every attempt."""
    event, message = action.event, action.event.message
    position = message.position
    try:
        body: dict[str, str] = {"text": message.body.decode("utf-8")}
    except UnicodeDecodeError:
        body = {"base64": base64.b64encode(message.body).decode("ascii")}
    return {
        "rule": action.rule,
        "action": {"type": action.spec.type, "index": action.spec.index},
        "idempotency_key": action.idempotency_key,
        "event": {"id": event.id, "type": event.type, "subject": event.subject, "index": event.index},
        "position": {
            "partition_id": position.partition_id,
            "offset": position.offset,
            "sequence_number": position.sequence_number,
            "enqueued_time": position.enqueued_time.isoformat() if position.enqueued_time else None,
        },
        "properties": {k: _json_safe(v) for k, v in message.properties.items()},
        "body": body,
        "late": action.late,
        "attempts": [{"at": a.at.isoformat(), "error": a.error, "transient": a.transient} for a in attempts],
    }


def _json_safe(value: object) -> object:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode("ascii")}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


class DeadLetterDirectory:
    """Dead letters as JSON files in a local directory, one per action, named by idempotency key."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def write(self, action: PlannedAction, attempts: tuple[Attempt, ...]) -> str:
        data = orjson.dumps(dead_letter_record(action, attempts), option=orjson.OPT_INDENT_2)
        return await asyncio.to_thread(self._write, action.idempotency_key, data)

    def _write(self, name: str, data: bytes) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{name}.json"
        partial = path.with_suffix(".json.partial")
        partial.write_bytes(data)
        partial.replace(path)
        return str(path)


class ActionRunner:
    """Executes planned actions with retries; dead-letters what cannot be done."""

    def __init__(
        self,
        dead_letters: DeadLetterLane,
        retry: RetryPolicy | None = None,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        types: Mapping[str, ActionType] | None = None,
    ) -> None:
        """``types``: the action types to execute (default: every registered type)."""
        self._dead_letters = dead_letters
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._types = types
        self._executors: dict[tuple[str, ActionSpec], Executor] = {}

    async def run(self, action: PlannedAction) -> ActionFate:
        executor = self._executor(action)
        attempts: list[Attempt] = []
        for number in range(1, self._retry.attempts + 1):
            try:
                await executor.execute(action)
            except ActionError as exc:
                attempts.append(Attempt(datetime.now(UTC), str(exc), exc.transient))
                log.warning(
                    "action.failed",
                    rule=action.rule,
                    action_type=action.spec.type,
                    event_id=action.event.id,
                    attempt=number,
                    transient=exc.transient,
                    error=str(exc),
                )
                if not exc.transient or number == self._retry.attempts:
                    break
                await self._sleep(self._retry.delay(number, self._rng))
            else:
                return ActionFate.DONE
        where = await self._dead_letters.write(action, tuple(attempts))
        log.error(
            "action.dead_lettered",
            rule=action.rule,
            action_type=action.spec.type,
            event_id=action.event.id,
            attempts=len(attempts),
            dead_letter=where,
        )
        return ActionFate.DEAD_LETTERED

    def _executor(self, action: PlannedAction) -> Executor:
        # Keyed by the spec too: a reloaded table may give a rule other parameters.
        key = (action.rule, action.spec)
        executor = self._executors.get(key)
        if executor is None:
            types = self._types if self._types is not None else action_types()
            action_type = types.get(action.spec.type)
            if action_type is None:
                raise WorkerError(f"rule {action.rule!r}: unknown action type {action.spec.type!r} ({sorted(types)})")
            executor = self._executors[key] = action_type.executor(action.spec.params)
        return executor

    async def aclose(self) -> None:
        executors, self._executors = self._executors, {}
        for executor in executors.values():
            await executor.aclose()
