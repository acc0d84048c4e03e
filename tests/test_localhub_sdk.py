"""Conformance: the local hub, driven only through the real azure-eventhub SDK (async and sync clients).

The hub runs as a subprocess (``python -m worker localhub``), shared by the session: each test reads
from the positions it sent to.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from azure.eventhub import EventData, EventHubConsumerClient, EventHubProducerClient
from azure.eventhub.aio import EventHubProducerClient as AsyncProducer
from azure.eventhub.exceptions import ConnectError, EventHubError

from tests.hubclient import FAST, collect, last_sequence_number, last_sequence_numbers, send
from tests.servers import HUB_CONSUMER_GROUPS, HUB_NAME, HUB_PARTITIONS, HubServer, start_localhub, stop
from worker.localhub.authorization import DEVELOPMENT_KEY, DEVELOPMENT_KEY_NAME
from worker.sending.placement import partition_for_key

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("sdk_garbage")]


def tag() -> str:
    return uuid.uuid4().hex[:8]


async def test_prints_an_emulator_connection_string(localhub: HubServer) -> None:
    assert localhub.connection_string == (
        f"Endpoint=sb://127.0.0.1:{localhub.port};SharedAccessKeyName={DEVELOPMENT_KEY_NAME};"
        f"SharedAccessKey={DEVELOPMENT_KEY};EntityPath={HUB_NAME};UseDevelopmentEmulator=true"
    )


async def test_hub_and_partition_properties(localhub: HubServer) -> None:
    async with AsyncProducer.from_connection_string(localhub.connection_string) as producer:
        hub = await producer.get_eventhub_properties()
        before = await producer.get_partition_properties("3")
        await producer.send_batch([EventData("one"), EventData("two")], partition_id="3")
        after = await producer.get_partition_properties("3")
    assert hub["eventhub_name"] == HUB_NAME
    assert hub["partition_ids"] == [str(i) for i in range(HUB_PARTITIONS)]
    assert hub["created_at"].tzinfo is not None
    assert after["id"] == "3"
    assert after["last_enqueued_sequence_number"] == before["last_enqueued_sequence_number"] + 2
    assert after["beginning_sequence_number"] == 0
    assert not after["is_empty"]
    assert int(after["last_enqueued_offset"]) > int(before["last_enqueued_offset"])
    assert abs(after["last_enqueued_time_utc"] - datetime.now(UTC)) < timedelta(seconds=30)


def test_sync_clients_send_and_receive(localhub: HubServer) -> None:
    mark = tag()
    with EventHubProducerClient.from_connection_string(localhub.connection_string) as producer:
        assert producer.get_partition_ids() == [str(i) for i in range(HUB_PARTITIONS)]
        start = producer.get_partition_properties("2")["last_enqueued_sequence_number"]
        batch = producer.create_batch(partition_id="2")
        for i in range(3):
            batch.add(EventData(f"{mark}-{i}"))
        producer.send_batch(batch)
        producer.send_event(EventData(f"{mark}-3"), partition_id="2")
    got: list[EventData] = []
    consumer = EventHubConsumerClient.from_connection_string(localhub.connection_string, "$Default")

    def on_event_batch(context: object, events: list[EventData]) -> None:
        got.extend(events)
        if len(got) >= 4:
            consumer.close()

    with consumer:
        consumer.receive_batch(on_event_batch, partition_id="2", starting_position=start, max_wait_time=1, prefetch=10)
    assert [e.body_as_str() for e in got] == [f"{mark}-{i}" for i in range(4)]
    assert [e.sequence_number for e in got] == [start + 1 + i for i in range(4)]


async def test_events_carry_their_position_and_properties(localhub: HubServer) -> None:
    start = await last_sequence_number(localhub.connection_string, "1")
    event = EventData(b"\x00binary\xff")
    event.properties = {"aeg-delivery-count": "0", "n": 7}
    event.content_type = "application/octet-stream"
    async with AsyncProducer.from_connection_string(localhub.connection_string) as producer:
        await producer.send_event(event, partition_id="1")
    got = await collect(localhub.connection_string, "1", 1, starting_position=start)
    (received,) = got.events
    assert received.body_as_str(encoding="latin-1") == "\x00binary\xff"
    assert received.sequence_number == start + 1
    assert isinstance(received.offset, str)
    assert received.enqueued_time is not None
    assert received.enqueued_time.tzinfo is not None
    assert received.properties == {b"aeg-delivery-count": b"0", b"n": 7}
    assert received.content_type == "application/octet-stream"
    assert received.partition_key is None


async def test_partition_keys_land_where_the_service_puts_them(localhub: HubServer) -> None:
    # With 4 partitions the service puts these keys (vectors of tests/test_routing.py) here, and the
    # Python SDK's buffered producer elsewhere.
    assert HUB_PARTITIONS == 4
    expected = {"7": "3", "FWfAT": "1", "é": "0", "café": "3"}
    ids = [str(i) for i in range(HUB_PARTITIONS)]
    expected |= {key: partition_for_key(key, ids) for key in (f"experiments/{tag()}/runs/{i}" for i in range(8))}
    assert len(set(expected.values())) > 1
    mark, keys = tag(), list(expected)
    starts = await last_sequence_numbers(localhub.connection_string)
    async with AsyncProducer.from_connection_string(localhub.connection_string) as producer:
        for key in keys[::2]:
            await producer.send_batch([EventData(f"{mark} {key}")], partition_key=key)
        for key in keys[1::2]:
            await producer.send_event(EventData(f"{mark} {key}"), partition_key=key)
    got = await collect(localhub.connection_string, None, len(keys), starting_position=starts, settle=0.3)
    seen = {
        event.body_as_str(): (pid, event.partition_key) for event, pid in zip(got.events, got.partitions, strict=True)
    }
    assert seen == {f"{mark} {key}": (expected[key], key.encode()) for key in keys}


async def test_round_robin_spreads_unkeyed_batches(localhub: HubServer) -> None:
    ids = [str(i) for i in range(HUB_PARTITIONS)]
    before = await last_sequence_numbers(localhub.connection_string)
    async with AsyncProducer.from_connection_string(localhub.connection_string) as producer:
        for i in range(2 * HUB_PARTITIONS):
            await producer.send_batch([EventData(f"rr-{i}")])
    after = await last_sequence_numbers(localhub.connection_string)
    assert all(after[pid] - before[pid] >= 1 for pid in ids)
    assert sum(after[pid] - before[pid] for pid in ids) >= 2 * HUB_PARTITIONS


async def test_starting_positions(localhub: HubServer) -> None:
    cs = localhub.connection_string
    mark = tag()
    start = await last_sequence_number(cs, "0")
    await send(cs, [f"{mark}-a{i}" for i in range(5)], partition_id="0")
    first = await collect(cs, "0", 5, starting_position=start)
    assert first.bodies == [f"{mark}-a{i}" for i in range(5)]
    events = first.events
    await asyncio.sleep(0.01)
    await send(cs, [f"{mark}-b{i}" for i in range(3)], partition_id="0")
    everything = await collect(cs, "0", start + 9, starting_position="-1")
    assert everything.events[0].sequence_number == 0
    assert everything.bodies[-8:] == [f"{mark}-a{i}" for i in range(5)] + [f"{mark}-b{i}" for i in range(3)]

    # By sequence number, exclusive (the default) and inclusive.
    assert (await collect(cs, "0", 2, starting_position=int(events[2].sequence_number or 0))).bodies[:2] == [
        f"{mark}-a3",
        f"{mark}-a4",
    ]
    inclusive = await collect(cs, "0", 2, starting_position=int(events[2].sequence_number or 0), inclusive=True)
    assert inclusive.bodies[:2] == [f"{mark}-a2", f"{mark}-a3"]
    # By offset.
    assert (await collect(cs, "0", 1, starting_position=str(events[3].offset))).bodies[:1] == [f"{mark}-a4"]
    assert (await collect(cs, "0", 1, starting_position=str(events[3].offset), inclusive=True)).bodies[:1] == [
        f"{mark}-a3"
    ]
    # By enqueued time: from the first b event's time, inclusive.
    b_first = everything.events[-3]
    assert b_first.enqueued_time is not None
    by_time = await collect(cs, "0", 3, starting_position=b_first.enqueued_time, inclusive=True)
    assert by_time.bodies[-3:] == [f"{mark}-b{i}" for i in range(3)]
    assert all(e.enqueued_time and e.enqueued_time >= b_first.enqueued_time for e in by_time.events)


async def test_latest_sees_only_new_events(localhub: HubServer) -> None:
    cs = localhub.connection_string
    mark = tag()
    await send(cs, [f"{mark}-old"], partition_id="1")

    async def keep_sending() -> None:  # until the receiver, attaching meanwhile, sees one
        for i in range(30):
            await send(cs, [f"{mark}-new{i}"], partition_id="1")
            await asyncio.sleep(0.5)

    sender = asyncio.create_task(keep_sending())
    try:
        got = await collect(cs, "1", 1, starting_position="@latest", within=30)
    finally:
        sender.cancel()
    assert got.bodies
    assert all(body.startswith(f"{mark}-new") for body in got.bodies)


async def test_consumer_groups_each_see_every_event(localhub: HubServer) -> None:
    cs = localhub.connection_string
    mark = tag()
    start = await last_sequence_number(cs, "2")
    await send(cs, [f"{mark}-{i}" for i in range(3)], partition_id="2")
    for group in HUB_CONSUMER_GROUPS:
        got = await collect(cs, "2", 3, starting_position=start, consumer_group=group)
        assert got.bodies == [f"{mark}-{i}" for i in range(3)], group


async def test_unknown_consumer_group_is_refused(localhub: HubServer) -> None:
    got = await collect(localhub.connection_string, "0", 1, consumer_group="nope", within=20)
    assert got.events == []
    assert got.errors
    assert "amqp:not-found" in str(got.errors[0])


async def test_unknown_hub_is_refused(localhub: HubServer) -> None:
    cs = localhub.connection_string.replace(f"EntityPath={HUB_NAME}", "EntityPath=nope")
    async with AsyncProducer.from_connection_string(cs, **FAST) as producer:
        with pytest.raises(ConnectError, match="404"):
            await producer.get_eventhub_properties()
        with pytest.raises(EventHubError):
            await producer.send_batch([EventData("x")])


async def test_track_last_enqueued_event_properties(localhub: HubServer) -> None:
    cs = localhub.connection_string
    start = await last_sequence_number(cs, "1")
    await send(cs, ["p1", "p2", "p3"], partition_id="1")
    got = await collect(cs, "1", 3, starting_position=start, track_last_enqueued_event_properties=True)
    last = got.last_enqueued[-1]
    assert last is not None
    assert last["sequence_number"] == start + 3
    assert last["offset"] == got.events[-1].offset
    assert last["enqueued_time"] == got.events[-1].enqueued_time
    assert last["retrieval_time"] is not None
    plain = await collect(cs, "1", 3, starting_position=start)
    assert plain.last_enqueued == [None, None, None]


async def test_large_events_round_trip(localhub: HubServer) -> None:
    cs = localhub.connection_string
    start = await last_sequence_number(cs, "0")
    big = "x" * 900_000
    async with AsyncProducer.from_connection_string(cs) as producer:
        await producer.send_event(EventData(big), partition_id="0")
        batch = await producer.create_batch(partition_id="0")
        for i in range(4):
            batch.add(EventData(f"{i}" * 200_000))
        await producer.send_batch(batch)
    got = await collect(cs, "0", 5, starting_position=start)
    assert [len(body) for body in got.bodies] == [900_000] + [200_000] * 4
    assert got.bodies[0] == big


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_command_serves_until_a_signal(tmp_path: Path, signum: int) -> None:
    server = start_localhub(tmp_path)
    try:
        server.process.send_signal(signum)
        assert server.process.wait(10) == 0
    finally:
        stop(server)


def _hang_up(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


async def test_a_stream_writer_dropped_unclosed_is_forgiven_here() -> None:
    # As the SDK drops an abandoned connection: asyncio's writer warns as it goes, mid-test (sdk_garbage).
    server = await asyncio.start_server(_hang_up, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    _, writer = await asyncio.open_connection(host, port)
    transport = writer.transport
    del writer
    transport.close()
    server.close()
    await server.wait_closed()
