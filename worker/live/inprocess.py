"""The partitions' pipelines in this process: :class:`InProcessHost`, a :class:`~worker.live.handoff.PartitionHost`.

Each open partition is a :class:`~worker.live.partition.LivePartition` (its core, driver and task)
with an :class:`~worker.live.handoff.Inbox`. ``worker run`` uses this host directly when
``pipeline_process`` is off; otherwise the child process (:mod:`worker.live.child`) runs one for the
parent's :class:`~worker.live.childprocess.ChildProcessHost`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import structlog
from azure.core.exceptions import AzureError

from worker.actions.delivery.deadletters import dead_letter_lane
from worker.actions.delivery.runner import ActionRunner
from worker.actions.delivery.services import Services
from worker.actions.secrets import Placeholders
from worker.checkpoints.store import Stores
from worker.core.accounting import Tally
from worker.core.partition import PartitionCore
from worker.core.rules import RulesTable
from worker.core.state import SavedState
from worker.errors import PartitionFailed, RulesError, StateError
from worker.events import Position
from worker.live.handoff import Delivery, Inbox, PartitionStatus
from worker.live.metrics import ActionMetrics
from worker.live.partition import LivePartition
from worker.rulefiles.loading import load_rules_of
from worker.settings import ProcessingSettings
from worker.telemetry.spans import NO_TRACER, Tracer

log = structlog.get_logger("worker.inprocess")

#: Told (partition, count) whenever a partition's pipeline takes in what was handed to it.
TakenHook = Callable[[str, int], None]


class InProcessHost:
    """:class:`~worker.live.handoff.PartitionHost` in this process: a :class:`LivePartition` per open partition."""

    def __init__(
        self,
        load: Callable[[], RulesTable],
        runner: ActionRunner | None,
        stores: Stores,
        settings: ProcessingSettings,
        *,
        on_taken: TakenHook | None = None,
        tracer: Tracer = NO_TRACER,
    ) -> None:
        """``load``: the rules table, now and on :meth:`reload`. ``on_taken``: told whenever a pipeline
        takes in what was handed to it (the child process reports it to the parent). ``tracer``: the
        spans of the partitions' events and checkpoints."""
        self._load = load
        self.table = load()
        self._runner = runner
        self._stores = stores
        self._settings = settings
        self._on_taken = on_taken
        self._tracer = tracer
        self._open: dict[str, LivePartition] = {}
        self._retired = Tally()

    async def open(self, partition_id: str) -> None:
        if partition_id in self._open:
            await self.close(partition_id, 0, write=False)
        settings = self._settings
        checkpoint = self._stores.partitions.checkpoint(partition_id)
        state: SavedState | None = None
        try:
            async with asyncio.timeout(settings.checkpoints.timeout):
                state = await checkpoint.load()
        except StateError as exc:
            # The message says what is wrong and what to do; a traceback would add nothing.
            log.error("partition.state_unreadable", partition_id=partition_id, error=str(exc))  # noqa: TRY400
        except (AzureError, OSError, TimeoutError) as exc:
            # Read at the first checkpoint write instead; meanwhile, no state to start from.
            error = str(exc) or f"no answer within {settings.checkpoints.timeout:g} s"
            log.warning("partition.state_unavailable", partition_id=partition_id, error=error)
        # The core starts at the checkpoint as read: what rules that remember finish before the next
        # event is then saved at that same position.
        stored = checkpoint.record
        position = None if stored is None else Position(partition_id, stored.offset, stored.sequence_number)
        core = PartitionCore(partition_id, self.table, settings.core, state=state, checkpoint=position)
        inbox = Inbox(partition_id, settings.driver.inbox, self._on_taken)
        live = self._open[partition_id] = LivePartition(
            core, self._runner, settings.driver, checkpoint, settings.checkpoints, inbox, self._tracer
        )
        live.start()
        log.info("pipeline.started", partition_id=partition_id, state=state is not None)

    async def put(self, partition_id: str, deliveries: list[Delivery]) -> None:
        inbox = self.offer(partition_id, deliveries)
        inbox.hand(len(deliveries))
        await inbox.room()

    def offer(self, partition_id: str, deliveries: list[Delivery]) -> Inbox:
        """:meth:`put` without waiting: the caller bounds what is pending (see ``on_taken``). The partition's inbox."""
        live = self._partition(partition_id)
        live.offer([delivery.message(partition_id) for delivery in deliveries])
        return live.inbox

    async def close(self, partition_id: str, grace: float, *, write: bool) -> None:
        found = self._open.pop(partition_id, None)
        if found is None:
            return
        await found.close(grace, write=write)
        self._retired.add(found.core.counts())
        # What it had pending is saved with its checkpoint, for its next owner: not pending here any more.
        self._retired.pending.clear()

    def reload(self) -> None:
        try:
            table = self._load()
        except RulesError as exc:
            log.error("rules.rejected", problems=[str(p) for p in exc.problems])  # noqa: TRY400 - the problems say it
            return
        self.table = table
        for live in self._open.values():
            live.core.table = table
        log.info("rules.reloaded", rules=len(table.rules))

    def tally(self) -> Tally:
        total = Tally()
        total.add(self._retired)
        for live in list(self._open.values()):
            total.add(live.core.counts())
        return total

    def statuses(self) -> list[PartitionStatus]:
        return [live.status() for live in list(self._open.values())]

    async def failure(self) -> None:
        await asyncio.Event().wait()  # pipelines in this process fail one partition at a time, in put()

    def _partition(self, partition_id: str) -> LivePartition:
        found = self._open.get(partition_id)
        if found is None:
            raise PartitionFailed(f"partition {partition_id}: not open here")
        return found


def rules_loader(sources: Sequence[Path], *, dry_run: bool = False) -> Callable[[], RulesTable]:
    """Loads the rules table of ``sources``; raises RulesError listing every problem. A directory is
    listed again at each load, so that a file added to it is read on a reload, and one that changes
    while it is read (a ConfigMap update) is read again. A dry run executes nothing, so it needs no
    secrets: each stands in as a placeholder."""
    env = Placeholders() if dry_run else None
    return lambda: load_rules_of(sources, env=env)


@contextlib.asynccontextmanager
async def in_process_host(
    settings: ProcessingSettings,
    stores: Stores,
    metrics: ActionMetrics,
    *,
    on_taken: TakenHook | None = None,
    tracer: Tracer = NO_TRACER,
) -> AsyncIterator[InProcessHost]:
    """The partitions of ``worker run`` in this process, with the action runner the settings describe."""
    if settings.dry_run:  # a shadow run: nothing is executed, so no runner and no dead letters
        load = rules_loader(settings.rules, dry_run=True)
        yield InProcessHost(load, None, stores, settings, on_taken=on_taken, tracer=tracer)
        return
    runner = ActionRunner(
        dead_letter_lane(settings.dead_letters, settings.checkpoints.connection_string),
        services=Services(azure=settings.azure, tracer=tracer),
        observe=metrics,
        tracer=tracer,
    )
    try:
        yield InProcessHost(rules_loader(settings.rules), runner, stores, settings, on_taken=on_taken, tracer=tracer)
    finally:
        await runner.aclose()
