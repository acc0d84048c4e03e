"""A stand-in action type for the driver's and the live partition's tests: the probe.

Its executor records what runs, and when, on the :class:`Probe` of the running test (the ``probe``
fixture), checks that one subject's actions never overlap, waits on the probe's gate when asked,
and fails on purpose a given number of times.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import orjson

from tests.support import compile_ok
from worker.actions import ActionParams, ActionSpec, ActionType, PlannedAction, action_types
from worker.actions.clients import Clients
from worker.core.rules import Rule, RulesTable
from worker.errors import ActionError
from worker.events import Message, Position

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


class ProbeParams(ActionParams):
    """A stand-in target inside the test: records what runs, and when, and can fail."""

    failures: int = 0
    transient: bool = True
    #: Wait for the probe's gate before finishing.
    gated: bool = True
    target: str = "probe"
    #: Raise what no action should (a defect), not an ActionError.
    crash: bool = False


class Probe:
    """What the probe saw, per probe name."""

    def __init__(self) -> None:
        self.running: dict[str, int] = defaultdict(int)
        self.peak: dict[str, int] = defaultdict(int)
        self.subject_running: dict[str, int] = defaultdict(int)
        self.order: list[tuple[str, str]] = []
        self.calls: dict[str, int] = defaultdict(int)
        self.gate = asyncio.Event()


#: The probe of the running test (see the ``probe`` fixture).
ACTIVE: list[Probe] = []


class ProbeExecutor:
    def __init__(self, params: ProbeParams, clients: Clients) -> None:
        self.params = params
        self.target = params.target

    async def execute(self, action: PlannedAction) -> None:
        probe = ACTIVE[-1]
        subject = action.event.subject or ""
        probe.calls[action.event.id] += 1
        if self.params.crash:
            raise RuntimeError("probe: a defect, on purpose")
        if probe.calls[action.event.id] <= self.params.failures:
            raise ActionError("probe: failing on purpose", transient=self.params.transient)
        assert probe.subject_running[subject] == 0, "two actions of one subject ran at once"
        probe.subject_running[subject] += 1
        probe.running["all"] += 1
        probe.running[self.target] += 1
        probe.peak["all"] = max(probe.peak["all"], probe.running["all"])
        probe.peak[self.target] = max(probe.peak[self.target], probe.running[self.target])
        if self.params.gated:
            await probe.gate.wait()
        await asyncio.sleep(0)
        probe.order.append((subject, action.event.id))
        probe.running["all"] -= 1
        probe.running[self.target] -= 1
        probe.subject_running[subject] -= 1

    async def aclose(self) -> None:
        return None


#: The action types the runners of these tests know: the built-in ones and the probe.
TYPES = {**action_types(), "probe": ActionType("probe", ProbeParams, ProbeExecutor, "test probe")}


async def no_sleep(_seconds: float) -> None:
    return None


async def yielding(_seconds: float) -> None:
    """A retry's wait that only lets the other tasks run."""
    await asyncio.sleep(0)


def table(**params: object) -> RulesTable:
    return RulesTable.build([Rule("all", compile_ok({}), (ActionSpec("probe", 0, ProbeParams(**params)),))])


def message(sequence: int, subject: str, seconds: float) -> Message:
    event = {
        "id": f"e{sequence}",
        "topic": "ws",
        "subject": subject,
        "eventType": "T",
        "eventTime": (T0 + timedelta(seconds=seconds)).isoformat(),
        "data": {},
    }
    return Message(orjson.dumps([event]), Position("0", str(sequence), sequence, T0 + timedelta(seconds=seconds)))


class DeadLetterFailures:
    """A runner's observer that records each dead letter that could not be written."""

    def __init__(self) -> None:
        self.action_types: list[str] = []

    def observe(self, action_type: str, seconds: float | None, result: str) -> None:
        return None

    def dead_letter_failed(self, action_type: str) -> None:
        self.action_types.append(action_type)

    def attempting(self, action_type: str, started: float) -> None:
        return None

    def attempted(self, action_type: str, started: float) -> None:
        return None
