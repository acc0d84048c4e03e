"""Offline replay: Event Hubs Capture files through the same pipeline as the live worker.

Each partition's files are read in order, in batches on a worker thread (reading never blocks the
actions running on the event loop; a dry run, which runs none, reads on the loop's own thread), fed
to that partition's core through its driver (as the live worker does), and its actions run or, in a
dry run, only counted (in the core itself, when nothing else watches them). The watermark comes from
the events' enqueued times, so a replay is deterministic and never waits on the wall clock. Memory
stays bounded: files are streamed and the core's buffers are capped.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Protocol

import structlog
from tqdm import tqdm

from worker.actions.base import PlannedAction
from worker.actions.delivery.deadletters import dead_letter_lane
from worker.actions.delivery.runner import ActionRunner, RetryPolicy, RunnerSettings
from worker.actions.delivery.services import Services
from worker.core.accounting import Tally
from worker.core.partition import PartitionCore
from worker.core.rules import RulesTable
from worker.driver import PartitionDriver
from worker.events import Message
from worker.replay.sources import CaptureFile, Plan
from worker.settings import AzureSettings, CoreSettings, DriverSettings
from worker.telemetry.spans import NO_TRACER, Tracer
from worker.telemetry.start import start_tracing

log = structlog.get_logger("worker.replay")


@dataclass(frozen=True, slots=True)
class ReplaySettings:
    dry_run: bool = False
    #: Events' ages run to now (a recovery after an outage), not to their enqueued times (a backtest).
    age_from_now: bool = False
    core: CoreSettings = field(default_factory=CoreSettings)
    driver: DriverSettings = field(default_factory=DriverSettings)
    #: The retry policy of actions whose rule sets none (None: each action type's default).
    retry: RetryPolicy | None = None
    #: A replay is a batch job: a dead letter that cannot be written after a few tries stops it.
    runner: RunnerSettings = field(default_factory=lambda: RunnerSettings(dead_letter_tries=3, dead_letter_wait=0.2))
    #: The dead-letter lane: a directory, or a blob container URL (``https://.../CONTAINER[/PREFIX]``).
    dead_letters: Path | str = Path("dead-letters")
    #: For a blob container lane without a SAS token in its URL (else DefaultAzureCredential).
    connection_string: str | None = field(default=None, repr=False)
    #: Messages read per hand-over from the reading thread.
    batch: int = 2_000
    #: The Azure cloud and Azure ML API version the actions use.
    azure: AzureSettings = field(default_factory=AzureSettings)
    #: Trace the replay as the live worker does (to the exporters the standard variables name).
    trace: bool = False


#: Allocations between two collections of the youngest generation during a replay (Python's default: 700).
YOUNG_GENERATION = 10_000


@contextmanager
def collector_for_replay() -> Iterator[None]:
    """The garbage collector set for a replay, which makes and drops a few records per event: what
    start-up built (modules, the rules table) is frozen, left out of every pass, and the youngest
    generation is collected less often. Both are put back after."""
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(YOUNG_GENERATION, *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


def tracer_for(settings: ReplaySettings) -> Tracer:
    """A replay process's tracer: the standard variables' with ``trace``, else none. Close it when done."""
    return start_tracing(os.environ, None, role="replay") if settings.trace else NO_TRACER


class Progress(Protocol):
    def file_done(self, file: CaptureFile, events_read: int) -> None: ...

    def close(self) -> None: ...


class BarProgress:
    """A progress bar over the bytes of the files, on a terminal."""

    def __init__(self, total_bytes: int) -> None:
        self._bar = tqdm(total=total_bytes or None, unit="B", unit_scale=True, file=sys.stderr, desc="replay")

    def file_done(self, file: CaptureFile, events_read: int) -> None:
        self._bar.update(file.size or 0)
        self._bar.set_postfix(events=events_read, refresh=False)

    def close(self) -> None:
        self._bar.close()


class LogProgress:
    """A log line per file, and at most one every ``interval`` seconds for small files."""

    def __init__(self, files: int, interval: float = 5.0) -> None:
        self._files, self._done, self._interval, self._last = files, 0, interval, float("-inf")

    def file_done(self, file: CaptureFile, events_read: int) -> None:
        self._done += 1
        now = time.monotonic()
        if now - self._last >= self._interval or self._done == self._files:
            self._last = now
            log.info("replay.progress", files_done=self._done, files=self._files, file=file.name, events=events_read)

    def close(self) -> None:
        return None


def progress_for(plan: Plan) -> Progress:
    """A bar on a terminal, log lines otherwise."""
    if sys.stderr.isatty():
        return BarProgress(plan.total_bytes)
    return LogProgress(sum(len(files) for files in plan.partitions.values()))


async def replay(
    plan: Plan,
    table: RulesTable,
    settings: ReplaySettings,
    progress: Progress,
    *,
    services: Services | None = None,
    observe: Callable[[PlannedAction], None] | None = None,
) -> Tally:
    """Replay every partition of ``plan``; return the counts of the whole run. A plan of dead letters
    runs only the actions they name. ``services``: the clients actions use (default: real ones).
    ``observe``: in a dry run, is passed each planned action (a backtest report's collector)."""
    total = Tally()
    tracer = tracer_for(settings)
    runner = action_runner(settings, services, tracer)
    try:
        with collector_for_replay():
            for partition_id, files in plan.partitions.items():
                tally = await replay_partition(
                    partition_id,
                    files,
                    plan,
                    table,
                    settings,
                    runner,
                    progress,
                    observe=observe,
                    read_before=total.read,
                    tracer=tracer,
                )
                total.add(tally)
    finally:
        progress.close()
        if runner is not None:
            await runner.aclose()
        tracer.close()
    return total


def action_runner(
    settings: ReplaySettings, services: Services | None = None, tracer: Tracer = NO_TRACER
) -> ActionRunner | None:
    """The runner of a replay's actions, writing to its dead-letter lane; None for a dry run. Close it
    (``aclose``) when done."""
    if settings.dry_run:
        return None
    lane = dead_letter_lane(settings.dead_letters, settings.connection_string)
    services = services or Services(azure=settings.azure, tracer=tracer)
    return ActionRunner(lane, settings.retry, services=services, settings=settings.runner, tracer=tracer)


async def replay_partition(
    partition_id: str,
    files: Sequence[CaptureFile],
    plan: Plan,
    table: RulesTable,
    settings: ReplaySettings,
    runner: ActionRunner | None,
    progress: Progress,
    *,
    observe: Callable[[PlannedAction], None] | None = None,
    read_before: int = 0,
    tracer: Tracer = NO_TRACER,
) -> Tally:
    """Replay one partition's ``files`` of ``plan`` (in order) through a core of its own; its counts.
    ``runner`` (None in a dry run) may be shared by partitions replayed one after another.
    ``read_before``: the events the run read before this partition, for ``progress``. ``tracer``:
    a span per event acted on."""
    select = plan.redrive.admits if plan.redrive is not None else None
    # A dry run that only counts is counted in the core: no work is made for the driver to count.
    planning = runner is None and observe is None and select is None and tracer is NO_TRACER
    core = PartitionCore(partition_id, table, settings.core, planning=planning)
    log.debug("replay.partition", partition_id=partition_id, files=len(files))
    clock = time.time if settings.age_from_now else None
    traced = None if tracer is NO_TRACER else tracer
    async with PartitionDriver(
        core, runner, settings.driver, select=select, clock=clock, observe=observe, tracer=traced
    ) as driver:
        for file in files:
            messages = plan.messages(file)
            if runner is None:
                # A dry run: no action waits on the event loop, so the file is read here, each message
                # decoded as it is read (no thread to hand batches across).
                await driver.feed_many(messages)
            else:
                while batch := await asyncio.to_thread(_take, messages, settings.batch):
                    await driver.feed_many(batch)
            progress.file_done(file, read_before + core.tally.read)
        await driver.finish()
    return core.counts()


def _take(messages: Iterator[Message], count: int) -> list[Message]:
    return list(islice(messages, count))
