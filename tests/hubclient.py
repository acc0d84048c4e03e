"""Small helpers over the real azure-eventhub SDK, for the tests that drive the local hub through it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from azure.eventhub import EventData
from azure.eventhub.aio import EventHubConsumerClient, EventHubProducerClient, PartitionContext

#: Fail fast on errors the SDK would retry for a minute against the service.
FAST: dict[str, Any] = {"retry_total": 1, "retry_backoff_factor": 0.1}
#: The consumer's load-balancing loop sleeps this long between rounds: ``receive`` returns only
#: after its current sleep once the client is closed (30 s by default).
LOOP: dict[str, Any] = {"load_balancing_interval": 0.5}


@dataclass
class Received:
    """What one consumer got: events, errors and the contexts' last-enqueued properties."""

    events: list[EventData] = field(default_factory=list)
    partitions: list[str] = field(default_factory=list)  # each event's partition
    errors: list[Exception] = field(default_factory=list)
    last_enqueued: list[dict[str, Any] | None] = field(default_factory=list)

    @property
    def bodies(self) -> list[str]:
        return [event.body_as_str() for event in self.events]


async def send(connection_string: str, bodies: list[str], **batch: Any) -> None:
    """Send ``bodies`` as one batch (``partition_id=`` or ``partition_key=``, or neither)."""
    async with EventHubProducerClient.from_connection_string(connection_string) as producer:
        events = await producer.create_batch(**batch)
        for body in bodies:
            events.add(EventData(body))
        await producer.send_batch(events)


async def last_sequence_number(connection_string: str, partition: str) -> int:
    async with EventHubProducerClient.from_connection_string(connection_string) as producer:
        properties = await producer.get_partition_properties(partition)
    return int(properties["last_enqueued_sequence_number"])


async def last_sequence_numbers(connection_string: str) -> dict[str, int]:
    """Every partition's last sequence number, through one client."""
    async with EventHubProducerClient.from_connection_string(connection_string) as producer:
        ids = await producer.get_partition_ids()
        return {
            pid: int((await producer.get_partition_properties(pid))["last_enqueued_sequence_number"]) for pid in ids
        }


async def collect(
    connection_string: str,
    partition: str | None,
    count: int,
    *,
    starting_position: str | int | datetime | dict[str, Any] = "-1",
    inclusive: bool = False,
    consumer_group: str = "$Default",
    within: float = 15.0,
    settle: float = 0.0,
    **options: Any,
) -> Received:
    """Receive until ``count`` events arrived (then ``settle`` seconds more), an error, or ``within`` seconds."""
    received = Received()
    done = asyncio.Event()
    client = EventHubConsumerClient.from_connection_string(connection_string, consumer_group, **FAST, **LOOP)

    async def on_event(context: PartitionContext, event: EventData | None) -> None:
        if event is None:
            return
        received.events.append(event)
        received.partitions.append(context.partition_id)
        received.last_enqueued.append(context.last_enqueued_event_properties)
        if len(received.events) >= count:
            done.set()

    async def on_error(context: PartitionContext | None, error: Exception) -> None:
        received.errors.append(error)
        done.set()

    extra: dict[str, Any] = {"partition_id": partition} if partition is not None else {}
    async with client:
        task = asyncio.create_task(
            client.receive(
                on_event,
                on_error=on_error,
                starting_position=starting_position,
                starting_position_inclusive=inclusive,
                **extra,
                **options,
            )
        )
        try:
            await asyncio.wait_for(done.wait(), within)
            await asyncio.sleep(settle)
        except TimeoutError:
            pass
        finally:
            await client.close()
            await task
    return received
