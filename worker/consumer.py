"""The live source: the SDK's ``EventHubConsumerClient``, balancing partitions through the checkpoint store.

The only module that reads from ``azure.eventhub``: it turns ``EventData`` into the core's
:class:`~worker.events.Message` records and runs one :class:`~worker.partition.PartitionRun` per
owned partition. Ownership uses an owner level, so a partition taken by another worker detaches
here at once. A partition that delivers nothing while the hub reports events beyond the last one
delivered is recycled: its receiver is closed and reopened from the checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from typing import Any

import structlog
from azure.core.exceptions import AzureError
from azure.eventhub import CloseReason, EventData, parse_connection_string
from azure.eventhub.aio import EventHubConsumerClient
from azure.eventhub.aio._eventprocessor.partition_context import PartitionContext
from azure.eventhub.exceptions import EventHubError
from azure.identity.aio import DefaultAzureCredential

from worker.accounting import Tally
from worker.actions.runner import ActionRunner
from worker.checkpoints import Scope, Stores
from worker.config import CheckpointSettings, HubSettings
from worker.errors import WorkerError
from worker.events import Message, new_message
from worker.flow import FlowSettings, PartitionFlow, PartitionState, StateError
from worker.metrics import PartitionGauges
from worker.partition import Checkpointing, PartitionRun
from worker.pipeline import DriveSettings
from worker.rules import RulesTable

log = structlog.get_logger("worker.consumer")


class ReceiverStalled(WorkerError):
    """A partition delivered nothing for the stall timeout while it had events to deliver."""


def to_message(event: EventData, partition_id: str) -> Message:
    """The core's record of one received event (the SDK's types stop here)."""
    raw = event.body
    body = raw if isinstance(raw, bytes) else _join(raw)
    properties = event.properties
    return new_message(
        body,
        partition_id,
        event.offset,
        event.sequence_number,
        event.enqueued_time,
        {str(_text(k)): _text(v) for k, v in properties.items()} if properties else {},
    )


def _join(raw: Any) -> bytes:
    try:
        return b"".join(raw)
    except TypeError:
        return repr(raw).encode()  # not a data body: the decoder reports it as invalid


def _text(value: object) -> object:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def client_for(hub: HubSettings, stores: Stores, credential: DefaultAzureCredential | None) -> EventHubConsumerClient:
    options: dict[str, Any] = {
        "consumer_group": hub.consumer_group,
        "eventhub_name": hub.eventhub,
        "checkpoint_store": stores.checkpoints,
        "load_balancing_interval": hub.interval,
        "partition_ownership_expiration_interval": hub.expiry,
        "load_balancing_strategy": hub.strategy,
    }
    if hub.connection_string is not None:
        return EventHubConsumerClient.from_connection_string(hub.connection_string, **options)
    if hub.namespace is None or credential is None:
        raise ValueError("a consumer client needs a connection string, or a namespace and a credential")
    return EventHubConsumerClient(hub.namespace, credential=credential, **options)


def namespace_of(hub: HubSettings) -> str:
    """The namespace as the SDK's event processor names it in the checkpoint store (host[:port])."""
    if hub.connection_string is not None:
        return parse_connection_string(hub.connection_string).fully_qualified_namespace
    assert hub.namespace is not None  # noqa: S101 - the settings ensure one
    return hub.namespace


class HubConsumer:
    """Runs the owned partitions of one consumer client; see the module docstring."""

    def __init__(
        self,
        client: EventHubConsumerClient,
        hub: HubSettings,
        scope: Scope,
        table: RulesTable,
        runner: ActionRunner | None,
        stores: Stores,
        checkpoint: CheckpointSettings,
        flow: FlowSettings,
        drive: DriveSettings,
        grace: float,
    ) -> None:
        self._client = client
        self._hub = hub
        self.table = table
        self._runner = runner
        self._flow_settings = flow
        self._drive = drive
        self._grace = grace
        self._checkpointing = Checkpointing(scope, stores.checkpoints, stores.states, checkpoint)
        self._runs: dict[str, PartitionRun] = {}
        self._retired = Tally()
        #: Set once the hub answered; cleared when it stops answering.
        self.connected = False
        #: The hub's partitions, known once it answered.
        self.partition_count = 0
        #: Monotonic time of the last event delivered to any partition (or of the start).
        self.last_activity = time.monotonic()

    # --- what the metrics and the run loop read ----------------------------------------------

    def tally(self) -> Tally:
        total = Tally()
        total.add(self._retired)
        for run in list(self._runs.values()):
            total.add(run.flow.counts())
        return total

    def partitions(self) -> Iterable[PartitionGauges]:
        for run in list(self._runs.values()):
            yield PartitionGauges(
                run.partition_id,
                run.flow.buffered,
                run.flow.open_messages,
                run.checkpoint_age,
                run.checkpoint_writes,
                run.checkpoint_failures,
                run.lag,
            )

    @property
    def idle(self) -> bool:
        """Every partition of the hub owned here, nothing held or in flight, every checkpoint written.

        Meant for a worker alone on its consumer group (demos, catching up): a partition owned by
        another worker, or by a dead one whose ownership has not expired yet, keeps this false.
        """
        runs = list(self._runs.values())
        return (
            len(runs) == self.partition_count
            and bool(runs)
            and all(run.flow.open_messages == 0 and not run.pending_checkpoint and not run.lag for run in runs)
        )

    def reload(self, table: RulesTable) -> None:
        """Use ``table`` for every event released from now on."""
        self.table = table
        for run in self._runs.values():
            run.flow.table = table

    # --- running -----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Receive until ``stop`` is set; then close the partitions (with the grace) and release them."""
        properties = await self._client.get_eventhub_properties()
        self.connected = True
        self.partition_count = len(properties["partition_ids"])
        log.info(
            "consumer.started",
            eventhub=self._hub.eventhub,
            consumer_group=self._hub.consumer_group,
            partitions=self.partition_count,
        )
        hub = self._hub
        receiving = asyncio.create_task(
            self._client.receive_batch(
                self._on_batch,
                on_partition_initialize=self._on_initialize,
                on_partition_close=self._on_close,
                on_error=self._on_error,
                max_batch_size=hub.batch_size,
                max_wait_time=hub.max_wait,
                prefetch=hub.prefetch,
                track_last_enqueued_event_properties=True,
                starting_position="-1",
            ),
            name="receive",
        )
        watching = asyncio.create_task(self._watch(), name="watch")
        try:
            stopping = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait((receiving, stopping), return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if receiving in done:
                receiving.result()  # raises what stopped it
        finally:
            watching.cancel()
            await self._client.close()  # closes each partition (our grace runs there) and releases it
            receiving.cancel()  # what is left of it is the balancing loop's sleep
            with contextlib.suppress(asyncio.CancelledError):
                await receiving
            log.info("consumer.stopped")

    async def _on_initialize(self, context: PartitionContext) -> None:
        partition_id = context.partition_id
        state: PartitionState | None = None
        try:
            state = await self._checkpointing.states.load(partition_id)
        except StateError as exc:
            # The message says what is wrong and what to do; a traceback would add nothing.
            log.error("partition.state_unreadable", partition_id=partition_id, error=str(exc))  # noqa: TRY400
        except (AzureError, OSError) as exc:
            log.warning("partition.state_unavailable", partition_id=partition_id, error=str(exc))
        flow = PartitionFlow(partition_id, self.table, self._flow_settings, state=state)
        run = PartitionRun(flow, self._runner, self._drive, self._checkpointing)
        old = self._runs.pop(partition_id, None)
        if old is not None:
            await old.close(0, write=False)
            self._retired.add(old.flow.counts())
        self._runs[partition_id] = run
        self.last_activity = time.monotonic()
        run.start()
        log.info("partition.claimed", partition_id=partition_id, state=state is not None)

    async def _on_batch(self, context: PartitionContext, events: list[EventData]) -> None:
        partition_id = context.partition_id
        run = self._runs[partition_id]
        if run.recycle:
            run.recycle = False
            raise ReceiverStalled(f"partition {partition_id}: no delivery for {self._hub.stall_timeout}s with lag")
        if events:
            self.last_activity = time.monotonic()
            enqueued = context.last_enqueued_event_properties
            if enqueued:
                run.last_enqueued = enqueued.get("sequence_number")
        await run.put([to_message(event, partition_id) for event in events])

    async def _on_close(self, context: PartitionContext, reason: CloseReason) -> None:
        partition_id = context.partition_id
        run = self._runs.pop(partition_id, None)
        if run is None:
            return
        # Shutting down, or a receiver recycled here: finish what runs and checkpoint. Lost to
        # another worker: write nothing (its checkpoint would be overwritten); it redoes our in-flight.
        write = reason is CloseReason.SHUTDOWN or run.stalled
        await run.close(self._grace, write=write)
        self._retired.add(run.flow.counts())
        log.info("partition.closed", partition_id=partition_id, reason=reason.name.lower(), checkpointed=write)

    async def _on_error(self, context: PartitionContext | None, error: Exception) -> None:
        partition_id = context.partition_id if context is not None else None
        log.warning("consumer.error", partition_id=partition_id, error=str(error), kind=type(error).__name__)

    async def _watch(self) -> None:
        """Poll the partitions' last enqueued events: lag for the metrics, and stalled receivers."""
        period = min(self._hub.stall_timeout / 4, 30.0)
        while True:
            await asyncio.sleep(period)
            for partition_id, run in list(self._runs.items()):
                try:
                    properties = await self._client.get_partition_properties(partition_id)
                except (EventHubError, AzureError) as exc:
                    self.connected = False
                    log.warning("consumer.hub_unreachable", error=str(exc))
                    break
                self.connected = True
                run.last_enqueued = properties["last_enqueued_sequence_number"]
                silent = time.monotonic() - run.last_delivery
                if run.lag and silent > self._hub.stall_timeout and not run.stalled:
                    log.warning("partition.stalled", partition_id=partition_id, lag=run.lag, silent_seconds=silent)
                    run.stalled = run.recycle = True
