"""The live source: the SDK's ``EventHubConsumerClient``, balancing partitions through the checkpoint store.

The only module that reads from ``azure.eventhub``: :class:`HubReceiver` turns each ``EventData``
into a :class:`~worker.live.handoff.Delivery` and hands the owned partitions' batches to a
:class:`~worker.live.handoff.PartitionHost`, which runs a pipeline per partition. Ownership uses an
owner level, so a partition taken by another worker detaches here at once.

Each owned partition's lag (the events enqueued after the last one delivered) comes from the hub's
partition properties, read every 30 s (as they are to find stalled receivers) rather than with every
delivery: asking the SDK to track the last enqueued event costs a tenth of this process's CPU per
event (``bench/bench_worker.py``). A partition that delivers nothing while it has lag is recycled:
its receiver is closed and reopened from the checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import AzureError
from azure.eventhub import CloseReason, EventData
from azure.eventhub.aio import CheckpointStore, EventHubConsumerClient
from azure.eventhub.aio._eventprocessor.partition_context import PartitionContext
from azure.eventhub.exceptions import EventHubError

from worker.checkpoints.standing import PartitionEnd, latest
from worker.core.accounting import Tally
from worker.errors import ReceiverStalled
from worker.live.claims import SettlingStore
from worker.live.handoff import Delivery, PartitionHost
from worker.live.metrics import PartitionGauges
from worker.moments import StartPosition
from worker.settings import HubSettings

log = structlog.get_logger("worker.receiver")

# The Event Hubs message annotations of a received event.
_OFFSET = b"x-opt-offset"
_SEQUENCE_NUMBER = b"x-opt-sequence-number"
_ENQUEUED_TIME = b"x-opt-enqueued-time"
#: Seconds between two readings of the partitions' last enqueued events (at most; see ``_watch``).
_LAG_PERIOD = 30.0


def delivery(event: EventData) -> Delivery:
    """What the pipeline needs of one received event (the SDK's types stop here).

    Read from the AMQP message itself: the ``EventData`` properties convert each value on every access.
    """
    message = event.raw_amqp_message
    annotations = message.annotations or {}
    raw = message.body
    body = raw if isinstance(raw, bytes) else _join(raw)
    offset = annotations.get(_OFFSET)
    properties = message.application_properties
    return Delivery(
        body,
        offset.decode() if isinstance(offset, bytes) else offset,
        annotations.get(_SEQUENCE_NUMBER),
        annotations.get(_ENQUEUED_TIME),
        properties or None,  # decoded in the pipeline, if read at all
    )


def _join(raw: Any) -> bytes:
    try:
        return b"".join(raw)
    except TypeError:
        return repr(raw).encode()  # not a data body: the decoder reports it as invalid


def starting_position(start: StartPosition, now: datetime) -> str | datetime:
    """The SDK's ``starting_position`` for partitions without a checkpoint."""
    at = start.at(now)
    if at == "earliest":
        return "-1"
    if at == "latest":
        return "@latest"
    return at


def client_for(
    hub: HubSettings, checkpoints: CheckpointStore, credential: AsyncTokenCredential | None
) -> EventHubConsumerClient:
    """The SDK's consumer client for ``hub``, balancing through ``checkpoints``."""
    options: dict[str, Any] = {
        "consumer_group": hub.consumer_group,
        "eventhub_name": hub.eventhub,
        "checkpoint_store": checkpoints,
        "load_balancing_interval": hub.interval,
        "partition_ownership_expiration_interval": hub.expiry,
        "load_balancing_strategy": hub.strategy,
    }
    if hub.connection_string is not None:
        return EventHubConsumerClient.from_connection_string(hub.connection_string, **options)
    if hub.namespace is None or credential is None:
        raise ValueError("a consumer client needs a connection string, or a namespace and a credential")
    return EventHubConsumerClient(hub.namespace, credential=credential, **options)


@dataclass(slots=True)
class _Receiving:
    """What the receiver knows of one owned partition's receiver."""

    #: Monotonic time of the last delivery, and the last sequence number delivered.
    last_delivery: float
    last_sequence_number: int | None = None
    #: The last enqueued sequence number the hub reported (polled), for the lag; None until read.
    last_enqueued: int | None = None
    #: Messages handed to the host since the partition was opened.
    handed: int = 0
    #: Set to recycle a stalled receiver: the next callback raises, and the SDK reopens the link.
    recycle: bool = False
    #: Set when the receiver was found stalled; the partition is then closed as on shutdown.
    stalled: bool = False
    #: Set once the partition acts on what it reads (held until then: see :mod:`worker.live.claims`).
    settled: bool = False

    @property
    def lag(self) -> int | None:
        """Events enqueued on the partition after the last one delivered here, when known."""
        if self.last_enqueued is None:
            return None
        last = self.last_sequence_number
        return max(0, self.last_enqueued - (last if last is not None else -1))


class HubReceiver:
    """Receives the owned partitions of one consumer client into a host; see the module docstring."""

    def __init__(
        self,
        client: EventHubConsumerClient,
        hub: HubSettings,
        host: PartitionHost,
        grace: float,
        *,
        store: CheckpointStore | None = None,
        claims: SettlingStore | None = None,
    ) -> None:
        """``store``: the client's checkpoint store, read to log where each claimed partition starts;
        ``claims``: the store the client balances through, which says when a claimed partition acts."""
        self._client = client
        self._hub = hub
        self._store = store
        self._claims = claims
        #: Where partitions without a checkpoint start: resolved once, when the run starts.
        self._start: str | datetime = "-1"
        self._host = host
        self._grace = grace
        self._receiving: dict[str, _Receiving] = {}
        #: Set once the hub answered; cleared when it stops answering.
        self.connected = False
        #: The hub's partitions, known once it answered.
        self.partition_count = 0
        #: Monotonic time of the last event delivered to any partition (or of the start).
        self.last_activity = time.monotonic()

    # --- what the metrics and the run loop read ----------------------------------------------

    def tally(self) -> Tally:
        return self._host.tally()

    def partitions(self) -> Iterable[PartitionGauges]:
        receiving = self._receiving
        for status in self._host.statuses():
            each = receiving.get(status.partition_id)
            if each is None:
                yield PartitionGauges(status, None)
            else:
                yield PartitionGauges(status, each.lag, each.handed, settling=not each.settled)

    @property
    def idle(self) -> bool:
        """Every partition of the hub owned here, everything handed in taken and finished, every
        checkpoint written, no lag known (see :meth:`settled`, which reads the lag afresh).

        Meant for a worker alone on its consumer group (demos, catching up): a partition owned by
        another worker, or by a dead one whose ownership has not expired yet, keeps this false.
        """
        statuses = {status.partition_id: status for status in self._host.statuses()}
        receiving = self._receiving
        return (
            bool(receiving)
            and len(receiving) == self.partition_count
            and all(
                (status := statuses.get(partition_id)) is not None
                and status.taken == each.handed
                and status.open_messages == 0
                and not status.pending_checkpoint
                and not each.lag
                for partition_id, each in receiving.items()
            )
        )

    async def settled(self) -> bool:
        """:attr:`idle`, with every partition's lag read from the hub now and found to be zero (the hub
        is asked only when :attr:`idle` already holds)."""
        if not self.idle or not await self._poll():
            return False
        return self.idle and all(each.lag == 0 for each in self._receiving.values())

    def reload(self) -> None:
        """Load the rules again for every event released from now on (an invalid table is kept out)."""
        self._host.reload()

    # --- running -----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Receive until ``stop`` is set; then close the partitions (with the grace) and release them."""
        properties = await self._client.get_eventhub_properties()
        self.connected = True
        self.partition_count = len(properties["partition_ids"])
        if self._claims is not None:
            self._claims.partition_count = self.partition_count
        hub = self._hub
        self._start = starting_position(hub.start, datetime.now(UTC))
        log.info(
            "receiver.started",
            eventhub=hub.eventhub,
            consumer_group=hub.consumer_group,
            partitions=self.partition_count,
            start_position=str(hub.start),
        )
        receiving = asyncio.create_task(
            self._client.receive_batch(
                self._on_batch,
                on_partition_initialize=self._on_initialize,
                on_partition_close=self._on_close,
                on_error=self._on_error,
                max_batch_size=hub.batch_size,
                max_wait_time=hub.max_wait,
                prefetch=hub.prefetch,
                starting_position=self._start,
            ),
            name="receive",
        )
        watching = asyncio.create_task(self._watch(), name="watch")
        failing = asyncio.create_task(self._host.failure(), name="host")
        try:
            stopping = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait((receiving, stopping, failing), return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            for task in (receiving, failing):
                if task in done:
                    task.result()  # raises what stopped it
        finally:
            watching.cancel()
            failing.cancel()
            await self._client.close()  # closes each partition (our grace runs there) and releases it
            receiving.cancel()  # what is left of it is the balancing loop's sleep
            with contextlib.suppress(asyncio.CancelledError):
                await receiving
            log.info("receiver.stopped")

    async def _on_initialize(self, context: PartitionContext) -> None:
        partition_id = context.partition_id
        if self._claims is not None:
            await self._claims.opening(partition_id)  # taken meanwhile: cancelled here, never opened
        each = self._receiving[partition_id] = _Receiving(time.monotonic())
        self.last_activity = time.monotonic()
        start = await self._start_of(context)
        if isinstance(sequence := start.get("sequence_number"), int):
            each.last_sequence_number = sequence  # the lag, before the first delivery
        if self._claims is not None and self._claims.owner_id:
            start["owner_id"] = self._claims.owner_id  # as the ownership records (checkpoints show) name it
        log.info("partition.claimed", partition_id=partition_id, **start)
        await self._host.open(partition_id)

    async def _start_of(self, context: PartitionContext) -> dict[str, object]:
        """Where the partition starts, and why: its checkpoint, or the start position (none)."""
        if self._store is None:
            return {}
        try:
            async with asyncio.timeout(10):
                listed = await self._store.list_checkpoints(
                    context.fully_qualified_namespace, context.eventhub_name, context.consumer_group
                )
        except (AzureError, OSError, TimeoutError) as exc:
            return {"start": "unknown", "error": str(exc) or "the checkpoint store did not answer"}
        for checkpoint in listed:
            # As the SDK decides: a checkpoint with an offset wins over the start position.
            if checkpoint.get("partition_id") == context.partition_id and checkpoint.get("offset"):
                return {
                    "start": "checkpoint",
                    "sequence_number": checkpoint.get("sequence_number"),
                    "offset": checkpoint.get("offset"),
                }
        start = self._start
        at = start.isoformat() if isinstance(start, datetime) else {"-1": "earliest", "@latest": "latest"}[start]
        found: dict[str, object] = {"start": "start_position", "start_position": str(self._hub.start), "position": at}
        if start != "-1":
            try:
                async with asyncio.timeout(10):
                    found.update(await self._hold_start(context, self._store))
            except (EventHubError, AzureError, OSError, TimeoutError) as exc:
                found["held"] = f"not recorded: {exc or 'no answer'}"
        return found

    async def _hold_start(self, context: PartitionContext, store: CheckpointStore) -> dict[str, object]:
        """Record where a partition that starts after the events it holds begins, as its checkpoint.

        Otherwise, until its first event, it has no checkpoint, and a restart would start from the
        start position again: at ``latest``, past the events enqueued while the worker was down. With
        nothing after the start position (a time), the checkpoint is the last event enqueued; with
        nothing at all, the start of the partition. A partition with events after a start time needs
        none: the first of them is checkpointed as soon as it is finished.
        """
        end = PartitionEnd.of(await self._client.get_partition_properties(context.partition_id))
        start = self._start
        if isinstance(start, datetime) and end.last_enqueued is not None and end.last_enqueued > start:
            return {}
        held = latest(end)  # where `checkpoints reset --to latest` puts it
        await store.update_checkpoint(
            {
                "fully_qualified_namespace": context.fully_qualified_namespace,
                "eventhub_name": context.eventhub_name,
                "consumer_group": context.consumer_group,
                "partition_id": context.partition_id,
                "offset": held.offset,
                "sequence_number": held.sequence_number,
            }
        )
        return {"held": "checkpoint", "sequence_number": held.sequence_number}

    async def _on_batch(self, context: PartitionContext, events: list[EventData]) -> None:
        partition_id = context.partition_id
        each = self._receiving[partition_id]
        if each.recycle:
            each.recycle = False
            raise ReceiverStalled(f"partition {partition_id}: no delivery for {self._hub.stall_timeout}s with lag")
        if not each.settled:
            if self._claims is not None:
                await self._claims.settled(partition_id)  # lost meanwhile: cancelled here, having acted on nothing
            each.settled = True
            each.last_delivery = time.monotonic()
        batch = [delivery(event) for event in events]
        if batch:
            each.last_delivery = self.last_activity = time.monotonic()
            each.last_sequence_number = batch[-1].sequence_number
            each.handed += len(batch)
        await self._host.put(partition_id, batch)

    async def _on_close(self, context: PartitionContext, reason: CloseReason) -> None:
        partition_id = context.partition_id
        each = self._receiving.pop(partition_id, None)
        if each is None:
            return
        # Shutting down, or a receiver recycled here: finish what runs and checkpoint. Lost to
        # another worker: write nothing (its checkpoint would be overwritten); it redoes our in-flight.
        write = reason is CloseReason.SHUTDOWN or each.stalled
        await self._host.close(partition_id, self._grace, write=write)
        log.info(
            "partition.closed",
            partition_id=partition_id,
            reason=reason.name.lower(),
            checkpointed=write,
            settled=each.settled,
        )

    async def _on_error(self, context: PartitionContext | None, error: Exception) -> None:
        partition_id = context.partition_id if context is not None else None
        log.warning("receiver.error", partition_id=partition_id, error=str(error), kind=type(error).__name__)

    async def _watch(self) -> None:
        """Poll the partitions' last enqueued events: lag for the metrics, and stalled receivers."""
        period = min(self._hub.stall_timeout / 4, _LAG_PERIOD)
        while True:
            await asyncio.sleep(period)
            if not await self._poll():
                continue
            for partition_id, each in list(self._receiving.items()):
                silent = time.monotonic() - each.last_delivery
                if each.settled and each.lag and silent > self._hub.stall_timeout and not each.stalled:
                    log.warning("partition.stalled", partition_id=partition_id, lag=each.lag, silent_seconds=silent)
                    each.stalled = each.recycle = True

    async def _poll(self) -> bool:
        """Read each owned partition's last enqueued sequence number from the hub; False when it does
        not answer."""
        for partition_id, each in list(self._receiving.items()):
            try:
                properties = await self._client.get_partition_properties(partition_id)
            except (EventHubError, AzureError) as exc:
                self.connected = False
                log.warning("receiver.hub_unreachable", error=str(exc))
                return False
            self.connected = True
            each.last_enqueued = properties["last_enqueued_sequence_number"]
        return True
