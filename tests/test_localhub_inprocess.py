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


async def test_owner_level_takes_over_and_refuses_lower() -> None:
    """A receiver with a higher owner level takes the partition over; lower and plain ones are refused.
    Each step waits for the hub to have attached the receiver before it, not for a while."""
    async with LocalHub([HubSpec("owners", partitions=4)]) as hub:
        cs = hub.connection_string()
        holders = ("owners", "$default", "3")

        async def held_by(epoch: int) -> None:
            async with asyncio.timeout(30):
                while [o.epoch for o in hub.state.owners.get(holders, [])] != [epoch]:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)  # the hub's state, read in this process

        first = asyncio.create_task(collect(cs, "3", 1, starting_position="-1", owner_level=1, within=40))
        await held_by(1)
        second = asyncio.create_task(collect(cs, "3", 1, starting_position="-1", owner_level=2, within=40))
        await held_by(2)
        lower = await collect(cs, "3", 1, starting_position="-1", owner_level=0, within=5)
        plain = await collect(cs, "3", 1, starting_position="-1", within=5)
        await send(cs, ["owned"], partition_id="3")
        taken, winner = await first, await second
    assert winner.bodies == ["owned"]
    assert winner.errors == []
    for refused in (taken, lower, plain):
        assert refused.events == []
        assert refused.errors
        assert "amqp:link:stolen" in str(refused.errors[0])
