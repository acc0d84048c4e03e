"""One live partition: batches in, actions run, checkpoints written only up to finished events."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from tests.probe import TYPES, DeadLetterFailures, Probe, message, no_sleep, table, yielding
from worker.actions.delivery.runner import ActionRunner, DeadLetterDirectory, RetryPolicy
from worker.checkpoints.store import DirectoryCheckpoints, DirectoryCheckpointStore
from worker.config import RunSettings
from worker.core.accounting import Fate
from worker.core.partition import PartitionCore
from worker.errors import PartitionFailed
from worker.live.handoff import Inbox
from worker.live.inprocess import rules_loader
from worker.live.partition import LivePartition
from worker.settings import CheckpointSettings, CoreSettings, DriverSettings, Scope

SCOPE = Scope("ns.example", "hub", "$default")


def run_for(
    tmp_path: Path,
    *,
    events: int = 1000,
    interval: float = 3600.0,
    window: float = 0,
    inbox: Inbox | None = None,
    **params: object,
) -> LivePartition:
    core = PartitionCore("0", table(**params), CoreSettings(window=window))
    runner = ActionRunner(DeadLetterDirectory(tmp_path / "dead"), RetryPolicy(attempts=2), sleep=no_sleep, types=TYPES)
    checkpoint = DirectoryCheckpoints(tmp_path, SCOPE).checkpoint("0")
    checkpoints = CheckpointSettings(None, None, "unused", tmp_path, interval, events)
    return LivePartition(
        core, runner, DriverSettings(concurrency=4), checkpoint, checkpoints, inbox or Inbox("0", 1000)
    )


async def checkpoint_of(tmp_path: Path) -> int | None:
    found = list(await DirectoryCheckpointStore(tmp_path).list_checkpoints("ns.example", "hub", "$default"))
    return found[0]["sequence_number"] if found else None


async def settle(run: LivePartition, sequence: int) -> None:
    """Wait until the core's checkpoint position reaches ``sequence`` (the actions ran)."""
    async with asyncio.timeout(10):
        while (position := run.core.checkpoint) is None or position.sequence_number != sequence:  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # the core is pure: it has no event to wait on


async def test_a_clean_close_finishes_the_work_and_checkpoints_it(probe: Probe, tmp_path: Path) -> None:
    probe.gate.set()
    run = run_for(tmp_path)
    run.start()
    run.offer([message(n, f"s{n % 3}", n) for n in range(10)])
    await settle(run, 9)
    await run.close(5.0, write=True)
    assert sorted(event for _, event in probe.order) == sorted(f"e{n}" for n in range(10))
    assert await checkpoint_of(tmp_path) == 9
    state = await DirectoryCheckpoints(tmp_path, SCOPE).checkpoint("0").load()
    assert state is not None
    assert set(state.recent_ids) == {f"e{n}" for n in range(10)}


async def test_the_checkpoint_never_passes_an_action_still_running(probe: Probe, tmp_path: Path) -> None:
    probe.gate.set()
    run = run_for(tmp_path)
    run.start()
    run.offer([message(0, "a", 0)])
    await settle(run, 0)
    probe.gate.clear()  # the next actions hang, past the grace
    run.offer([message(1, "b", 1), message(2, "a", 2)])
    await run.close(0.2, write=True)
    assert await checkpoint_of(tmp_path) == 0
    state = await DirectoryCheckpoints(tmp_path, SCOPE).checkpoint("0").load()
    assert state is not None
    assert state.recent_ids == ("e0",)  # the unfinished are neither duplicates nor late after a restart
    assert state.finished_beyond == ()


async def test_a_partition_lost_to_another_worker_writes_nothing(probe: Probe, tmp_path: Path) -> None:
    probe.gate.set()
    run = run_for(tmp_path)
    run.start()
    run.offer([message(0, "a", 0)])
    await settle(run, 0)
    await run.close(5.0, write=False)
    assert await checkpoint_of(tmp_path) is None


async def test_checkpoints_are_written_by_count_not_per_event(probe: Probe, tmp_path: Path) -> None:
    probe.gate.set()
    run = run_for(tmp_path, events=5)
    run.start()
    for n in range(30):
        run.offer([message(n, f"s{n}", n)])
        await settle(run, n)
    run.offer([])  # a tick, as the receiver sends when nothing arrives
    await run.close(5.0, write=True)
    assert await checkpoint_of(tmp_path) == 29
    assert 5 <= run.checkpoint_writes <= 8


async def test_a_defect_stops_the_partition_and_the_next_batch_is_refused(probe: Probe, tmp_path: Path) -> None:
    probe.gate.set()
    inbox = Inbox("0", 1)
    run = run_for(tmp_path, crash=True, inbox=inbox)
    run.start()
    run.offer([message(0, "a", 0)])
    inbox.hand(2)  # more than the partition takes in: the receiver waits for room...
    with pytest.raises(PartitionFailed, match="partition 0: its pipeline has stopped"):
        async with asyncio.timeout(10):
            await inbox.room()  # ...until the pipeline stops on the defect
    assert run.status().failed
    with pytest.raises(PartitionFailed, match="partition 0"):
        run.offer([])
    await run.close(1.0, write=True)
    assert await checkpoint_of(tmp_path) is None


async def test_a_dead_letter_that_cannot_be_written_holds_its_event_until_it_can(probe: Probe, tmp_path: Path) -> None:
    """The lane is unwritable: the dead letter is tried again and again, counted, and its event stays
    unfinished, so the checkpoint waits for it while other subjects go on; then the lane is back."""
    probe.gate.set()
    blocker = tmp_path / "dead"
    blocker.write_text("a file where the dead-letter directory should be")
    failures = DeadLetterFailures()
    failed = failures.action_types
    runner = ActionRunner(
        DeadLetterDirectory(blocker), RetryPolicy(attempts=1), sleep=yielding, types=TYPES, observe=failures
    )
    core = PartitionCore("0", table(failures=1, transient=False), CoreSettings(window=0))
    checkpoint = DirectoryCheckpoints(tmp_path, SCOPE).checkpoint("0")
    checkpoints = CheckpointSettings(None, None, "unused", tmp_path, 3600.0, 1)
    run = LivePartition(core, runner, DriverSettings(concurrency=4), checkpoint, checkpoints, Inbox("0", 100))
    run.start()
    run.offer([message(0, "a", 0)])  # its action fails for good: a dead letter
    async with asyncio.timeout(10):
        while len(failed) < 3:  # noqa: ASYNC110 - the failures are counted as they happen
            await asyncio.sleep(0.01)
    run.offer([message(1, "b", 1)])  # another subject goes on meanwhile (its first attempt fails too: a
    run.offer([])  # second dead letter, held as well)
    assert run.core.checkpoint is None  # never past the event whose dead letter is not written
    assert not run.status().failed
    blocker.unlink()  # the lane is back
    await settle(run, 1)
    letters = sorted(p.name for p in (tmp_path / "dead").glob("*.json"))
    assert len(letters) == 2
    await run.close(5.0, write=True)
    assert await checkpoint_of(tmp_path) == 1
    assert set(failed) == {"probe"}
    await runner.aclose()


async def test_the_last_events_of_a_burst_leave_the_reorder_buffer_after_the_window_without_a_tick(
    probe: Probe, tmp_path: Path
) -> None:
    probe.gate.set()
    run = run_for(tmp_path, window=0.3)
    run.start()
    run.offer([message(0, "a", 0)])  # held: a later event of its subject may still come
    await asyncio.sleep(0.1)
    assert run.core.buffered == 1
    await settle(run, 0)  # released by the run's own timer: no receive tick was sent
    assert [event for _, event in probe.order] == ["e0"]
    await run.close(1.0, write=True)


def test_a_file_added_to_a_rules_directory_is_read_on_the_next_load(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "a.yaml").write_text("rules:\n  - name: a\n    filter: {}\n    actions: [{type: log}]\n")
    settings = RunSettings.explicit(
        eventhub_connection_string="Endpoint=sb://ns.example/;SharedAccessKeyName=k;SharedAccessKey=s;EntityPath=hub",
        checkpoint_dir=tmp_path / "checkpoints",
        rules=[rules],
    )
    load = rules_loader(settings.rules)
    assert [rule.name for rule in load().rules] == ["a"]
    (rules / "b.yaml").write_text("rules:\n  - name: b\n    filter: {}\n    actions: [{type: log}]\n")
    assert [rule.name for rule in load().rules] == ["a", "b"]


@pytest.mark.parametrize("write", [True, False], ids=["shutdown", "lost"])
async def test_events_still_held_at_the_close_are_handed_over_and_the_counts_add_up(
    probe: Probe, tmp_path: Path, write: bool
) -> None:
    probe.gate.set()
    run = run_for(tmp_path, window=3600)
    run.start()
    run.offer([message(0, "a", 0), message(1, "b", 1)])  # held: the window is an hour
    async with asyncio.timeout(10):
        while run.core.buffered < 2:  # noqa: ASYNC110 - the core is pure: it has no event to wait on
            await asyncio.sleep(0.01)
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        await run.close(5.0, write=write)
    [handed] = [entry for entry in logs if entry["event"] == "partition.handed_over"]
    assert handed["partition_id"] == "0"  # as every line of a partition: read where it closes, too
    counts = run.core.counts()
    assert counts.read == 2
    assert counts.fates == {Fate.HANDED_OVER: 2}
    assert counts.check() == []
    assert probe.order == []
    assert await checkpoint_of(tmp_path) is None  # nothing finished: no checkpoint passes them
