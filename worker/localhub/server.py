"""The local hub's AMQP server: asyncio owns the sockets, proton's engine speaks the protocol.

Each accepted socket gets a proton ``Transport`` (server mode, SASL ANONYMOUS), a ``Connection``
and a ``Collector``, all driven from the one event loop (proton is not thread-safe). Bytes from
the peer are also read here (:mod:`frames`) for what proton's Python binding does not expose: a
link's desired capabilities, its filter and properties, and each transfer's message format.
Bytes to the peer are padded (:func:`frames.pad_frames`), since the SDK reads fields by position.
A connection whose first bytes are an HTTP ``GET`` is AMQP over WebSocket (:mod:`websocket`): its
bytes travel in WebSocket messages, through a :class:`WebSocketSink` on the way out.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

import proton
import structlog
from cproton import (  # type: ignore[import-untyped]
    pn_delivery,
    pn_delivery_settle,
    pn_link_advance,
    pn_link_credit,
    pn_link_send,
)

from worker.localhub import authorization, frames, management, messages, websocket
from worker.localhub.addresses import CBS, MANAGEMENT, Entity, parse_entity
from worker.localhub.errors import LocalHubError, ProtocolError, SelectorError
from worker.localhub.links import LinkRequest, link_request
from worker.localhub.management import Reply, Timestamp
from worker.localhub.store import HubSpec, HubStore, PartitionLog, Retention, Selector, parse_selector
from worker.sending import placement

log = structlog.get_logger("worker.localhub")

MAX_MESSAGE_SIZE: Final = 1024 * 1024
MAX_FRAME_SIZE: Final = 1024 * 1024
PRODUCER_CREDIT: Final = 1000
#: Deliveries encoded before the bytes so far go out.
FLUSH_EVERY: Final = 256
#: Every pre-settled delivery carries this tag: the SDK remembers tags it has seen.
DELIVERY_TAG: Final = b"\x00"
NOT_FOUND: Final = "amqp:not-found"
UNAUTHORIZED: Final = "amqp:unauthorized-access"
STOLEN: Final = "amqp:link:stolen"
INVALID_FIELD: Final = "amqp:invalid-field"
_SNIFFED: Final = frozenset((frames.ATTACH, frames.TRANSFER))
_READ_SIZE: Final = 256 * 1024


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Outlet:
    """One consumer link: where it reads, how far it has got, and whether it wants runtime metrics."""

    __slots__ = ("connection", "cursor", "entity", "epoch", "link", "log", "runtime_metric")

    def __init__(
        self, connection: AmqpConnection, link: proton.Sender, entity: Entity, log_: PartitionLog, start: int
    ) -> None:
        self.connection = connection
        self.link = link
        self.entity = entity
        self.log = log_
        self.cursor = start
        self.epoch: int | None = None
        self.runtime_metric = False

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.entity.hub.casefold(), str(self.entity.consumer_group).casefold(), str(self.entity.partition))

    def deliver(self, clock: Callable[[], int]) -> None:
        """Send what the link has credit for, pre-settled, each with the same tag."""
        if self.connection.state.stuck and (self.key[0], self.key[2]) in self.connection.state.stuck:
            return  # a fault injected on purpose: the link stays open and delivers nothing
        impl = self.link._impl
        credit = pn_link_credit(impl)
        if credit <= 0:
            return
        log_ = self.log
        cursor = max(self.cursor, log_.begin)
        end = min(log_.end, cursor + credit)
        runtime: list[tuple[bytes, bytes]] = []
        if self.runtime_metric and end > cursor:
            info = log_.info()
            runtime = messages.runtime_annotations(
                info.last_sequence_number, info.last_offset, info.last_enqueued_time, clock()
            )
        for number in range(cursor, end):
            stored = log_.get(number)
            if stored is None:
                continue
            payload = messages.with_delivery_annotations(stored.stamped, runtime) if runtime else stored.message
            delivery = pn_delivery(impl, DELIVERY_TAG)
            pn_link_send(impl, payload)
            pn_link_advance(impl)
            pn_delivery_settle(delivery)
            if (number - cursor) % FLUSH_EVERY == FLUSH_EVERY - 1:
                self.connection.flush()  # the consumer starts on the first ones while the rest are encoded
        self.cursor = end


@dataclass
class HubState:
    """Everything the server knows: the hubs' stores and who reads which partition."""

    stores: dict[str, HubStore]
    clock: Callable[[], int] = now_ms
    outlets: dict[tuple[str, str], set[Outlet]] = field(default_factory=dict)
    owners: dict[tuple[str, str, str], list[Outlet]] = field(default_factory=dict)
    connections: set[AmqpConnection] = field(default_factory=set)
    #: The tasks serving connections, awaited when the hub stops.
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    #: (hub, partition) whose consumer links deliver nothing: a stuck receiver, for tests.
    stuck: set[tuple[str, str]] = field(default_factory=set)
    _rotation: dict[str, Iterator[str]] = field(default_factory=dict)
    #: The shared access keys tokens are checked against: key name -> key.
    keys: Mapping[str, str] = field(default_factory=lambda: dict(authorization.DEVELOPMENT_KEYS))

    @classmethod
    def create(
        cls,
        specs: list[HubSpec],
        retention: Retention,
        clock: Callable[[], int] = now_ms,
        keys: Mapping[str, str] = authorization.DEVELOPMENT_KEYS,
    ) -> HubState:
        created = clock()
        stores = {spec.name.casefold(): HubStore(spec, retention, created) for spec in specs}
        return cls(stores, clock, keys=dict(keys))

    def store(self, name: str) -> HubStore | None:
        return self.stores.get(name.casefold())

    def publish(self, store: HubStore, partition: str | None, batch: list[bytes], key: str | None) -> None:
        """Append the messages of one transfer to one partition, and wake that partition's readers.

        The partition is the link's, else the one the key hashes to, else the next in turn: a batch
        stays together, as on the service.
        """
        ids = store.spec.partition_ids
        if partition is None and key is not None:
            partition = placement.partition_for_key(key, ids)
        elif partition is None:
            partition = next(self._rotation.setdefault(store.spec.name.casefold(), placement.round_robin(ids)))
        now = self.clock()
        partition_log = store.logs[partition]
        for message in batch:
            partition_log.append(message, messages.partition_key(message) or key, now)
        for outlet in self.outlets.get((store.spec.name.casefold(), partition), ()):
            outlet.connection.wake()

    def attach(self, outlet: Outlet, epoch: int | None) -> str | None:
        """Register a consumer; the error condition to refuse it with, if any (closing whom it takes over from)."""
        holders = self.owners.setdefault(outlet.key, [])
        held = [o.epoch for o in holders if o.epoch is not None]
        if held and (epoch is None or epoch < max(held)):
            return STOLEN
        if epoch is not None:
            for previous in list(holders):
                previous.connection.close_link(
                    previous.link, STOLEN, f"a receiver with owner level {epoch} took over {outlet.entity}"
                )
                self.detach(previous)
        outlet.epoch = epoch
        holders.append(outlet)
        self.outlets.setdefault((outlet.key[0], outlet.key[2]), set()).add(outlet)
        return None

    def detach(self, outlet: Outlet) -> None:
        holders = self.owners.get(outlet.key, [])
        if outlet in holders:
            holders.remove(outlet)
        self.outlets.get((outlet.key[0], outlet.key[2]), set()).discard(outlet)


class Sink(Protocol):
    """Where a connection's bytes go: straight onto the socket, or in WebSocket messages on it."""

    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def is_closing(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class StreamSink:
    """AMQP bytes straight onto the socket."""

    writer: asyncio.StreamWriter

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    def close(self) -> None:
        self.writer.close()

    def abort(self) -> None:
        """Drop the socket without a word, as a network failure would."""
        transport = self.writer.transport
        if transport is not None:
            transport.abort()

    def is_closing(self) -> bool:
        return self.writer.is_closing()


@dataclass(frozen=True, slots=True)
class WebSocketSink(StreamSink):
    """AMQP bytes in binary WebSocket messages on the socket; closing sends a close frame first."""

    socket: websocket.AmqpWebSocket

    def write(self, data: bytes) -> None:
        self.writer.write(self.socket.send(data))

    def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.write(self.socket.close())
        self.writer.close()


class AmqpConnection:
    """One peer's connection: a proton engine fed from an asyncio stream, draining to a :class:`Sink`."""

    def __init__(self, state: HubState, sink: Sink, peer: str) -> None:
        self.state = state
        #: The socket itself, until the first bytes show a WebSocket handshake (:func:`serve_connection`).
        self.sink = sink
        self.transport = proton.Transport(proton.Transport.SERVER)
        self.transport.max_frame_size = MAX_FRAME_SIZE
        sasl = self.transport.sasl()
        sasl.allowed_mechs("ANONYMOUS")
        self.connection = proton.Connection()
        self.collector = proton.Collector()
        self.connection.collect(self.collector)
        self.transport.bind(self.connection)
        self._cutter = frames.FrameCutter()
        self._unpadded = b""
        self._requests: dict[str, LinkRequest] = {}
        self._handles: dict[tuple[int, int], str] = {}
        self._continuing: dict[tuple[int, int], bool] = {}
        self._formats: dict[str, deque[int]] = {}
        self._producers: dict[str, tuple[HubStore, str | None]] = {}
        self._nodes: dict[tuple[int, str], proton.Sender] = {}
        self._outlets: dict[str, Outlet] = {}
        self._woken = False
        self._tags = itertools.count()  # delivery tags of management and token replies
        self._grants: dict[str, authorization.Grant] = {}  # what the tokens put on $cbs grant, by resource
        self.peer = peer

    # Input ---------------------------------------------------------------------------------------

    def received(self, data: bytes) -> None:
        for unit in self._cutter.feed(data):
            frame = frames.parse(unit, _SNIFFED)
            if frame is not None:
                self._sniff(frame)
        pushed = 0
        while pushed < len(data):
            room = self.transport.capacity()
            if room <= 0:
                raise ProtocolError("the peer sent more than the AMQP engine can take")
            self.transport.push(data[pushed : pushed + room])
            pushed += room
            self.process()
        self.process()

    def _sniff(self, frame: frames.Frame) -> None:
        if frame.code == frames.ATTACH:
            request = link_request(frame)
            self._requests[request.name] = request
            self._handles[(request.channel, request.handle)] = request.name
            return
        fields = frame.fields
        key = (frame.channel, int(fields[0]) if fields and isinstance(fields[0], int) else -1)
        if not self._continuing.get(key):
            fmt = fields[3] if len(fields) > 3 and isinstance(fields[3], int) else 0
            self._formats.setdefault(self._handles.get(key, ""), deque()).append(fmt)
        self._continuing[key] = len(fields) > 5 and fields[5] is True

    def closed(self) -> None:
        """The socket is gone: forget this connection's links."""
        self.transport.close_tail()
        for outlet in self._outlets.values():
            self.state.detach(outlet)
        self._outlets.clear()
        self.state.connections.discard(self)

    # Events --------------------------------------------------------------------------------------

    def process(self) -> None:
        collector = self.collector
        while (event := collector.peek()) is not None:
            kind = event.type
            if kind == proton.Event.CONNECTION_REMOTE_OPEN:
                self.connection.container = "localhub"
                self.connection.open()
            elif kind == proton.Event.SESSION_REMOTE_OPEN and event.session is not None:
                event.session.open()
            elif kind == proton.Event.LINK_REMOTE_OPEN and event.link is not None:
                self._link_opened(event.link)
            elif kind == proton.Event.LINK_FLOW and event.link is not None:
                outlet = self._outlets.get(event.link.name)
                if outlet is not None:
                    outlet.deliver(self.state.clock)
            elif kind == proton.Event.DELIVERY and event.delivery is not None:
                self._delivery(event.delivery)
            elif kind == proton.Event.LINK_REMOTE_CLOSE and event.link is not None:
                self._link_closed(event.link)
            elif kind == proton.Event.SESSION_REMOTE_CLOSE and event.session is not None:
                event.session.close()
            elif kind == proton.Event.CONNECTION_REMOTE_CLOSE:
                self.connection.close()
            collector.pop()
        self.flush()

    def _link_opened(self, link: proton.Link) -> None:
        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)
        request = self._requests.get(link.name)
        if request is None:
            self.refuse(link, INVALID_FIELD, "attach not understood")
            return
        if link.is_receiver:
            self._producer_opened(link, request)
        else:
            self._consumer_opened(link, request)  # type: ignore[arg-type]

    def _producer_opened(self, link: proton.Link, request: LinkRequest) -> None:
        address = request.target or ""
        if address.endswith((CBS, MANAGEMENT)):
            link.open()
            link.flow(100)
            return
        if not self._authorized(link, address, "Send"):
            return
        entity = parse_entity(address)
        store = self.state.store(entity.hub) if entity else None
        if entity is None or store is None or entity.consumer_group is not None:
            self.refuse(link, NOT_FOUND, f"the messaging entity {address!r} could not be found")
            return
        if entity.partition is not None and entity.partition not in store.logs:
            self.refuse(link, NOT_FOUND, f"partition {entity.partition!r} of {store.spec.name!r} does not exist")
            return
        link.max_message_size = MAX_MESSAGE_SIZE
        self._producers[link.name] = (store, entity.partition)
        link.open()
        link.flow(PRODUCER_CREDIT)

    def _consumer_opened(self, link: proton.Sender, request: LinkRequest) -> None:
        address = request.source or ""
        if address.endswith((CBS, MANAGEMENT)):
            link.snd_settle_mode = proton.Link.SND_SETTLED
            self._nodes[(request.channel, address.rsplit("/", 1)[-1])] = link
            link.open()
            return
        if not self._authorized(link, address, "Listen"):
            return
        entity = parse_entity(address)
        store = self.state.store(entity.hub) if entity else None
        if entity is None or store is None:
            self.refuse(link, NOT_FOUND, f"the messaging entity {address!r} could not be found")
            return
        if entity.consumer_group is None or not store.has_consumer_group(entity.consumer_group):
            self.refuse(
                link, NOT_FOUND, f"consumer group {entity.consumer_group!r} of {store.spec.name!r} does not exist"
            )
            return
        partition_log = store.logs.get(str(entity.partition))
        if partition_log is None:
            self.refuse(link, NOT_FOUND, f"partition {entity.partition!r} of {store.spec.name!r} does not exist")
            return
        selector: Selector | None = None
        if request.selector is not None:
            try:
                selector = parse_selector(request.selector)
            except SelectorError as exc:
                self.refuse(link, INVALID_FIELD, str(exc))
                return
        link.snd_settle_mode = proton.Link.SND_SETTLED
        outlet = Outlet(self, link, entity, partition_log, partition_log.start(selector))
        outlet.runtime_metric = request.runtime_metric
        refusal = self.state.attach(outlet, request.epoch)
        if refusal is not None:
            self.refuse(link, refusal, f"a receiver with a higher owner level holds {address}")
            return
        self._outlets[link.name] = outlet
        link.open()
        log.debug("localhub.receiver.attached", peer=self.peer, address=address, start=outlet.cursor)
        outlet.deliver(self.state.clock)

    def _authorized(self, link: proton.Link, address: str, claim: str) -> bool:
        """Whether a token this connection put grants ``address``; if not, refuse the link as the service does."""
        if authorization.authorized(self._grants.values(), address, self.state.clock() / 1000):
            return True
        self.refuse(link, UNAUTHORIZED, authorization.unauthorized_link(claim, address))
        return False

    def refuse(self, link: proton.Link, condition: str, description: str) -> None:
        """Attach, then detach at once with an error: how the service refuses a link. A refused send link
        is answered with no target, so the SDK's producer fails as it opens (it counts a send link as
        open at the attach, before the detach arrives); a receive link keeps its source, the SDK's
        consumer reporting the detach's error."""
        if link.is_receiver:
            link.target.type = proton.Terminus.UNSPECIFIED
        link.open()
        self.close_link(link, condition, description)
        log.info("localhub.link.refused", peer=self.peer, link=link.name, condition=condition, reason=description)

    def close_link(self, link: proton.Link, condition: str, description: str) -> None:
        link.condition = proton.Condition(condition, description)
        link.close()
        outlet = self._outlets.pop(link.name, None)
        if outlet is not None:
            self.state.detach(outlet)
        self.wake()

    def _link_closed(self, link: proton.Link) -> None:
        outlet = self._outlets.pop(link.name, None)
        if outlet is not None:
            self.state.detach(outlet)
        self._producers.pop(link.name, None)
        link.close()

    def _delivery(self, delivery: proton.Delivery) -> None:
        link = delivery.link
        if not link.is_receiver or not delivery.readable or delivery.partial:
            return
        payload = link.recv(delivery.pending) or b""
        link.advance()
        fmt = self._formats.get(link.name)
        message_format = fmt.popleft() if fmt else 0
        producer = self._producers.get(link.name)
        try:
            if producer is not None:
                self._publish(producer, payload, message_format)
            else:
                self._node_request(link, payload)
        except LocalHubError as exc:
            delivery.local.condition = proton.Condition(INVALID_FIELD, str(exc))
            delivery.update(proton.Delivery.REJECTED)
        else:
            delivery.update(proton.Delivery.ACCEPTED)
        delivery.settle()
        if link.credit < PRODUCER_CREDIT // 2:
            link.flow(PRODUCER_CREDIT - link.credit)

    def _publish(self, producer: tuple[HubStore, str | None], payload: bytes, message_format: int) -> None:
        store, partition = producer
        batch = messages.split_batch(payload) if message_format == messages.BATCH_FORMAT else [payload]
        self.state.publish(store, partition, batch, messages.partition_key(payload))

    # Management and claims-based security ----------------------------------------------------------

    def _node_request(self, link: proton.Link, payload: bytes) -> None:
        request = self._requests.get(link.name)
        node = (request.target or "").rsplit("/", 1)[-1] if request else ""
        reply_link = self._nodes.get((request.channel if request else -1, node))
        message = proton.Message()
        message.decode(payload)
        properties: dict[object, object] = dict(message.properties or {})
        answer = self._put_token(properties, message.body) if node == CBS else self._read(properties)
        reply = _reply(message, answer)
        if reply_link is None:
            raise ProtocolError(f"no reply link for a request to {node!r} in this session")
        delivery = reply_link.delivery(str(next(self._tags)))
        reply_link.send(reply.encode())
        reply_link.advance()
        delivery.settle()

    def _put_token(self, properties: dict[object, object], body: object) -> Reply:
        """Check a token put on ``$cbs``; a valid one grants its resource to this connection's links."""
        answer, grant = management.put_token(
            properties, body, self.state.keys, self.state.clock() / 1000, self.state.store
        )
        audience = properties.get("name")
        if grant is None:
            log.info("localhub.token.refused", peer=self.peer, audience=audience, reason=answer.description)
            return answer
        self._grants[grant.resource.casefold()] = grant
        log.debug("localhub.token.accepted", peer=self.peer, audience=audience, expiry=grant.expiry)
        return answer

    def _read(self, properties: dict[object, object]) -> Reply:
        refused = management.refuse_read(properties, self.state.keys, self.state.clock() / 1000)
        if refused is not None:
            name = properties.get("name")
            log.info("localhub.management.refused", peer=self.peer, name=name, reason=refused.description)
            return refused
        return management.read(properties, self.state.store)

    # Output --------------------------------------------------------------------------------------

    def wake(self) -> None:
        """Deliver and flush soon (another connection published, or a link was closed from outside)."""
        if not self._woken:
            self._woken = True
            asyncio.get_running_loop().call_soon(self._pump)

    def _pump(self) -> None:
        self._woken = False
        for outlet in list(self._outlets.values()):
            outlet.deliver(self.state.clock)
        self.process()

    def flush(self) -> None:
        transport = self.transport
        while (pending := transport.pending()) > 0:
            data = self._unpadded + (transport.peek(pending) or b"")
            transport.pop(pending)
            padded, used = frames.pad_frames(data)
            self._unpadded = data[used:]
            if padded:
                self.sink.write(padded)
        if pending < 0 and not self.sink.is_closing():
            self.sink.close()

    def detach_receivers(self, condition: str) -> None:
        for outlet in list(self._outlets.values()):
            self.close_link(outlet.link, condition, "detached by the hub")

    def abort(self) -> None:
        """Drop the connection without a word, as a network failure would."""
        self.sink.abort()


def _reply(request: proton.Message, reply: Reply) -> proton.Message:
    body = {k: proton.timestamp(v.millis) if isinstance(v, Timestamp) else v for k, v in (reply.body or {}).items()}
    description = reply.description
    return proton.Message(
        correlation_id=request.id,
        properties={"status-code": reply.status, "status-description": description, "statusDescription": description},
        body=body if reply.body is not None else None,
    )


async def serve_connection(state: HubState, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Run one peer's connection until either side closes it: AMQP on the socket, or AMQP over
    WebSocket when its first bytes are an HTTP ``GET`` (both are served on the one port)."""
    connection = AmqpConnection(state, StreamSink(writer), str(writer.get_extra_info("peername")))
    state.connections.add(connection)
    task = asyncio.current_task()
    if task is not None:
        state.tasks.add(task)
        task.add_done_callback(state.tasks.discard)
    try:
        data, upgrade = await _first_bytes(reader)
        socket = websocket.AmqpWebSocket() if upgrade else None
        if socket is not None:
            connection.sink = WebSocketSink(writer, socket)
        while data:
            if socket is None:
                connection.received(data)
            elif not _unwrap(socket, data, connection, writer):
                break
            await writer.drain()
            data = await reader.read(_READ_SIZE)
    except ConnectionError as exc:
        log.debug("localhub.connection.dropped", peer=connection.peer, reason=str(exc))
    except ProtocolError as exc:
        log.warning("localhub.connection.refused", peer=connection.peer, reason=str(exc))
    except Exception:
        # A bug in the hub: drop this connection, keep serving the others, and say why.
        log.exception("localhub.connection.failed", peer=connection.peer)
    finally:
        connection.closed()
        connection.sink.close()


async def _first_bytes(reader: asyncio.StreamReader) -> tuple[bytes, bool]:
    """Read until a connection's first bytes tell a WebSocket handshake from AMQP: (the bytes, is it WebSocket)."""
    data = b""
    while (upgrade := websocket.opens_handshake(data)) is None:
        more = await reader.read(_READ_SIZE)
        if not more:
            return data, False
        data += more
    return data, upgrade


def _unwrap(
    socket: websocket.AmqpWebSocket, data: bytes, connection: AmqpConnection, writer: asyncio.StreamWriter
) -> bool:
    """Pass bytes from a WebSocket peer on: answers to the peer, AMQP to the connection. False once it is over."""
    received = socket.receive(data)
    writer.write(received.reply)
    if received.amqp:
        connection.received(received.amqp)
    if received.problem is not None:
        log.info("localhub.websocket.refused", peer=connection.peer, reason=received.problem)
    return not received.finished
