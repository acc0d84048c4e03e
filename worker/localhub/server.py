"""The local hub's AMQP server: asyncio owns the sockets, proton's engine speaks the protocol.

Each accepted socket gets a proton ``Transport`` (server mode, SASL ANONYMOUS), a ``Connection``
and a ``Collector``, all driven from the one event loop (proton is not thread-safe). Bytes from
the peer are also read here (:mod:`frames`) for what proton's Python binding does not expose: a
link's desired capabilities, its filter and properties, and each transfer's message format.
Bytes to the peer are padded (:func:`frames.pad_frames`), since the SDK reads fields by position.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final

import proton
import structlog
from cproton import (  # type: ignore[import-untyped]
    pn_delivery,
    pn_delivery_settle,
    pn_link_advance,
    pn_link_credit,
    pn_link_send,
)

from worker.localhub import frames, management, messages, routing
from worker.localhub.addresses import CBS, MANAGEMENT, Entity, parse_entity
from worker.localhub.errors import LocalHubError, ProtocolError, SelectorError
from worker.localhub.links import LinkRequest, link_request
from worker.localhub.management import TOKEN_ACCEPTED, Reply, Timestamp
from worker.localhub.store import HubSpec, HubStore, PartitionLog, Retention, Selector, parse_selector

log = structlog.get_logger("worker.localhub")

MAX_MESSAGE_SIZE: Final = 1024 * 1024
MAX_FRAME_SIZE: Final = 1024 * 1024
PRODUCER_CREDIT: Final = 1000
#: Deliveries encoded before the bytes so far go out.
FLUSH_EVERY: Final = 256
#: Every pre-settled delivery carries this tag: the SDK remembers tags it has seen.
DELIVERY_TAG: Final = b"\x00"
NOT_FOUND: Final = "amqp:not-found"
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
        extra = b""
        if self.runtime_metric and end > cursor:
            info = log_.info()
            extra = messages.delivery_annotations(
                info.last_sequence_number, info.last_offset, info.last_enqueued_time, clock()
            )
        for number in range(cursor, end):
            stored = log_.get(number)
            if stored is None:
                continue
            payload = stored.message
            if extra:
                cut = stored.header_length
                payload = payload[:cut] + extra + payload[cut:]
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

    @classmethod
    def create(cls, specs: list[HubSpec], retention: Retention, clock: Callable[[], int] = now_ms) -> HubState:
        created = clock()
        return cls({spec.name.casefold(): HubStore(spec, retention, created) for spec in specs}, clock)

    def store(self, name: str) -> HubStore | None:
        return self.stores.get(name.casefold())

    def publish(self, store: HubStore, partition: str | None, batch: list[bytes], key: str | None) -> None:
        """Append the messages of one transfer to one partition, and wake that partition's readers.

        The partition is the link's, else the one the key hashes to, else the next in turn: a batch
        stays together, as on the service.
        """
        ids = store.spec.partition_ids
        if partition is None and key is not None:
            partition = routing.partition_for_key(key, ids)
        elif partition is None:
            partition = next(self._rotation.setdefault(store.spec.name.casefold(), routing.round_robin(ids)))
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


class AmqpConnection:
    """One peer's connection: a proton engine fed from, and draining to, an asyncio stream."""

    def __init__(self, state: HubState, writer: asyncio.StreamWriter) -> None:
        self.state = state
        self.writer = writer
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
        self.peer = str(writer.get_extra_info("peername"))

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

    def refuse(self, link: proton.Link, condition: str, description: str) -> None:
        """Attach, then detach at once with an error: how the service refuses a link."""
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
        answer = TOKEN_ACCEPTED if node == CBS else management.read(properties, self.state.store)
        reply = _reply(message, answer)
        if reply_link is None:
            raise ProtocolError(f"no reply link for a request to {node!r} in this session")
        delivery = reply_link.delivery(str(next(self._tags)))
        reply_link.send(reply.encode())
        reply_link.advance()
        delivery.settle()

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
                self.writer.write(padded)
        if pending < 0 and not self.writer.is_closing():
            self.writer.close()

    def detach_receivers(self, condition: str) -> None:
        for outlet in list(self._outlets.values()):
            self.close_link(outlet.link, condition, "detached by the hub")

    def abort(self) -> None:
        """Drop the connection without a word, as a network failure would."""
        transport = self.writer.transport
        if transport is not None:
            transport.abort()


def _reply(request: proton.Message, reply: Reply) -> proton.Message:
    body = {k: proton.timestamp(v.millis) if isinstance(v, Timestamp) else v for k, v in (reply.body or {}).items()}
    description = reply.description
    return proton.Message(
        correlation_id=request.id,
        properties={"status-code": reply.status, "status-description": description, "statusDescription": description},
        body=body if reply.body is not None else None,
    )


async def serve_connection(state: HubState, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Run one peer's connection until either side closes it."""
    connection = AmqpConnection(state, writer)
    state.connections.add(connection)
    task = asyncio.current_task()
    if task is not None:
        state.tasks.add(task)
        task.add_done_callback(state.tasks.discard)
    try:
        while data := await reader.read(_READ_SIZE):
            connection.received(data)
            await writer.drain()
    except ConnectionError as exc:
        log.debug("localhub.connection.dropped", peer=connection.peer, reason=str(exc))
    except ProtocolError as exc:
        log.warning("localhub.connection.refused", peer=connection.peer, reason=str(exc))
    except Exception:
        # A bug in the hub: drop this connection, keep serving the others, and say why.
        log.exception("localhub.connection.failed", peer=connection.peer)
    finally:
        connection.closed()
        writer.close()
