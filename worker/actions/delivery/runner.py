"""Running planned actions: one executor per rule action, retries, circuits, and the dead-letter lane.

An action either completes or, once its attempts are spent (or at once on a permanent error), is
written to the dead-letter lane with everything needed to re-drive it. Only then does its event
count as finished. A dead letter that cannot be written is retried, with a growing wait, until it
is written (or, with ``dead_letter_tries``, until those tries are spent: then the error propagates);
meanwhile the event stays unfinished, so no checkpoint passes it, and each failure is logged
(``dead_letter.failed``) and counted.

Each attempt is bounded: by the action's timeout, by a limit of requests at once per target, and by
the caller's slot (the partition's concurrency), which is held only while the attempt runs, never
while waiting to retry; the types with a pace (the chat services) wait their turn at it first. Each
target has a circuit breaker: while it is open, attempts fail at once without a request, and the
wait before the next one lasts at least until a probe may go.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Protocol

import structlog
from aiolimiter import AsyncLimiter

from worker.actions.base import ActionFate, ActionParams, Executor, ImmediateExecutor, PlannedAction
from worker.actions.breaker import BreakerSettings, CircuitBreaker
from worker.actions.delivery.deadletters import Attempt, DeadLetterDirectory, DeadLetterLane, dead_letter_record
from worker.actions.delivery.services import Services
from worker.actions.registry import ActionType, action_types
from worker.actions.retry import RetryPolicy
from worker.errors import ActionError, CircuitOpen, DeadLetterError, TargetRejected, TargetUnavailable, WorkerError
from worker.masking import MASKER
from worker.telemetry.spans import NO_TRACER, Tracer

__all__ = [
    "ActionRunner",
    "Attempt",
    "DeadLetterDirectory",
    "DeadLetterLane",
    "RetryPolicy",
    "RunnerSettings",
    "dead_letter_record",
]

log = structlog.get_logger("worker.actions")


class Observer(Protocol):
    """What the runner reports as it goes (the metrics)."""

    def observe(self, action_type: str, seconds: float | None, result: str) -> None:
        """An attempt: its seconds (None when no request was made), and its result (ok, transient,
        permanent, circuit_open)."""

    def dead_letter_failed(self, action_type: str) -> None:
        """A dead letter could not be written (it is tried again)."""

    def attempting(self, action_type: str, started: float) -> None:
        """An attempt started at ``started`` (the runner's clock) is under way."""

    def attempted(self, action_type: str, started: float) -> None:
        """The attempt started at ``started`` is over, whatever its result."""


def _result(error: ActionError | None) -> str:
    """An attempt's result, as the metrics name it."""
    if error is None:
        return "ok"
    if isinstance(error, CircuitOpen):
        return "circuit_open"
    return "transient" if error.transient else "permanent"


def _about(action: PlannedAction) -> dict[str, object]:
    """What every log line of an action names: its rule, type and index, and its event."""
    return {
        "rule": action.rule,
        "action_type": action.spec.type,
        "action_index": action.spec.index,
        "event_id": action.event.id,
        "sequence_number": action.event.position.sequence_number,
    }


class _Unobserved:
    def observe(self, action_type: str, seconds: float | None, result: str) -> None:
        return None

    def dead_letter_failed(self, action_type: str) -> None:
        return None

    def attempting(self, action_type: str, started: float) -> None:
        return None

    def attempted(self, action_type: str, started: float) -> None:
        return None


@dataclass(frozen=True, slots=True)
class RunnerSettings:
    #: Attempts in flight at once per target (an HTTP origin, an SMTP server, an Event Hub).
    per_target: int = 8
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    #: Tries to write a dead letter before its error propagates; None: until it is written (the
    #: live worker: the event stays unfinished meanwhile, and a shutdown leaves it to be redone).
    dead_letter_tries: int | None = None
    #: Seconds before the second try to write a dead letter, doubling up to ``dead_letter_max_wait``.
    dead_letter_wait: float = 1.0
    dead_letter_max_wait: float = 60.0


@dataclass(frozen=True, slots=True)
class _Entry:
    """One rule action's executor, and what bounds its attempts."""

    executor: Executor
    policy: RetryPolicy
    timeout: float
    #: The executor's synchronous path, when it has one (see :class:`ImmediateExecutor`).
    now: Callable[[PlannedAction], None] | None
    #: The type's pace: requests a second at most to one target.
    rate: float | None = None


class ActionRunner:
    """Executes planned actions with retries; dead-letters what cannot be done."""

    def __init__(
        self,
        dead_letters: DeadLetterLane,
        retry: RetryPolicy | None = None,
        *,
        services: Services | None = None,
        settings: RunnerSettings | None = None,
        types: Mapping[str, ActionType] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        observe: Observer | None = None,
        tracer: Tracer = NO_TRACER,
    ) -> None:
        """``retry``: the policy of actions whose rule sets none, instead of their type's default.
        ``types``: the action types to execute (default: every registered type).
        ``observe``: told of every attempt, and of every dead letter that could not be written.
        ``tracer``: a span per attempt, under the span current where the action runs."""
        self._dead_letters = dead_letters
        self._retry = retry
        self._services = services or Services()
        self._settings = settings or RunnerSettings()
        self._types = types
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._observer = observe or _Unobserved()
        self._observe = self._observer.observe
        self._tracer = tracer
        #: By the identity of the action's spec (a reloaded table brings new specs, so new executors).
        self._entries: dict[int, tuple[object, _Entry]] = {}
        self._breakers: dict[str, CircuitBreaker] = {}
        self._limits: dict[str, asyncio.Semaphore] = {}
        self._paces: dict[str, AsyncLimiter] = {}

    def breaker(self, target: str) -> CircuitBreaker:
        breaker = self._breakers.get(target)
        if breaker is None:
            breaker = self._breakers[target] = CircuitBreaker(self._settings.breaker)
        return breaker

    def immediate(self, action: PlannedAction) -> bool:
        """Whether ``action`` completes synchronously (see :class:`ImmediateExecutor`): run it with :meth:`run_now`."""
        return self._entry(action).now is not None

    def run_now(self, action: PlannedAction) -> ActionFate:
        """Run an :meth:`immediate` action at once, without a task, timeout or retry."""
        now = self._entry(action).now
        if now is None:
            raise ValueError(f"a {action.spec.type} action does not complete synchronously: run() it")
        clock = self._clock
        started = clock()
        now(action)
        self._observe(action.spec.type, clock() - started, "ok")
        return ActionFate.DONE

    async def run(self, action: PlannedAction, slot: AbstractAsyncContextManager[object] | None = None) -> ActionFate:
        """Run ``action`` to completion or to the dead-letter lane. ``slot`` is held during each attempt."""
        entry = self._entry(action)
        target, policy = entry.executor.target, entry.policy
        breaker = self.breaker(target)
        attempts: list[Attempt] = []
        for number in range(1, policy.attempts + 1):
            error = await self._attempt(action, entry, breaker, slot, number)
            if error is None:
                if attempts:
                    log.info("action.recovered", **_about(action), attempt=number)
                return ActionFate.DONE
            message = MASKER.mask(str(error))
            attempts.append(Attempt(datetime.now(UTC), message, error.transient, error.reason))
            log.warning(
                "action.failed",
                **_about(action),
                target=target,
                attempt=number,
                transient=error.transient,
                error=message,
            )
            if not error.transient or number == policy.attempts:
                break
            retry_after = error.retry_after if isinstance(error, TargetUnavailable) else None
            opens_in = breaker.opens_in(self._clock())
            await self._sleep(policy.wait(number, self._rng, retry_after=retry_after, circuit_opens_in=opens_in))
        where = await self._dead_letter(action, tuple(attempts))
        log.error(
            "action.dead_lettered",
            **_about(action),
            attempts=len(attempts),
            dead_letter=where,
        )
        return ActionFate.DEAD_LETTERED

    async def _dead_letter(self, action: PlannedAction, attempts: tuple[Attempt, ...]) -> str:
        """Write the dead letter, trying again until it is written (see the module docstring)."""
        settings = self._settings
        tries = 0
        while True:
            tries += 1
            try:
                return await self._dead_letters.write(action, attempts)
            except DeadLetterError as exc:
                self._observer.dead_letter_failed(action.spec.type)
                log.error("dead_letter.failed", **_about(action), tries=tries, error=MASKER.mask(str(exc)))  # noqa: TRY400
                if settings.dead_letter_tries is not None and tries >= settings.dead_letter_tries:
                    raise
            await self._sleep(min(settings.dead_letter_wait * 2 ** (tries - 1), settings.dead_letter_max_wait))

    async def _attempt(
        self,
        action: PlannedAction,
        entry: _Entry,
        breaker: CircuitBreaker,
        slot: AbstractAsyncContextManager[object] | None,
        number: int,
    ) -> ActionError | None:
        """One attempt: None when it succeeded, else its error (a breaker outcome is recorded either way)."""
        target = entry.executor.target
        limit = self._limits.get(target)
        if limit is None:
            limit = self._limits[target] = asyncio.Semaphore(self._settings.per_target)
        if entry.rate is not None:  # its turn at the target's pace, before it takes a place
            pace = self._paces.get(target)
            if pace is None:
                pace = self._paces[target] = AsyncLimiter(1, 1 / entry.rate)
            await pace.acquire()
        async with limit, slot or contextlib.nullcontext():
            spec = action.spec
            with self._tracer.attempt(
                spec.type, rule=action.rule, index=spec.index, target=target, number=number
            ) as span:
                error = await self._try(action, entry, breaker, target)
                span.set("azml_worker.attempt.result", _result(error))
                if error is not None:
                    span.failed(MASKER.mask(str(error)))
            return error

    async def _try(
        self, action: PlannedAction, entry: _Entry, breaker: CircuitBreaker, target: str
    ) -> ActionError | None:
        """The attempt itself, once it has its place (see :meth:`_attempt`)."""
        # Asked after waiting for room, so that a circuit opened meanwhile is respected.
        kind = action.spec.type
        if not breaker.allow(self._clock()):
            self._observe(kind, None, "circuit_open")
            return CircuitOpen(f"{target}: circuit open after repeated failures; no request made")
        started = self._clock()
        self._observer.attempting(kind, started)
        try:
            async with asyncio.timeout(entry.timeout):
                await entry.executor.execute(action)
        except TimeoutError:
            breaker.failed(self._clock())
            self._observe(kind, self._clock() - started, "transient")
            return TargetUnavailable(f"{target}: no answer within {entry.timeout:g} s")
        except TargetRejected as exc:
            breaker.succeeded()  # it answered: it is up
            self._observe(kind, self._clock() - started, "permanent")
            return exc
        except ActionError as exc:
            if exc.transient:
                breaker.failed(self._clock())
            else:
                breaker.abandoned()
            self._observe(kind, self._clock() - started, "transient" if exc.transient else "permanent")
            return exc
        except BaseException:
            breaker.abandoned()
            raise
        finally:
            self._observer.attempted(kind, started)
        breaker.succeeded()
        self._observe(kind, self._clock() - started, "ok")
        return None

    def _entry(self, action: PlannedAction) -> _Entry:
        spec = action.spec
        found = self._entries.get(id(spec))
        if found is not None and found[0] is spec:
            return found[1]
        types = self._types if self._types is not None else action_types()
        action_type = types.get(spec.type)
        if action_type is None:
            raise WorkerError(f"rule {action.rule!r}: unknown action type {spec.type!r} ({sorted(types)})")
        params = spec.params
        executor = action_type.executor(params, self._services)
        entry = _Entry(
            executor,
            _policy(params, self._retry or action_type.retry),
            params.timeout or action_type.timeout,
            executor.execute_now if isinstance(executor, ImmediateExecutor) else None,
            action_type.rate,
        )
        self._entries[id(spec)] = (spec, entry)
        return entry

    async def aclose(self) -> None:
        entries, self._entries = self._entries, {}
        try:
            for _, entry in entries.values():
                await entry.executor.aclose()
        finally:
            await self._services.aclose()
            await self._dead_letters.aclose()


def _policy(params: ActionParams, default: RetryPolicy) -> RetryPolicy:
    """The rule's retry settings over the default."""
    own = params.retry
    if own is None:
        return default
    given = {name: value for name, value in own.model_dump().items() if value is not None}
    return replace(default, **given)
