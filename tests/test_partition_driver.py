"""The partition driver: per-subject order, concurrency across subjects, backpressure, retries."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import orjson
import pytest

from tests.probe import T0, TYPES, Probe, ProbeParams, message, no_sleep, table
from tests.support import compile_ok, decode_one
from worker.actions import ActionSpec, PlannedAction
from worker.actions.base import ActionFate
from worker.actions.delivery.runner import ActionRunner, DeadLetterDirectory, RetryPolicy, RunnerSettings
from worker.actions.log import LogParams
from worker.core.partition import PartitionCore
from worker.core.rules import Rule, RulesTable
from worker.driver import PartitionDriver
from worker.log import configure
from worker.settings import CoreSettings, DriverSettings


async def test_subjects_run_concurrently_but_each_in_its_order(probe: Probe, tmp_path: Path) -> None:
    core = PartitionCore("0", table(), CoreSettings(window=0))
    runner = ActionRunner(DeadLetterDirectory(tmp_path), sleep=no_sleep, types=TYPES)
    async with PartitionDriver(core, runner, DriverSettings(concurrency=3)) as driver:
        for i in range(24):
            await driver.feed(message(i, f"s{i % 6}", i))
        await asyncio.sleep(0.05)
        assert probe.peak["all"] == 3  # bounded, and more than one subject at once
        probe.gate.set()
        await driver.finish()
    for s in range(6):
        assert [e for subject, e in probe.order if subject == f"s{s}"] == [f"e{i}" for i in range(s, 24, 6)]
    assert core.checkpoint is not None
    assert core.checkpoint.sequence_number == 23
    assert core.counts().actions == {("all", "probe", ActionFate.DONE): 24}


async def test_a_stuck_target_does_not_stall_other_subjects(probe: Probe, tmp_path: Path) -> None:
    stuck = ActionSpec("probe", 0, ProbeParams(target="stuck"))
    healthy = ActionSpec("probe", 0, ProbeParams(target="healthy", gated=False))
    rules = [
        Rule("stuck", compile_ok({"subjectBeginsWith": "stuck/"}), (stuck,)),
        Rule("healthy", compile_ok({"subjectBeginsWith": "ok/"}), (healthy,)),
    ]
    core = PartitionCore("0", RulesTable.build(rules), CoreSettings(window=0))
    settings = RunnerSettings(per_target=1)
    runner = ActionRunner(DeadLetterDirectory(tmp_path), sleep=no_sleep, types=TYPES, settings=settings)
    subjects = [f"stuck/{i}" if i % 3 == 0 else f"ok/{i}" for i in range(12)]
    async with PartitionDriver(core, runner, DriverSettings(concurrency=2)) as driver:
        for i, subject in enumerate(subjects):
            await driver.feed(message(i, subject, i))
        await asyncio.sleep(0.05)
        # One request at a time to the stuck target, waiting without a slot: the others went through.
        assert sorted(s for s, _ in probe.order) == sorted(s for s in subjects if s.startswith("ok/"))
        assert (probe.running["stuck"], probe.peak["stuck"]) == (1, 1)
        probe.gate.set()
        await driver.finish()
    assert len(probe.order) == 12
    assert core.counts().actions == {("stuck", "probe", ActionFate.DONE): 4, ("healthy", "probe", ActionFate.DONE): 8}


async def test_reading_waits_while_too_much_is_ahead_of_the_checkpoint(probe: Probe, tmp_path: Path) -> None:
    core = PartitionCore("0", table(), CoreSettings(window=0))
    runner = ActionRunner(DeadLetterDirectory(tmp_path), sleep=no_sleep, types=TYPES)
    async with PartitionDriver(core, runner, DriverSettings(concurrency=2, max_open=4)) as driver:
        for i in range(4):
            await driver.feed(message(i, f"s{i}", i))
        blocked = asyncio.create_task(driver.feed(message(4, "s4", 4)))
        await asyncio.sleep(0.05)
        assert not blocked.done()
        assert core.open_messages == 4
        probe.gate.set()
        await blocked
        await driver.finish()
    assert core.counts().read == 5


async def test_transient_failures_are_retried_then_succeed(probe: Probe, tmp_path: Path) -> None:
    probe.gate.set()
    core = PartitionCore("0", table(failures=2), CoreSettings(window=0))
    runner = ActionRunner(DeadLetterDirectory(tmp_path), RetryPolicy(attempts=3), sleep=no_sleep, types=TYPES)
    async with PartitionDriver(core, runner) as driver:
        await driver.feed(message(0, "s", 0))
        await driver.finish()
    assert probe.calls == {"e0": 3}
    assert core.counts().actions == {("all", "probe", ActionFate.DONE): 1}
    assert list(tmp_path.iterdir()) == []


async def test_a_permanent_failure_is_dead_lettered_at_once(probe: Probe, tmp_path: Path) -> None:
    core = PartitionCore("0", table(failures=5, transient=False), CoreSettings(window=0))
    runner = ActionRunner(DeadLetterDirectory(tmp_path), RetryPolicy(attempts=3), sleep=no_sleep, types=TYPES)
    async with PartitionDriver(core, runner) as driver:
        await driver.feed(message(0, "s", 0))
        await driver.finish()
    assert probe.calls == {"e0": 1}
    [letter] = [orjson.loads(p.read_bytes()) for p in tmp_path.iterdir()]
    assert letter["attempts"][0]["transient"] is False
    assert core.checkpoint is not None  # dead-lettered counts as finished


async def test_log_actions_run_at_once_yet_wait_behind_their_subjects_queued_work(
    probe: Probe, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configure("info", "json")
    rules = [
        Rule("gated", compile_ok({"subjectBeginsWith": "slow"}), (ActionSpec("probe", 0, ProbeParams()),)),
        Rule("logged", compile_ok({}), (ActionSpec("log", 0, LogParams()),)),
    ]
    core = PartitionCore("0", RulesTable.build(rules), CoreSettings(window=0))
    runner = ActionRunner(DeadLetterDirectory(tmp_path), sleep=no_sleep, types=TYPES)

    def logged() -> list[str]:
        return [orjson.loads(line)["event_id"] for line in capsys.readouterr().err.splitlines()]

    async with PartitionDriver(core, runner) as driver:
        await driver.feed(message(0, "fast", 0))
        assert logged() == ["e0"]  # run in the feed itself: no task, no wait
        assert core.checkpoint is not None
        assert core.checkpoint.sequence_number == 0
        await driver.feed(message(1, "slow", 1))  # the probe, then the log, in a task
        await driver.feed(message(2, "slow", 2))  # log only, but queued behind e1
        await driver.feed(message(3, "fast", 3))
        await asyncio.sleep(0.05)
        assert logged() == ["e3"]
        probe.gate.set()
        await driver.finish()
    assert logged() == ["e1", "e2"]
    assert core.counts().actions == {("gated", "probe", ActionFate.DONE): 2, ("logged", "log", ActionFate.DONE): 4}
    assert core.checkpoint is not None
    assert core.checkpoint.sequence_number == 3


def test_only_synchronous_actions_run_now(tmp_path: Path) -> None:
    runner = ActionRunner(DeadLetterDirectory(tmp_path), types=TYPES)
    event = decode_one({"id": "e", "topic": "ws", "subject": "s", "eventType": "T", "eventTime": T0.isoformat()})
    gated = PlannedAction("r", ActionSpec("probe", 0, ProbeParams()), event)
    assert runner.immediate(PlannedAction("r", ActionSpec("log", 0, LogParams()), event))
    assert not runner.immediate(gated)
    with pytest.raises(ValueError, match="does not complete synchronously"):
        runner.run_now(gated)


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(attempts=10, first_delay=1, max_delay=5)
    rng = random.Random(1)
    ceilings = [max(policy.delay(n, rng) for _ in range(200)) for n in range(1, 6)]
    assert ceilings[0] <= 1
    assert 1 < ceilings[1] <= 2
    assert 2 < ceilings[2] <= 4
    assert 4 < ceilings[4] <= 5
