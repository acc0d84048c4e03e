"""The ``checkpoints`` commands' I/O: a consumer group's standing, read from its stores and the hub; its resets.

What is read goes through the SDKs: the checkpoints and the claims with the checkpoint store's own
``list_checkpoints`` and ``list_ownership`` (the SDK's ``BlobCheckpointStore``, or the directory
store), when each checkpoint was written with :meth:`~worker.checkpoints.store.PartitionCheckpoint.look`,
each partition's end with the consumer client's ``get_partition_properties``, and for a reset to a
time, the events around that time with a consumer reading from it. What is written goes through
:meth:`~worker.checkpoints.store.PartitionCheckpoint.reset`. Everything decided from what is read is
decided in :mod:`worker.checkpoints.standing`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from azure.core.credentials_async import AsyncTokenCredential
from azure.eventhub import EventData
from azure.eventhub.aio import EventHubConsumerClient
from azure.eventhub.aio._eventprocessor.partition_context import PartitionContext
from azure.identity.aio import DefaultAzureCredential

from worker.checkpoints.standing import (
    Claim,
    Move,
    PartitionEnd,
    Row,
    Standing,
    Stored,
    Target,
    at_time,
    earliest,
    latest,
    refusals,
    rows,
    unknown_partitions,
)
from worker.checkpoints.store import PartitionCheckpoint, Stores, open_stores
from worker.errors import CheckpointMoved, SettingsError
from worker.events import Position
from worker.moments import StartPosition
from worker.settings import ConsumerGroupSettings

#: Seconds a reader waits for the event at a position before concluding there is none.
_READ_WAIT: Final = 10.0
#: Seconds a read of one event may take in all (connecting included).
_READ_TIMEOUT: Final = 60.0


@dataclass(frozen=True, slots=True)
class ResetReport:
    """What a reset did, or would do (a dry run), or why it did nothing."""

    #: One line per partition a worker holds; the reset went ahead only if forced.
    held: tuple[str, ...] = ()
    moves: tuple[Move, ...] = ()
    #: Moves not made: the checkpoint was written meanwhile.
    failed: tuple[str, ...] = ()
    written: bool = False


async def show(settings: ConsumerGroupSettings) -> list[Row]:
    """Every partition of the hub: its checkpoint, its end, its claim."""
    async with _open(settings, create=False) as group:
        ids = await group.partition_ids()
        ends = await group.ends(ids)
        checkpoints = await group.listed_checkpoints()
        claims = await group.claims()
        now = datetime.now(UTC)
    standings = [Standing(end, checkpoints.get(end.partition_id), claims.get(end.partition_id)) for end in ends]
    return rows(standings, now, settings.expiry)


async def reset(
    settings: ConsumerGroupSettings,
    to: StartPosition,
    partitions: Sequence[str] = (),
    *,
    force: bool = False,
    dry_run: bool = False,
) -> ResetReport:
    """Move the checkpoints of ``partitions`` (all by default) to ``to``, with an empty pipeline state;
    refused while a worker holds one of them, unless ``force``; nothing written with ``dry_run``."""
    async with _open(settings, create=True) as group:
        ids = await group.partition_ids()
        unknown = unknown_partitions(partitions, ids)
        if unknown:
            raise SettingsError(
                [f"--partition {partition}: the hub has partitions {', '.join(ids)}" for partition in unknown]
            )
        chosen = [partition for partition in ids if not partitions or partition in partitions]
        ends = await group.ends(chosen)
        claims = await group.claims()
        now = datetime.now(UTC)
        held = refusals((Standing(end, None, claims.get(end.partition_id)) for end in ends), now, settings.expiry)
        if held and not force:
            return ResetReport(held=tuple(held))
        checkpoints = {partition: group.checkpoint(partition) for partition in chosen}
        befores = await asyncio.gather(*(checkpoints[end.partition_id].look() for end in ends))
        # A time is read from the hub, partition by partition: at once, since each read takes a while.
        targets = await asyncio.gather(*(group.target(end, to.at(now)) for end in ends))
        moves = [
            Move(end.partition_id, before, target) for end, before, target in zip(ends, befores, targets, strict=True)
        ]
        if dry_run:
            return ResetReport(held=tuple(held), moves=tuple(moves))
        failed = []
        for move in moves:
            position = Position(move.partition_id, move.after.offset, move.after.sequence_number)
            try:
                await checkpoints[move.partition_id].reset(position)
            except CheckpointMoved as exc:
                failed.append(f"partition {move.partition_id}: {exc}")
        return ResetReport(held=tuple(held), moves=tuple(moves), failed=tuple(failed), written=True)


@contextlib.asynccontextmanager
async def _open(settings: ConsumerGroupSettings, *, create: bool) -> AsyncIterator[_Group]:
    async with contextlib.AsyncExitStack() as stack:
        credential = None
        if settings.connection_string is None:
            credential = await stack.enter_async_context(DefaultAzureCredential())
        stores = await stack.enter_async_context(open_stores(settings.checkpoints, settings.scope, create=create))
        group = _Group(settings, stores, credential)
        stack.push_async_callback(group.close)
        yield group


class _Group:
    """One consumer group's stores and the hub, as the commands read and move them."""

    def __init__(
        self, settings: ConsumerGroupSettings, stores: Stores, credential: AsyncTokenCredential | None
    ) -> None:
        self._settings = settings
        self._stores = stores
        self._credential = credential
        self._hub = self._client()

    async def close(self) -> None:
        await self._hub.close()

    def _client(self) -> EventHubConsumerClient:
        settings, scope = self._settings, self._settings.scope
        if settings.connection_string is not None:
            return EventHubConsumerClient.from_connection_string(
                settings.connection_string, consumer_group=scope.consumer_group, eventhub_name=scope.eventhub
            )
        assert settings.namespace is not None  # noqa: S101 - the settings validator ensures one
        assert self._credential is not None  # noqa: S101 - see _open
        return EventHubConsumerClient(settings.namespace, scope.eventhub, scope.consumer_group, self._credential)

    # --- reading -----------------------------------------------------------------------------

    async def partition_ids(self) -> list[str]:
        return [str(partition) for partition in await self._hub.get_partition_ids()]

    async def ends(self, ids: Iterable[str]) -> list[PartitionEnd]:
        found = await asyncio.gather(*(self._hub.get_partition_properties(partition) for partition in ids))
        return [PartitionEnd.of(properties) for properties in found]

    async def listed_checkpoints(self) -> dict[str, Stored]:
        """The checkpoints as the SDK lists them, with when each was written."""
        scope = self._settings.scope
        listed = await self._stores.checkpoints.list_checkpoints(scope.namespace, scope.eventhub, scope.consumer_group)
        records = {str(record["partition_id"]): record for record in listed}
        seen = await asyncio.gather(*(self.checkpoint(partition).look() for partition in records))
        return {
            partition: Stored(
                str(record["offset"]), int(record["sequence_number"]), looked.written if looked is not None else None
            )
            for (partition, record), looked in zip(records.items(), seen, strict=True)
        }

    async def claims(self) -> dict[str, Claim]:
        scope = self._settings.scope
        listed = await self._stores.checkpoints.list_ownership(scope.namespace, scope.eventhub, scope.consumer_group)
        return {str(record["partition_id"]): _claim(record) for record in listed}

    def checkpoint(self, partition_id: str) -> PartitionCheckpoint:
        return self._stores.partitions.checkpoint(partition_id)

    async def target(self, end: PartitionEnd, to: Literal["earliest", "latest"] | datetime) -> Target:
        """Where a reset to ``to`` puts the partition's checkpoint; for a time, read from the hub."""
        if to == "earliest":
            return earliest(end)
        if to == "latest":
            return latest(end)
        moment = to.replace(microsecond=to.microsecond // 1000 * 1000)  # the hub keeps milliseconds
        first = None
        if end.last_enqueued is not None and end.last_enqueued >= moment:
            first = (await self._read_one(end.partition_id, moment)).sequence_number
        before = None
        if first is not None and first > end.begin_sequence_number:
            before = await self._read_one(end.partition_id, first - 1)
        return at_time(end, moment, first, before)

    async def _read_one(self, partition_id: str, position: int | datetime) -> Stored:
        """The first event at ``position`` (a sequence number, or an enqueued time), or after it: its
        offset and sequence number. Asked only where the hub said there is one: TimeoutError when none
        comes within the wait."""
        found: asyncio.Future[Stored | None] = asyncio.get_running_loop().create_future()

        async def on_event(_context: PartitionContext, event: EventData | None) -> None:
            if found.done():
                return
            if event is None:  # nothing came within the wait
                found.set_result(None)
                return
            sequence = event.sequence_number
            found.set_result(Stored(str(event.offset), sequence if sequence is not None else -1))

        async def on_error(_context: PartitionContext | None, error: Exception) -> None:
            if not found.done():
                found.set_exception(error)

        client = self._client()
        options: dict[str, Any] = {
            "partition_id": partition_id,
            "starting_position": position,
            "starting_position_inclusive": True,
            "max_wait_time": _READ_WAIT,
            "prefetch": 1,
            "on_error": on_error,
        }
        receiving = asyncio.create_task(client.receive(on_event, **options))
        try:
            async with asyncio.timeout(_READ_TIMEOUT):
                await asyncio.wait((receiving, found), return_when=asyncio.FIRST_COMPLETED)
            if found.done():
                event = found.result()
            else:
                receiving.result()  # raises what stopped it
                event = None
        finally:
            await client.close()
            receiving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiving
        if event is None:
            raise TimeoutError(f"partition {partition_id}: no event at or after {position} came in {_READ_WAIT:g}s")
        return event


def _claim(record: dict[str, Any]) -> Claim:
    modified = record.get("last_modified_time")
    return Claim(
        owner_id=str(record.get("owner_id") or ""),
        claimed=None if modified is None else datetime.fromtimestamp(float(modified), UTC),
    )
