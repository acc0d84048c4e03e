"""AMQP over WebSocket: the byte-level adapter against wsproto's client side, and the local hub
serving the SDK's ``TransportType.AmqpOverWebsocket`` on its AMQP port (sync and async clients)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import aiohttp
import pytest
from azure.eventhub import EventData, TransportType
from azure.eventhub import EventHubConsumerClient as SyncConsumer
from azure.eventhub import EventHubProducerClient as SyncProducer
from azure.eventhub.aio import EventHubConsumerClient, EventHubProducerClient, PartitionContext
from azure.eventhub.amqp import AmqpAnnotatedMessage
from azure.eventhub.exceptions import EventHubError
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from tests.hubclient import FAST, LOOP
from worker.localhub.hub import LocalHub
from worker.localhub.server import StreamSink, WebSocketSink
from worker.localhub.store import HubSpec
from worker.localhub.websocket import PATH, SUBPROTOCOL, AmqpWebSocket, Received, opens_handshake

# The async SDK opens its WebSocket with aiohttp's ws_connect(ssl=None), which aiohttp deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:ssl=None is deprecated:DeprecationWarning")

AMQP_HEADER = b"AMQP\x00\x01\x00\x00"
WEBSOCKET: dict[str, Any] = {"transport_type": TransportType.AmqpOverWebsocket}


# The adapter, sans-IO, against wsproto's client ---------------------------------------------------


def client_events(client: WSConnection, data: bytes) -> list[Event]:
    client.receive_data(data)
    return list(client.events())


def opened() -> tuple[WSConnection, AmqpWebSocket]:
    client, server = WSConnection(ConnectionType.CLIENT), AmqpWebSocket()
    received = server.receive(client.send(Request(host="localhost", target=PATH, subprotocols=["x", SUBPROTOCOL])))
    assert received == Received(reply=received.reply)
    assert client_events(client, received.reply) == [AcceptConnection(subprotocol=SUBPROTOCOL)]
    assert server.open
    return client, server


def refused(request: bytes) -> tuple[Received, list[Event]]:
    received = AmqpWebSocket().receive(request)
    client = WSConnection(ConnectionType.CLIENT)
    client.send(Request(host="localhost", target=PATH))  # so that the client reads the answer
    return received, client_events(client, received.reply)


def test_first_bytes_tell_a_handshake_from_amqp() -> None:
    assert opens_handshake(b"GET /$servicebus/websocket HTTP/1.1\r\n") is True
    assert opens_handshake(b"GET ") is True
    assert opens_handshake(AMQP_HEADER) is False
    assert opens_handshake(b"AM") is False
    assert opens_handshake(b"POST / HTTP/1.1") is False
    assert opens_handshake(b"GE") is None
    assert opens_handshake(b"") is None


def test_handshake_accepts_the_amqp_subprotocol_and_carries_binary_messages_both_ways() -> None:
    client, server = opened()
    assert server.receive(client.send(Message(data=AMQP_HEADER))) == Received(amqp=AMQP_HEADER)
    assert client_events(client, server.send(b"AMQP\x03\x01\x00\x00")) == [
        BytesMessage(data=b"AMQP\x03\x01\x00\x00", frame_finished=True, message_finished=True)
    ]


def test_a_fragmented_message_and_bytes_cut_anywhere_give_the_stream() -> None:
    client, server = opened()
    wire = (
        client.send(Message(data=b"AMQP", message_finished=False))
        + client.send(Message(data=b"\x00\x01", message_finished=False))
        + client.send(Message(data=b"\x00\x00"))
        + client.send(Message(data=b"next"))
    )
    amqp = b"".join(server.receive(wire[i : i + 3]).amqp for i in range(0, len(wire), 3))
    assert amqp == AMQP_HEADER + b"next"


def test_pings_are_answered_before_a_close_in_the_same_bytes() -> None:
    client, server = opened()
    received = server.receive(
        client.send(Message(data=b"AMQP")) + client.send(Ping(payload=b"alive?")) + client.send(CloseConnection(1000))
    )
    assert received.amqp == b"AMQP"
    assert received.finished
    assert received.problem is None
    assert client_events(client, received.reply) == [Pong(payload=b"alive?"), CloseConnection(1000, "")]
    assert not server.open
    assert server.send(b"late") == b""  # nothing goes out once the peer has closed
    assert server.close() == b""
    assert server.receive(b"\x00") == Received(finished=True)


def test_the_hub_closes_normally() -> None:
    client, server = opened()
    assert client_events(client, server.close()) == [CloseConnection(1000, "")]
    assert server.send(b"late") == b""
    received = server.receive(client.send(CloseConnection(1000)))  # the peer answers the hub's close
    assert received == Received(finished=True)


def test_a_text_message_closes_with_unsupported_data() -> None:
    client, server = opened()
    received = server.receive(client.send(TextMessage(data="hello")))
    assert received.finished
    assert received.problem is not None
    assert "binary" in received.problem
    (close,) = client_events(client, received.reply)
    assert isinstance(close, CloseConnection)
    assert close.code == 1003


def test_an_unreadable_frame_closes_with_a_protocol_error() -> None:
    client, server = opened()
    received = server.receive(b"\x82\x03abc")  # unmasked: a client must mask its frames
    assert received.finished
    assert received.problem is not None
    assert "1002" in received.problem
    (close,) = client_events(client, received.reply)
    assert isinstance(close, CloseConnection)
    assert close.code == 1002


@pytest.mark.parametrize(
    ("target", "subprotocols", "status", "reason"),
    [
        ("/other", [SUBPROTOCOL], 404, "no WebSocket endpoint at /other"),
        ("/x/$servicebus/websocket", [SUBPROTOCOL], 404, "AMQP is served at /$servicebus/websocket"),
        (PATH, [], 400, "the AMQPWSB10 subprotocol is required (offered: none)"),
        (PATH, ["AMQPWSB10x", "mqtt"], 400, "offered: AMQPWSB10x, mqtt"),
    ],
)
def test_handshake_refusals_say_why(target: str, subprotocols: list[str], status: int, reason: str) -> None:
    request = WSConnection(ConnectionType.CLIENT).send(
        Request(host="localhost", target=target, subprotocols=subprotocols)
    )
    received, events = refused(request)
    assert received.finished
    assert received.problem is not None
    assert reason in received.problem
    rejection, body, end = events
    assert isinstance(rejection, RejectConnection)
    assert rejection.status_code == status
    assert isinstance(body, RejectData)
    assert reason in body.data.decode()
    assert end == RejectData(data=b"", body_finished=True)
    assert received.reply.startswith(
        b"HTTP/1.1 %d %s\r\n" % (status, b"Not Found" if status == 404 else b"Bad Request")
    )


def test_a_plain_http_request_is_refused() -> None:
    received, events = refused(b"GET /$servicebus/websocket HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert received.finished
    assert received.problem == "Missing header, 'Connection: Upgrade'"
    assert isinstance(events[0], RejectConnection)
    assert events[0].status_code == 400


# The hub, through the real SDK and real WebSocket clients -----------------------------------------


def endpoint(hub: LocalHub, path: str = "") -> dict[str, Any]:
    """Client options for AMQP over WebSocket to the hub's port (the SDK appends ``/$servicebus/websocket``)."""
    return {**WEBSOCKET, "custom_endpoint_address": f"sb://{hub.host}:{hub.port}{path}"}


def sinks(hub: LocalHub) -> set[type]:
    return {type(connection.sink) for connection in hub.state.connections}


async def reader_of(hub: LocalHub, partition: str) -> type:
    """Wait until a consumer link reads ``partition`` (of the hub's first event hub); its connection's kind of sink."""
    key = (hub.hubs[0].name.casefold(), partition)
    async with asyncio.timeout(30):
        while not (outlets := hub.state.outlets.get(key)):  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # the hub's state, read in this process
    return type(next(iter(outlets)).connection.sink)


def outgoing(tag: str, count: int) -> list[EventData | AmqpAnnotatedMessage]:
    events: list[EventData | AmqpAnnotatedMessage] = []
    for i in range(count):
        event = EventData(f"{tag}-{i}")
        event.properties = {"kind": tag, "n": i}
        event.content_type = "application/json"
        events.append(event)
    return events


def check(events: list[EventData], tag: str, count: int) -> None:
    assert [e.body_as_str() for e in events] == [f"{tag}-{i}" for i in range(count)]
    assert [e.properties for e in events] == [{b"kind": tag.encode(), b"n": i} for i in range(count)]
    assert {e.content_type for e in events} == {"application/json"}
    assert [e.sequence_number for e in events] == list(range(count))  # each test has a new hub


async def receive_async(hub: LocalHub, partition: str, count: int, options: dict[str, Any]) -> list[EventData]:
    """Receive ``count`` events from the start of ``partition`` with an async consumer (fails on an error)."""
    got: list[EventData] = []
    errors: list[Exception] = []
    done = asyncio.Event()

    async def on_event(context: PartitionContext, event: EventData | None) -> None:
        if event is not None:
            got.append(event)
        if len(got) >= count:
            done.set()

    async def on_error(context: PartitionContext | None, error: Exception) -> None:
        errors.append(error)
        done.set()

    client = EventHubConsumerClient.from_connection_string(hub.connection_string(), "$Default", **LOOP, **options)
    async with client:
        task = asyncio.create_task(
            client.receive(
                on_event,
                on_error=on_error,
                partition_id=partition,
                starting_position="-1",
            )
        )
        try:
            await asyncio.wait_for(done.wait(), 30)
        finally:
            await client.close()
            await task
    assert errors == []
    return got


def receive_sync(connection_string: str, partition: str, count: int, options: dict[str, Any]) -> list[EventData]:
    """The same with the sync consumer (call it in a thread: the hub runs on the event loop)."""
    got: list[EventData] = []
    errors: list[Exception] = []
    done = threading.Event()
    client = SyncConsumer.from_connection_string(connection_string, "$Default", **options)

    def on_event(context: object, event: EventData | None) -> None:
        if event is not None:
            got.append(event)
        if len(got) >= count:
            done.set()

    def on_error(context: object, error: Exception) -> None:
        errors.append(error)
        done.set()

    receiving = threading.Thread(
        target=client.receive,
        kwargs={"on_event": on_event, "on_error": on_error, "partition_id": partition, "starting_position": "-1"},
    )
    receiving.start()
    try:
        assert done.wait(30), f"{len(got)} of {count} events in 30 s"
    finally:
        client.close()
        receiving.join()
    assert errors == []
    return got


@pytest.mark.integration
@pytest.mark.usefixtures("sdk_garbage")
async def test_async_clients_over_websocket() -> None:
    async with LocalHub([HubSpec("ws", partitions=2)]) as hub:
        options = endpoint(hub)
        async with EventHubProducerClient.from_connection_string(hub.connection_string(), **options) as producer:
            properties = await producer.get_eventhub_properties()
            await producer.send_batch(outgoing("async", 3), partition_id="1")
            partition = await producer.get_partition_properties("1")
            assert sinks(hub) == {WebSocketSink}  # the producer's connection, open
        got = await receive_async(hub, "1", 3, options)
    assert properties["eventhub_name"] == "ws"
    assert properties["partition_ids"] == ["0", "1"]
    assert partition["last_enqueued_sequence_number"] == 2
    assert not partition["is_empty"]
    check(got, "async", 3)


@pytest.mark.integration
@pytest.mark.usefixtures("sdk_garbage")
async def test_sync_clients_over_websocket() -> None:
    async with LocalHub([HubSpec("ws", partitions=2)]) as hub:
        cs, options = hub.connection_string(), endpoint(hub)

        def produce() -> tuple[dict[str, Any], dict[str, Any]]:
            with SyncProducer.from_connection_string(cs, **options) as producer:
                properties = producer.get_eventhub_properties()
                batch = producer.create_batch(partition_id="0")
                for event in outgoing("sync", 4):
                    batch.add(event)
                producer.send_batch(batch)
                return properties, producer.get_partition_properties("0")

        consumer = asyncio.create_task(asyncio.to_thread(receive_sync, cs, "0", 4, options))
        assert await reader_of(hub, "0") is WebSocketSink
        properties, partition = await asyncio.to_thread(produce)
        got = await consumer
    assert properties["partition_ids"] == ["0", "1"]
    assert partition["last_enqueued_sequence_number"] == 3
    check(got, "sync", 4)


@pytest.mark.integration
@pytest.mark.usefixtures("sdk_garbage")
async def test_plain_and_websocket_clients_share_the_port_at_once() -> None:
    async with LocalHub([HubSpec("both", partitions=2)]) as hub:
        # A plain consumer and a WebSocket one wait on their partitions while producers of the other
        # kind send to them.
        by_plain = asyncio.create_task(receive_async(hub, "0", 3, {}))
        by_websocket = asyncio.create_task(receive_async(hub, "1", 3, endpoint(hub)))
        assert await reader_of(hub, "0") is StreamSink
        assert await reader_of(hub, "1") is WebSocketSink
        cs = hub.connection_string()
        async with (
            EventHubProducerClient.from_connection_string(cs, **endpoint(hub)) as over_websocket,
            EventHubProducerClient.from_connection_string(cs) as plain,
        ):
            await over_websocket.send_batch(outgoing("to-plain", 3), partition_id="0")
            await plain.send_batch(outgoing("to-websocket", 3), partition_id="1")
        check(await by_plain, "to-plain", 3)
        check(await by_websocket, "to-websocket", 3)


@pytest.mark.integration
@pytest.mark.usefixtures("sdk_garbage")
# The SDK leaves the aiohttp session of a refused WebSocket for the garbage collector to close.
@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
async def test_a_wrong_path_is_refused() -> None:
    async with LocalHub([HubSpec("ws", partitions=1)]) as hub:
        options = {**endpoint(hub, "/elsewhere"), **FAST}
        with pytest.raises(EventHubError, match="404"):
            async with EventHubProducerClient.from_connection_string(hub.connection_string(), **options) as producer:
                await producer.get_eventhub_properties()

        def sync() -> None:
            with SyncProducer.from_connection_string(hub.connection_string(), **options) as producer:
                producer.get_eventhub_properties()

        with pytest.raises(EventHubError, match=r"404 Not Found .* no WebSocket endpoint at /elsewhere/"):
            await asyncio.to_thread(sync)


@pytest.mark.integration
async def test_a_client_without_the_subprotocol_is_refused() -> None:
    async with LocalHub([HubSpec("ws", partitions=1)]) as hub, aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refusal:
            await session.ws_connect(f"ws://{hub.host}:{hub.port}{PATH}")
        assert refusal.value.status == 400


class RawClient:
    """A WebSocket client over a real socket, driven by wsproto: for what the SDK never does."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.ws = WSConnection(ConnectionType.CLIENT)

    @classmethod
    async def open(cls, hub: LocalHub) -> RawClient:
        client = cls(*await asyncio.open_connection(hub.host, hub.port))
        client.send(Request(host=f"{hub.host}:{hub.port}", target=PATH, subprotocols=[SUBPROTOCOL]))
        assert await client.events() == [AcceptConnection(subprotocol=SUBPROTOCOL)]
        return client

    def send(self, event: Event) -> None:
        self.writer.write(self.ws.send(event))

    async def events(self) -> list[Event]:
        """The next events from the hub (end of stream: wsproto's abnormal closure, 1006)."""
        while True:
            data = await asyncio.wait_for(self.reader.read(65536), 30)
            self.ws.receive_data(data or None)
            if events := list(self.ws.events()):
                return events

    async def until_closed(self) -> list[Event]:
        got: list[Event] = []
        while not any(isinstance(event, CloseConnection) for event in got):
            got += await self.events()
        return got


async def no_connections(hub: LocalHub) -> None:
    async with asyncio.timeout(30):
        while hub.state.connections:  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # the hub's state, read in this process


@pytest.mark.integration
async def test_pings_and_a_close_from_the_peer() -> None:
    async with LocalHub([HubSpec("ws", partitions=1)]) as hub:
        client = await RawClient.open(hub)
        client.send(Ping(payload=b"still there?"))
        assert await client.events() == [Pong(payload=b"still there?")]
        client.send(CloseConnection(code=1000))
        assert await client.events() == [CloseConnection(code=1000, reason="")]
        assert await client.reader.read() == b""  # then the hub closes the socket
        await no_connections(hub)
        client.writer.close()


@pytest.mark.integration
async def test_the_hub_closes_the_websocket_when_the_amqp_connection_ends() -> None:
    async with LocalHub([HubSpec("ws", partitions=1)]) as hub:
        client = await RawClient.open(hub)
        client.send(Message(data=b"AMQP\x09\x09\x09\x09"))  # a protocol version the hub does not speak
        events = await client.until_closed()
        assert events[-1] == CloseConnection(code=1000, reason="")
        assert b"".join(e.data for e in events if isinstance(e, BytesMessage)).startswith(b"AMQP")
        await no_connections(hub)
        client.writer.close()


@pytest.mark.integration
async def test_a_peer_that_disappears_is_forgotten() -> None:
    async with LocalHub([HubSpec("ws", partitions=1)]) as hub:
        client = await RawClient.open(hub)
        client.send(Message(data=AMQP_HEADER))
        assert sinks(hub) == {WebSocketSink}
        client.writer.transport.abort()
        await no_connections(hub)
