"""Publishing events to an event hub (local or in Azure), as Event Grid would deliver them.

The plan is pure (events in, outgoing messages with their partition keys out); :func:`publish` is
the I/O edge, using the azure-eventhub producer. Keyed messages are grouped by the partition their
key hashes to (the service's placement, ``worker.sending.placement``; not the Python SDK's buffered
producer, which places some keys elsewhere) and each keeps its key, so consumers see
``partition_key``; unkeyed ones go round-robin.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

import orjson
from azure.eventhub import EventData, EventDataBatch
from azure.eventhub.aio import EventHubProducerClient
from azure.eventhub.exceptions import EventHubError

from worker.errors import SourceError
from worker.sending import mlevents
from worker.sending.placement import partition_for_key, round_robin

PARTITION_KEY_ANNOTATION: Final = b"x-opt-partition-key"
Schema = Literal["eventgrid", "cloudevents", "both"]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to publish: its body, application properties and partition key."""

    body: bytes
    properties: Mapping[str, object]
    partition_key: str | None


@dataclass(frozen=True, slots=True)
class GenerateOptions:
    """Realistic Azure ML events from :mod:`worker.sending.mlevents`."""

    count: int
    schema: Schema = "eventgrid"
    seed: int = 7
    body_size: int = 0


def generated_events(options: GenerateOptions) -> Iterator[dict[str, object]]:
    """``count`` events; with ``both`` schemas, Event Grid and CloudEvents events alternate."""
    if options.schema != "both":
        yield from mlevents.generate(
            options.count, mlevents.Options(seed=options.seed, schema=options.schema, body_size=options.body_size)
        )
        return
    grid = mlevents.generate(options.count, mlevents.Options(seed=options.seed, body_size=options.body_size))
    cloud = mlevents.generate(
        options.count, mlevents.Options(seed=options.seed + 1, schema="cloudevents", body_size=options.body_size)
    )
    yield from itertools.islice((e for pair in zip(grid, cloud, strict=True) for e in pair), options.count)


def events_from_files(paths: Sequence[Path]) -> Iterator[dict[str, object]]:
    """The events in JSON files: each holds an event, an array of events, or one event per line (JSON Lines)."""
    for path in paths:
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise SourceError(f"cannot read {path}: {exc}") from exc
        try:
            documents = [orjson.loads(text)]
        except orjson.JSONDecodeError:
            try:
                documents = [orjson.loads(line) for line in text.splitlines() if line.strip()]
            except orjson.JSONDecodeError as exc:
                raise SourceError(f"{path} is neither JSON nor JSON Lines: {exc}") from exc
        for document in documents:
            for event in document if isinstance(document, list) else [document]:
                if not isinstance(event, dict):
                    raise SourceError(f"{path}: every event must be a JSON object, not {type(event).__name__}")
                yield event


def plan(deliveries: Iterable[mlevents.Delivery], key: Literal["subject", "none"]) -> Iterator[Outgoing]:
    """The messages to send, each keyed by its event's subject (or not keyed)."""
    for delivery in deliveries:
        partition_key = _subject(delivery.body) if key == "subject" else None
        yield Outgoing(delivery.body, delivery.properties, partition_key)


def _subject(body: bytes) -> str | None:
    document = orjson.loads(body)
    event = document[0] if isinstance(document, list) and document else document
    subject = event.get("subject") if isinstance(event, dict) else None
    return subject if isinstance(subject, str) and subject else None


@dataclass
class PublishReport:
    """How many messages went where."""

    eventhub: str = ""
    batches: int = 0
    by_partition: dict[str, int] = field(default_factory=dict)

    @property
    def sent(self) -> int:
        return sum(self.by_partition.values())


async def publish(
    connection_string: str,
    messages: Iterable[Outgoing],
    *,
    eventhub: str | None = None,
    partition_id: str | None = None,
    chunk: int = 5_000,
) -> PublishReport:
    """Send ``messages`` in full batches, ``chunk`` messages planned at a time; the counts per partition."""
    try:
        client = EventHubProducerClient.from_connection_string(connection_string, eventhub_name=eventhub)
        async with client:
            ids = await client.get_partition_ids()
            report = PublishReport(eventhub=client.eventhub_name)
            rotation = round_robin(ids)
            iterator = iter(messages)
            while block := list(itertools.islice(iterator, chunk)):
                groups: dict[str, list[Outgoing]] = {}
                for message in block:
                    if partition_id is not None:
                        target = partition_id
                    elif message.partition_key is not None:
                        target = partition_for_key(message.partition_key, ids)
                    else:
                        target = next(rotation)
                    groups.setdefault(target, []).append(message)
                for target, group in groups.items():
                    await _send_group(client, target, group, report)
    except (EventHubError, ValueError) as exc:
        raise SourceError(f"cannot publish to the event hub: {exc}") from exc
    return report


async def _send_group(
    client: EventHubProducerClient, partition: str, group: list[Outgoing], report: PublishReport
) -> None:
    batch = await client.create_batch(partition_id=partition)
    for message in group:
        event = _event(message)
        try:
            batch.add(event)
        except ValueError:  # the batch is full: send it and start another
            await _send(client, batch, partition, report)
            batch = await client.create_batch(partition_id=partition)
            batch.add(event)
    await _send(client, batch, partition, report)


async def _send(client: EventHubProducerClient, batch: EventDataBatch, partition: str, report: PublishReport) -> None:
    if len(batch):
        await client.send_batch(batch)
        report.batches += 1
        report.by_partition[partition] = report.by_partition.get(partition, 0) + len(batch)


def _event(message: Outgoing) -> EventData:
    event = EventData(message.body)
    event.properties = dict(message.properties)  # type: ignore[assignment]
    if message.partition_key is not None:
        annotations = event.raw_amqp_message.annotations
        if annotations is None:
            event.raw_amqp_message.annotations = annotations = {}
        annotations[PARTITION_KEY_ANNOTATION] = message.partition_key
    return event
