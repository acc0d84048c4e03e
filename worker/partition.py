"""One owned partition of the live worker: its flow and pipeline, run in a task of their own.

Batches come in through :meth:`PartitionRun.put` (waiting when the partition is busy, which is the
back-pressure on the receiver) or :meth:`PartitionRun.offer` (for a caller that bounds them
itself). The run's task feeds them to the pipeline, passes the time for the idle release, and
writes the checkpoint on an interval or after a number of events, and when nothing arrived for a
receive wait: the pipeline state first, then the checkpoint, never past an unfinished event.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from azure.core.exceptions import AzureError
from azure.eventhub.aio import CheckpointStore

from worker.actions.runner import ActionRunner
from worker.checkpoints import Scope, StateStore
from worker.config import CheckpointSettings
from worker.errors import WorkerError
from worker.events import Message, Position
from worker.flow import PartitionFlow
from worker.pipeline import DriveSettings, PartitionPipeline

log = structlog.get_logger("worker.partition")


class PartitionFailed(WorkerError):
    """A partition's pipeline stopped on a fatal error (a dead letter that cannot be written)."""


@dataclass(frozen=True, slots=True)
class Checkpointing:
    """Where and how often one partition's checkpoint is written."""

    scope: Scope
    checkpoints: CheckpointStore
    states: StateStore
    settings: CheckpointSettings


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    """What one open partition reports: to the metrics, and to tell when the worker is idle."""

    partition_id: str
    buffered: int
    open_messages: int
    checkpoint_age: float
    checkpoint_writes: int
    checkpoint_failures: int
    #: The checkpoint position has moved past the one last written.
    pending_checkpoint: bool
    #: Messages the pipeline has taken in since the partition was opened.
    taken: int
    #: The pipeline has stopped on a fatal error.
    failed: bool = False


class PartitionRun:
    def __init__(
        self,
        flow: PartitionFlow,
        runner: ActionRunner | None,
        drive: DriveSettings,
        checkpointing: Checkpointing,
        *,
        on_taken: Callable[[int], None] | None = None,
    ) -> None:
        """``on_taken``: told how many messages the task took in each time it takes the pending ones."""
        self.flow = flow
        self.partition_id = flow.partition_id
        self._runner = runner
        self._drive = drive
        self._checkpointing = checkpointing
        self._on_taken = on_taken
        #: Messages handed in and not yet fed; :meth:`put` waits while there are ``_limit`` of them.
        self._pending: list[Message] = []
        self._limit = max(drive.inbox, 1)
        self._ticked = False
        self._closing = False
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._grace = 0.0
        self._task: asyncio.Task[None] | None = None
        self._written: Position | None = flow.checkpoint
        self._written_at = time.monotonic()
        #: Messages the task has taken in since the start.
        self.taken = 0
        #: Checkpoints written, and failed attempts to write one.
        self.checkpoint_writes = 0
        self.checkpoint_failures = 0

    @property
    def checkpoint_age(self) -> float:
        return time.monotonic() - self._written_at

    @property
    def pending_checkpoint(self) -> bool:
        """The checkpoint position has moved past the one last written."""
        return self.flow.checkpoint != self._written

    @property
    def stopped(self) -> bool:
        """The task has ended without being closed: a fatal error (logged as ``partition.failed``)."""
        task = self._task
        return task is not None and task.done() and not self._closing

    def status(self) -> PartitionStatus:
        flow = self.flow
        return PartitionStatus(
            self.partition_id,
            flow.buffered,
            flow.open_messages,
            self.checkpoint_age,
            self.checkpoint_writes,
            self.checkpoint_failures,
            self.pending_checkpoint,
            self.taken,
            self.stopped,
        )

    def start(self) -> None:
        bound = structlog.contextvars.bound_contextvars(partition_id=self.partition_id)
        with bound:  # the task copies the context, so every log line of the partition names it
            self._task = asyncio.create_task(self._main(), name=f"partition-{self.partition_id}")

    def offer(self, messages: list[Message]) -> None:
        """Hand in a batch (empty: nothing arrived in time) without waiting; the caller bounds what is pending.

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

    async def put(self, messages: list[Message]) -> None:
        """:meth:`offer`, then wait while the partition is busy (the back-pressure on the receiver)."""
        self.offer(messages)
        if len(self._pending) < self._limit:
            return
        task = self._task
        assert task is not None  # noqa: S101 - offer() checked it
        self._room.clear()
        room = asyncio.ensure_future(self._room.wait())
        done, _ = await asyncio.wait((room, task), return_when=asyncio.FIRST_COMPLETED)
        if room not in done:
            room.cancel()
            raise PartitionFailed(f"partition {self.partition_id}: its pipeline has stopped")

    async def close(self, grace: float, *, write: bool) -> None:
        """Stop: let in-flight actions finish within ``grace`` seconds, then write the final checkpoint.

        ``write`` False (ownership lost to another worker): write nothing, so as not to overwrite the
        new owner's checkpoint; whatever was in flight is redone there, with the same idempotency keys.
        Batches handed in but not yet fed are dropped: they are not finished, so no checkpoint passes them.
        """
        task = self._task
        if task is None:
            return
        self._grace = grace if write else 0.0
        self._closing = True
        self._pending = []
        self._wake.set()
        with contextlib.suppress(PartitionFailed):
            await task
        if write:
            await self._write(force=True)

    async def _main(self) -> None:
        pipeline = PartitionPipeline(self.flow, self._runner, self._drive)
        try:
            async with pipeline:
                wake = self._wake
                while True:
                    await self._sleep(wake)
                    wake.clear()
                    if self._closing:
                        break
                    batch, self._pending = self._pending, []
                    self._room.set()
                    now = time.monotonic()
                    if batch:
                        self.taken += len(batch)
                        if self._on_taken is not None:
                            self._on_taken(len(batch))
                        await pipeline.feed_many(batch, now)
                    quiet = self._ticked and not batch
                    self._ticked = False
                    pipeline.tick(now)
                    # A partition with nothing to read writes its checkpoint at once (at most once a
                    # receive wait): a quiet hub is not left with work done but not checkpointed.
                    await self._write(force=quiet)
                if self._grace > 0:
                    try:
                        async with asyncio.timeout(self._grace):
                            await pipeline.drain()
                    except TimeoutError:
                        log.warning("partition.grace_expired", open_messages=self.flow.open_messages)
                pipeline.cancel()  # what still runs stays unfinished: redone after a restart
        except Exception as exc:
            error = exc.exceptions[0] if isinstance(exc, ExceptionGroup) else exc
            log.exception("partition.failed", error=str(error))
            raise PartitionFailed(f"partition {self.partition_id}: {error}") from exc

    async def _sleep(self, wake: asyncio.Event) -> None:
        """Wait for a batch, a tick or the close; or until the reorder buffer's idle release is due,
        so that the last events of a burst wait the window, not the window and a receive wait."""
        due = self.flow.idle_release_at
        if due is None:
            await wake.wait()
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, due - time.monotonic())):
                await wake.wait()

    async def _write(self, *, force: bool) -> None:
        position = self.flow.checkpoint
        written = self._written
        if position is None or position == written:
            return
        settings = self._checkpointing.settings
        due = (
            force
            or written is None  # the partition's first checkpoint here
            or time.monotonic() - self._written_at >= settings.interval
            or (position.sequence_number or 0) - (written.sequence_number or 0) >= settings.events
        )
        if not due:
            return
        # Taken with the position, before any await.
        state = self.flow.state(max_ids=settings.state_ids, max_subjects=settings.state_subjects)
        checkpointing = self._checkpointing
        scope = checkpointing.scope
        try:
            await checkpointing.states.save(self.partition_id, state)
            await checkpointing.checkpoints.update_checkpoint(
                {
                    "fully_qualified_namespace": scope.namespace,
                    "eventhub_name": scope.eventhub,
                    "consumer_group": scope.consumer_group,
                    "partition_id": self.partition_id,
                    "offset": position.offset,
                    "sequence_number": position.sequence_number,
                }
            )
        except (AzureError, OSError) as exc:
            self.checkpoint_failures += 1
            log.warning("checkpoint.failed", sequence_number=position.sequence_number, error=str(exc))
            return
        self._written, self._written_at = position, time.monotonic()
        self.checkpoint_writes += 1
        log.debug("checkpoint.written", sequence_number=position.sequence_number, offset=position.offset)
