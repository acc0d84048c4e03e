"""One owned partition of the live worker: its core and driver, run in a task of their own.

Batches come in through :meth:`LivePartition.offer`, which only appends: the task takes everything
pending at once, tells the partition's :class:`~worker.live.handoff.Inbox` how many it took (which is
what lets the receiver go on), feeds them to the driver, passes the time for the reorder buffer's
idle release, and decides when to checkpoint: on an interval, after a number of events, and when
nothing arrived for a receive wait. The checkpoint (never past an unfinished event) is written by
its :class:`~worker.checkpoints.store.PartitionCheckpoint` in a task of its own, one write at a time and
each within the checkpoint timeout: a slow or failing store is logged and counted, and the work
goes on meanwhile, bounded by the read-ahead limit, never by the store. A write only ever moves the
checkpoint forward.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog
from azure.core.exceptions import AzureError

from worker.actions.delivery.runner import ActionRunner
from worker.checkpoints.store import PartitionCheckpoint
from worker.core.partition import PartitionCore
from worker.core.state import SavedState
from worker.driver import PartitionDriver
from worker.errors import PartitionFailed
from worker.events import Message, Position
from worker.live.handoff import Inbox, PartitionStatus
from worker.settings import CheckpointSettings, DriverSettings
from worker.telemetry.spans import NO_TRACER, Tracer

log = structlog.get_logger("worker.live_partition")

#: The caps of rules that remember: what each leaves out is counted under its name, and its setting.
_MEMORY_CAPS = (
    ("expectations_forgotten", "WORKER_MAX_PENDING"),
    ("groups_forgotten", "WORKER_MAX_PENDING"),
    ("group_events_unlisted", "WORKER_GROUP_EVENTS"),
)


class LivePartition:
    def __init__(
        self,
        core: PartitionCore,
        runner: ActionRunner | None,
        driver: DriverSettings,
        checkpoint: PartitionCheckpoint,
        checkpoints: CheckpointSettings,
        inbox: Inbox,
        tracer: Tracer = NO_TRACER,
    ) -> None:
        """``tracer``: the spans of its events and checkpoint writes (NO_TRACER: none)."""
        self.core = core
        self._tracer = tracer
        self.partition_id = core.partition_id
        self._runner = runner
        self._driver = driver
        self._checkpoint = checkpoint
        self._checkpoints = checkpoints
        self.inbox = inbox
        #: Foreign topics already logged (events.foreign_topic), and caps (remember.cap_reached).
        self._told: set[str] = set()
        self._caps_told: dict[str, int] = {}
        #: Messages handed in and not yet fed.
        self._pending: list[Message] = []
        self._ticked = False
        self._closing = False
        self._wake = asyncio.Event()
        self._grace = 0.0
        self._task: asyncio.Task[None] | None = None
        self._written: Position | None = core.checkpoint
        self._written_at = time.monotonic()
        #: Whether a checkpoint was written here since the partition opened.
        self._wrote = False
        #: Fired memos finished (the core's count) as last written.
        self._written_memory = core.memory_settled
        #: The checkpoint write in flight, if any.
        self._writing: asyncio.Task[None] | None = None
        #: Messages the task has taken in since the start.
        self.taken = 0
        #: Checkpoints written, and failed attempts to write one.
        self.checkpoint_writes = 0
        self.checkpoint_failures = 0

    @property
    def stopped(self) -> bool:
        """The task has ended without being closed: a fatal error (logged as ``partition.failed``)."""
        task = self._task
        return task is not None and task.done() and not self._closing

    def status(self) -> PartitionStatus:
        core = self.core
        return PartitionStatus(
            self.partition_id,
            core.buffered,
            core.open_messages,
            time.monotonic() - self._written_at,
            self.checkpoint_writes,
            self.checkpoint_failures,
            core.checkpoint != self._written,
            self.taken,
            self.stopped,
        )

    def start(self) -> None:
        bound = structlog.contextvars.bound_contextvars(partition_id=self.partition_id)
        with bound:  # the task copies the context, so every log line of the partition names it
            self._task = asyncio.create_task(self._main(), name=f"partition-{self.partition_id}")

    def offer(self, messages: list[Message]) -> None:
        """Hand in a batch (empty: nothing arrived in time) without waiting; the inbox bounds what is pending.

        The SDK hands batches of whatever arrived, often one event: this only appends, and the
        partition's task takes everything pending at once.
        """
        task = self._task
        if task is None or task.done():
            raise PartitionFailed(f"partition {self.partition_id}: its pipeline has stopped")
        if messages:
            self._pending += messages
        else:
            self._ticked = True
        self._wake.set()

    async def close(self, grace: float, *, write: bool) -> None:
        """Stop: let in-flight actions finish within ``grace`` seconds, then write the final checkpoint.

        ``write`` False (ownership lost to another worker): write nothing, so as not to overwrite the
        new owner's checkpoint; whatever was in flight is redone there, with the same idempotency keys.
        Batches handed in but not yet fed are dropped: they are not finished, so no checkpoint passes them.
        Events still held in the reorder buffer are counted as handed over, and stay unfinished too.
        """
        with structlog.contextvars.bound_contextvars(partition_id=self.partition_id):
            await self._close(grace, write=write)

    async def _close(self, grace: float, *, write: bool) -> None:
        task = self._task
        if task is None:
            return
        self._grace = grace if write else 0.0
        self._closing = True
        self._pending = []
        self._wake.set()
        with contextlib.suppress(PartitionFailed):
            await task
        handed = self.core.hand_over()
        if handed:
            log.info("partition.handed_over", events=handed, checkpointed=write)
        writing = self._writing
        if writing is not None:
            if not write:
                writing.cancel()  # lost to another worker: write no more (forward only, if it lands still)
            await asyncio.wait([writing])
            if not writing.cancelled():
                writing.result()
        if write and (due := self._due(force=True)) is not None:
            await self._store(*due)

    def _tell_foreign_topics(self) -> None:
        """Say once per topic that its events are skipped: a rules table whose ``workspaces`` was left
        as an example, or names another workspace, would otherwise skip everything in silence."""
        accepted = sorted(self.core.table.topics)
        for topic in self.core.tally.foreign_topics:
            if topic not in self._told:
                self._told.add(topic)
                log.warning(
                    "events.foreign_topic",
                    partition_id=self.partition_id,
                    topic=topic,
                    accepted=accepted,
                    advice="the rules' workspaces list admits only these topics: add this workspace's resource id "
                    "if its events should be acted on",
                )

    def _tell_caps(self) -> None:
        """Say when a cap of rules that remember left something out: counted, and never silent."""
        evictions = self.core.tally.evictions
        for cap, setting in _MEMORY_CAPS:
            count = evictions[cap]
            if count > self._caps_told.get(cap, 0):
                self._caps_told[cap] = count
                log.warning("remember.cap_reached", cap=cap, total=count, setting=setting)

    async def _main(self) -> None:
        # Live, an event's age runs to now; without a runner (a dry run), each planned action is logged.
        tracer = None if self._tracer is NO_TRACER else self._tracer
        driver = PartitionDriver(self.core, self._runner, self._driver, clock=time.time, announce=True, tracer=tracer)
        try:
            async with driver:
                wake, inbox = self._wake, self.inbox
                while True:
                    await self._sleep(wake)
                    wake.clear()
                    if self._closing:
                        break
                    batch, self._pending = self._pending, []
                    now = time.monotonic()
                    if batch:
                        self.taken += len(batch)
                        inbox.take(len(batch))
                        await driver.feed_many(batch, now)
                        if len(self.core.tally.foreign_topics) > len(self._told):
                            self._tell_foreign_topics()
                    quiet = self._ticked and not batch
                    self._ticked = False
                    driver.tick(now)
                    self._tell_caps()
                    # A partition with nothing to read writes its checkpoint at once (at most once a
                    # receive wait): a quiet hub is not left with work done but not checkpointed.
                    self._start_write(force=quiet)
                if self._grace > 0:
                    try:
                        async with asyncio.timeout(self._grace):
                            await driver.drain()
                    except TimeoutError:
                        log.warning("partition.grace_expired", open_messages=self.core.open_messages)
                driver.cancel()  # what still runs stays unfinished: redone after a restart
        except Exception as exc:
            error = exc.exceptions[0] if isinstance(exc, ExceptionGroup) else exc
            log.exception("partition.failed", error=str(error))
            raise PartitionFailed(f"partition {self.partition_id}: {error}") from exc
        finally:
            if not self._closing:
                self.inbox.fail()

    async def _sleep(self, wake: asyncio.Event) -> None:
        """Wait for a batch, a tick or the close; or until the reorder buffer's idle release is due,
        so that the last events of a burst wait the window, not the window and a receive wait; or
        until an expectation or a group falls due."""
        core = self.core
        due = core.idle_release_at
        remembered = core.memory_due  # on the wall clock
        if remembered is not None:
            # An expectation or group falls due: wake for it (on the event loop's clock).
            at = time.monotonic() + max(0.0, remembered - time.time())
            due = at if due is None else min(due, at)
        if due is None:
            await wake.wait()
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, due - time.monotonic())):
                await wake.wait()

    def _due(self, *, force: bool) -> tuple[Position, SavedState, int] | None:
        """The position and the state to write now, taken together, if a checkpoint is due; and the
        fired memos finished that the state includes (the core's count)."""
        core = self.core
        position = core.checkpoint
        written = self._written
        remembered = core.memory_settled != self._written_memory
        if position is None or (position == written and not remembered):
            return None
        settings = self._checkpoints
        due = (
            force
            or remembered  # an expiry or notification finished: saved at once, so a restart does not repeat it
            or not self._wrote  # the partition's first checkpoint here
            or written is None
            or time.monotonic() - self._written_at >= settings.interval
            or (position.sequence_number or 0) - (written.sequence_number or 0) >= settings.events
        )
        if not due:
            return None
        state = core.state(max_ids=settings.state_ids, max_subjects=settings.state_subjects)
        return position, state, core.memory_settled

    def _start_write(self, *, force: bool) -> None:
        """Write the checkpoint in a task of its own if one is due, unless a write is in flight."""
        writing = self._writing
        if writing is not None:
            if not writing.done():
                return
            writing.result()  # a defect in the write surfaces here, and stops the partition
        due = self._due(force=force)
        if due is not None:
            self._writing = asyncio.create_task(self._store(*due), name=f"checkpoint-{self.partition_id}")

    async def _store(self, position: Position, state: SavedState, settled: int) -> None:
        with self._tracer.checkpoint(self.partition_id, position.sequence_number) as span:
            try:
                async with asyncio.timeout(self._checkpoints.timeout):
                    # The same position again only when the state changed without it.
                    written = await self._checkpoint.write(position, state, refresh=position == self._written)
            except (AzureError, OSError, TimeoutError) as exc:
                self.checkpoint_failures += 1
                error = str(exc) or f"no answer within {self._checkpoints.timeout:g} s"
                span.failed(error)
                log.warning("checkpoint.failed", sequence_number=position.sequence_number, error=error)
                return
            span.set("azml_worker.checkpoint.written", written)
        self._written, self._written_at, self._written_memory = position, time.monotonic(), settled
        self._wrote = True
        if written:
            self.checkpoint_writes += 1
            log.debug("checkpoint.written", sequence_number=position.sequence_number, offset=position.offset)
        else:
            log.debug("checkpoint.behind", sequence_number=position.sequence_number)  # the store is further on
