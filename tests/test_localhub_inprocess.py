"""The local hub in-process (``LocalHub``), where a test acts on it: retention, dropped links and connections."""

from __future__ import annotations

import asyncio
import gc

import pytest
from azure.eventhub import EventData
from azure.eventhub.aio import EventHubConsumerClient, EventHubProducerClient, PartitionContext

from tests.hubclient import LOOP, collect, send
from worker.localhub.hub import LocalHub
from worker.localhub.store import HubSpec, Retention

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("sdk_garbage")]


async def test_retention_drops_the_oldest_events() -> None:
    async with LocalHub([HubSpec("small", partitions=1)], retention=Retention(max_events=10)) as hub:
        cs = hub.connection_string()
        await send(cs, [f"e{i}" for i in range(25)], partition_id="0")
        async with EventHubProducerClient.from_connection_string(cs) as producer:
            properties = await producer.get_partition_properties("0")
        assert properties["beginning_sequence_number"] == 15
        assert properties["last_enqueued_sequence_number"] == 24
        got = await collect(cs, "0", 10, starting_position="-1")
        assert got.bodies == [f"e{i}" for i in range(15, 25)]
        fallen = await collect(cs, "0", 10, starting_position=3)  # fell off: reading starts at the oldest kept
        assert fallen.bodies == [f"e{i}" for i in range(15, 25)]


# The SDK leaves the sockets of a dropped connection for the garbage collector to close.
@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
async def test_receivers_resume_after_dropped_links_and_connections() -> None:
    async with LocalHub([HubSpec("flaky", partitions=2)]) as hub:
        cs = hub.connection_string()
        seen: list[str] = []
        errors: list[Exception] = []
        count = asyncio.Condition()
        client = EventHubConsumerClient.from_connection_string(cs, "$Default", **LOOP)

        async def on_event(context: PartitionContext, event: EventData | None) -> None:
            if event is not None:
                seen.append(event.body_as_str())
                async with count:
                    count.notify_all()

        async def on_error(context: PartitionContext | None, error: Exception) -> None:
            errors.append(error)

        async def until(total: int) -> None:
            async with count:
                await asyncio.wait_for(count.wait_for(lambda: len(seen) >= total), 30)

        async with client:
            task = asyncio.create_task(client.receive(on_event, on_error=on_error, starting_position="-1"))
            async with EventHubProducerClient.from_connection_string(cs) as producer:
                await producer.send_batch([EventData(f"a{i}") for i in range(5)], partition_id="0")
                await producer.send_batch([EventData(f"b{i}") for i in range(5)], partition_id="1")
                await until(10)
                hub.detach_receivers()  # amqp:link:detach-forced: the SDK re-attaches from its last event
                await producer.send_batch([EventData(f"c{i}") for i in range(5)], partition_id="0")
                await until(15)
                hub.drop_connections()  # every socket cut: the SDK reconnects (the producer too)
                await asyncio.sleep(0.5)
                await producer.send_batch([EventData(f"d{i}") for i in range(5)], partition_id="1")
                await until(20)
            await asyncio.sleep(0.5)
            await client.close()
            await task
        expected = {f"{letter}{i}" for letter in "abcd" for i in range(5)}
        assert sorted(seen) == sorted(expected)  # each exactly once: resumed after the last offset seen
        assert [body for body in seen if body[0] in "ac"] == [f"{x}{i}" for x in "ac" for i in range(5)]
    gc.collect()
