"""The owned partitions' pipelines, behind the one interface the consumer drives.

:class:`PartitionHost` is that interface: open a partition, put what its receiver delivered,
close it. :class:`LocalPartitions` runs the pipelines in this process; :mod:`worker.engine` runs
them in a child process, so that receiving and processing each have a core.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from typing import Protocol

import structlog
from azure.core.exceptions import AzureError

from worker.accounting import Tally
from worker.actions.runner import ActionRunner
from worker.checkpoints import Scope, Stores
from worker.config import RunSettings
from worker.errors import RulesError
from worker.events import Message, new_message
from worker.flow import FlowSettings, PartitionFlow, PartitionState, StateError
from worker.metrics import ActionMetrics
from worker.partition import Checkpointing, PartitionFailed, PartitionRun, PartitionStatus
from worker.pipeline import DriveSettings
from worker.replay import dead_letter_lane
from worker.rules import RulesTable
from worker.rulesfile import load_rules, paths_of

log = structlog.get_logger("worker.partitions")

#: One received event as the receiver hands it over: body, offset, sequence number, enqueued time
#: (milliseconds since the epoch) and application properties.
Received = tuple[bytes, str | None, int | None, int | None, Mapping[str, object] | None]


def to_message(received: Received, partition_id: str) -> Message:
    """The core's record of one received event."""
    body, offset, sequence_number, enqueued, properties = received
    when = None if enqueued is None else datetime.fromtimestamp(enqueued / 1000, UTC)
    return new_message(body, partition_id, offset, sequence_number, when, properties or {})


class PartitionHost(Protocol):
    """Where the pipelines of the owned partitions run."""

    async def open(self, partition_id: str) -> None:
        """Start the partition's pipeline from its saved state."""

    async def put(self, partition_id: str, events: list[Received]) -> None:
        """Hand in a batch (empty: nothing arrived in time); waits while the partition is busy.
        Raises PartitionFailed when its pipeline has stopped."""

    async def close(self, partition_id: str, grace: float, *, write: bool) -> None:
        """Stop the partition: in-flight actions get ``grace`` seconds; ``write``: the final checkpoint."""

    def reload(self) -> None:
        """Load the rules again; an invalid table is logged and the old one kept."""

    def tally(self) -> Tally:
        """The counts of every partition, open now or before."""

    def statuses(self) -> list[PartitionStatus]:
        """The open partitions'."""

    async def failure(self) -> None:
        """Return (raising what went wrong) only if the host can no longer run pipelines."""


class LocalPartitions:
    """:class:`PartitionHost` in this process: a :class:`PartitionRun` per open partition."""

    def __init__(
        self,
        load: Callable[[], RulesTable],
        runner: ActionRunner | None,
        checkpointing: Checkpointing,
        flow: FlowSettings,
        drive: DriveSettings,
        *,
        on_taken: Callable[[str, int], None] | None = None,
    ) -> None:
        """``load``: the rules table, now and on :meth:`reload`. ``on_taken``: told (partition, count)
        whenever a pipeline takes in what was handed to it."""
        self._load = load
        self.table = load()
        self._runner = runner
        self._checkpointing = checkpointing
        self._flow = flow
        self._drive = drive
        self._on_taken = on_taken
        self._runs: dict[str, PartitionRun] = {}
        self._retired = Tally()

    async def open(self, partition_id: str) -> None:
        if partition_id in self._runs:
            await self.close(partition_id, 0, write=False)
        state: PartitionState | None = None
        try:
            state = await self._checkpointing.states.load(partition_id)
        except StateError as exc:
            # The message says what is wrong and what to do; a traceback would add nothing.
            log.error("partition.state_unreadable", partition_id=partition_id, error=str(exc))  # noqa: TRY400
        except (AzureError, OSError) as exc:
            log.warning("partition.state_unavailable", partition_id=partition_id, error=str(exc))
        flow = PartitionFlow(partition_id, self.table, self._flow, state=state)
        on_taken = self._on_taken
        taken = None if on_taken is None else (lambda n: on_taken(partition_id, n))
        run = self._runs[partition_id] = PartitionRun(
            flow, self._runner, self._drive, self._checkpointing, on_taken=taken
        )
        run.start()
        log.info("pipeline.started", partition_id=partition_id, state=state is not None)

    async def put(self, partition_id: str, events: list[Received]) -> None:
        await self._run(partition_id).put([to_message(event, partition_id) for event in events])

    def offer(self, partition_id: str, events: list[Received]) -> None:
        """:meth:`put` without waiting: the caller bounds what is pending (see ``on_taken``)."""
        self._run(partition_id).offer([to_message(event, partition_id) for event in events])

    async def close(self, partition_id: str, grace: float, *, write: bool) -> None:
        run = self._runs.pop(partition_id, None)
        if run is None:
            return
        await run.close(grace, write=write)
        self._retired.add(run.flow.counts())

    def reload(self) -> None:
        try:
            table = self._load()
        except RulesError as exc:
            log.error("rules.rejected", problems=[str(p) for p in exc.problems])  # noqa: TRY400 - the problems say it
            return
        self.table = table
        for run in self._runs.values():
            run.flow.table = table
        log.info("rules.reloaded", rules=len(table.rules))

    def tally(self) -> Tally:
        total = Tally()
        total.add(self._retired)
        for run in list(self._runs.values()):
            total.add(run.flow.counts())
        return total

    def statuses(self) -> list[PartitionStatus]:
        return [run.status() for run in list(self._runs.values())]

    async def failure(self) -> None:
        await asyncio.Event().wait()  # pipelines in this process fail one partition at a time, in put()

    def _run(self, partition_id: str) -> PartitionRun:
        run = self._runs.get(partition_id)
        if run is None:
            raise PartitionFailed(f"partition {partition_id}: not open here")
        return run


def rules_loader(settings: RunSettings) -> Callable[[], RulesTable]:
    """Loads the rules table the settings name; raises RulesError listing every problem. A directory
    is listed again at each load, so that a file added to it is read on a reload."""
    sources = settings.rules
    return lambda: load_rules(paths_of(sources))


@contextlib.asynccontextmanager
async def local_partitions(
    settings: RunSettings,
    stores: Stores,
    scope: Scope,
    metrics: ActionMetrics,
    *,
    on_taken: Callable[[str, int], None] | None = None,
) -> AsyncIterator[LocalPartitions]:
    """The partitions of ``worker run`` in this process, with the action runner the settings describe."""
    checkpoints = settings.checkpoints()
    runner = ActionRunner(
        dead_letter_lane(settings.dead_letters, checkpoints.connection_string), observe=metrics.observe
    )
    try:
        yield LocalPartitions(
            rules_loader(settings),
            runner,
            Checkpointing(scope, stores.checkpoints, stores.states, checkpoints),
            settings.flow(),
            settings.drive(),
            on_taken=on_taken,
        )
    finally:
        await runner.aclose()
