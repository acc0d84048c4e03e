"""The local hub's pure parts: AMQP bytes, performative padding, messages, retention, selectors, addresses."""

from __future__ import annotations

import uuid

import pytest

from worker.localhub import codec, frames, links, management, messages
from worker.localhub.addresses import Entity, parse_entity
from worker.localhub.errors import ProtocolError, SelectorError
from worker.localhub.store import HubSpec, HubStore, PartitionLog, Retention, Selector, parse_selector


def data_section(body: bytes) -> bytes:
    return codec.described(messages.DATA, codec.binary(body))


def annotated(pairs: list[tuple[str, bytes]], body: bytes) -> bytes:
    section = codec.described(messages.MESSAGE_ANNOTATIONS, codec.map_of([(codec.symbol(k), v) for k, v in pairs]))
    return section + data_section(body)


# AMQP values -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoded", "value"),
    [
        (codec.NULL, None),
        (codec.long(-5), -5),
        (codec.timestamp(1_700_000_000_123), 1_700_000_000_123),
        (codec.string("héllo"), "héllo"),
        (codec.string("x" * 300), "x" * 300),
        (codec.symbol("x-opt-offset"), "x-opt-offset"),
        (codec.binary(b"\x00\x01"), b"\x00\x01"),
        (codec.list_of([codec.long(1), codec.NULL]), [1, None]),
        (codec.map_of([(codec.symbol("a"), codec.string("b"))]), {"a": "b"}),
        (b"\x98" + uuid.UUID(int=7).bytes, uuid.UUID(int=7)),
        (b"\xe0\x06\x02\xa3\x01a\x01b", ["a", "b"]),  # array8 of two symbols
        (b"\x52\x09", 9),
        (b"\x41", True),
    ],
)
def test_decode(encoded: bytes, value: object) -> None:
    assert codec.decode(encoded) == (value, len(encoded))
    assert codec.skip(encoded, 0) == len(encoded)


def test_described_values_keep_their_descriptor() -> None:
    value = codec.described(0x75, codec.binary(b"body"))
    assert codec.decode(value)[0] == codec.Described(0x75, b"body")


@pytest.mark.parametrize("broken", [b"\xa1\x05ab", b"\xff", b"\xd0\x00\x00\x00\x09"])
def test_malformed_values_are_protocol_errors(broken: bytes) -> None:
    with pytest.raises(ProtocolError):
        codec.skip(broken, 0)


# Padding -----------------------------------------------------------------------------------------


def frame(performative: bytes, payload: bytes = b"", channel: int = 0) -> bytes:
    body = performative + payload
    return (8 + len(body)).to_bytes(4, "big") + bytes((2, 0)) + channel.to_bytes(2, "big") + body


def test_padding_restores_trailing_nulls_in_nested_composites() -> None:
    error = codec.described(0x1D, codec.list_of([codec.symbol("amqp:link:stolen")]))
    detach = codec.described(0x16, codec.list_of([b"\x43", b"\x41", error]))
    padded, used = frames.pad_frames(b"AMQP\x00\x01\x00\x00" + frame(detach, channel=3))
    assert used == 8 + len(frame(detach))
    assert padded[:8] == b"AMQP\x00\x01\x00\x00"
    parsed = frames.parse(padded[8:], frozenset({0x16}))
    assert parsed is not None
    assert parsed.channel == 3
    assert parsed.fields == [0, True, codec.Described(0x1D, ["amqp:link:stolen", None, None])]


def test_padding_keeps_a_transfer_payload_and_pads_an_empty_list() -> None:
    transfer = codec.described(0x14, codec.list_of([b"\x43", b"\x43", codec.binary(b"\x00")]))
    close = codec.described(0x18, b"\x45")
    data = frame(transfer, b"\x00\x53\x75\xa0\x02hi") + frame(close)
    padded, used = frames.pad_frames(data + b"\x00\x00")  # a partial frame is left for later
    assert used == len(data)
    units = list(frames.FrameCutter().feed(padded))
    assert len(units) == 2
    assert units[0].endswith(b"\x00\x53\x75\xa0\x02hi")
    first = frames.parse(units[0], frozenset({0x14}))
    assert first is not None
    assert first.fields == [0, 0, b"\x00"] + [None] * 8
    second = frames.parse(units[1], frozenset({0x18}))
    assert second is not None
    assert second.fields == [None]


def test_the_cutter_joins_frames_split_across_reads() -> None:
    data = b"AMQP\x03\x01\x00\x00" + frame(codec.described(0x18, b"\x45")) + b"\x00\x00\x00\x08\x02\x00\x00\x00"
    cutter = frames.FrameCutter()
    units = [unit for i in range(len(data)) for unit in cutter.feed(data[i : i + 1])]
    assert b"".join(units) == data
    assert len(units) == 3


# Messages ----------------------------------------------------------------------------------------


def test_a_batch_splits_into_its_messages_and_keeps_its_key() -> None:
    inner = [data_section(b"one"), data_section(b"two")]
    batch = annotated([(messages.PARTITION_KEY, codec.string("k"))], b"").replace(data_section(b""), b"")
    batch += b"".join(data_section(message) for message in inner)
    assert messages.split_batch(batch) == inner
    assert messages.partition_key(batch) == "k"
    assert messages.partition_key(inner[0]) is None


def test_stamping_adds_positions_and_keeps_foreign_annotations() -> None:
    header = codec.described(messages.HEADER, codec.list_of([codec.NULL]))
    delivery = codec.described(messages.DELIVERY_ANNOTATIONS, codec.map_of([(codec.symbol("d"), codec.long(1))]))
    original = header + delivery + annotated([("x-custom", codec.long(3))], b"body")
    stamped = messages.stamp(original, messages.Stamp(5, 640, 1_700_000_000_000, "key"))
    assert stamped.header_length == len(header)
    assert stamped.annotations_end == len(header) + len(delivery)
    assert stamped.message.startswith(header + delivery)  # the sender's delivery annotations reach consumers
    assert messages.message_annotations(stamped.message) == {
        messages.SEQUENCE_NUMBER: 5,
        messages.OFFSET: "640",
        messages.ENQUEUED_TIME: 1_700_000_000_000,
        messages.PARTITION_KEY: "key",
        "x-custom": 3,
    }
    codes = [messages.HEADER, messages.DELIVERY_ANNOTATIONS, messages.MESSAGE_ANNOTATIONS, 0x75]
    assert [s.code for s in messages.sections(stamped.message)] == codes


def _delivery_annotations(message: bytes) -> dict[object, object]:
    (section,) = [s for s in messages.sections(message) if s.code == messages.DELIVERY_ANNOTATIONS]
    value, _ = codec.decode(message, section.start)
    assert isinstance(value, codec.Described)
    assert isinstance(value.value, dict)
    return value.value


@pytest.mark.parametrize("sender", [{}, {"d": 1, "last_enqueued_offset": "old"}])
def test_runtime_annotations_join_the_senders_delivery_annotations(sender: dict[str, int | str]) -> None:
    header = codec.described(messages.HEADER, codec.list_of([codec.NULL]))
    entries = [(codec.symbol(k), codec.long(v) if isinstance(v, int) else codec.string(v)) for k, v in sender.items()]
    delivery = codec.described(messages.DELIVERY_ANNOTATIONS, codec.map_of(entries)) if sender else b""
    stamped = messages.stamp(header + delivery + annotated([], b"body"), messages.Stamp(0, 0, 1, None))
    delivered = messages.with_delivery_annotations(stamped, messages.runtime_annotations(7, 896, 5_000, 6_000))
    expected: dict[object, object] = {"d": 1} if sender else {}
    expected |= {
        "last_enqueued_sequence_number": 7,
        "last_enqueued_offset": "896",
        "last_enqueued_time_utc": 5_000,
        "runtime_info_retrieval_time_utc": 6_000,
    }
    assert _delivery_annotations(delivered) == expected  # one section: the hub's values win
    codes = [messages.HEADER, messages.DELIVERY_ANNOTATIONS, messages.MESSAGE_ANNOTATIONS, 0x75]
    assert [s.code for s in messages.sections(delivered)] == codes


def test_a_message_of_something_else_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        messages.sections(b"\xa1\x01x")


# Retention and positions ------------------------------------------------------------------------


def filled(count: int, retention: Retention | None = None, *, start: int = 1000) -> PartitionLog:
    log = PartitionLog(retention or Retention())
    for i in range(count):
        log.append(data_section(f"event-{i}".encode()), None, start + 10 * i)
    return log


def test_retention_by_count_drops_the_oldest() -> None:
    log = filled(25, Retention(max_events=10))
    assert (log.begin, log.end, len(log)) == (15, 25, 10)
    assert log.get(14) is None
    stored = log.get(15)
    assert stored is not None
    assert stored.sequence_number == 15
    info = log.info()
    assert (info.begin_sequence_number, info.last_sequence_number, info.is_empty) == (15, 24, False)


def test_retention_by_bytes_keeps_at_least_the_newest() -> None:
    log = filled(50, Retention(max_bytes=500))
    assert 0 < len(log) < 50
    assert log.end == 50
    assert sum(len(s.message) for n in range(log.begin, log.end) if (s := log.get(n))) <= 500
    big = PartitionLog(Retention(max_bytes=10))
    big.append(data_section(b"x" * 100), None, 0)
    assert len(big) == 1


def test_a_long_run_stays_bounded() -> None:
    log = filled(10_000, Retention(max_events=100))
    assert len(log) == 100
    assert len(log._events) < 2_000  # the compaction keeps memory flat


def test_offsets_grow_and_times_never_go_back() -> None:
    log = PartitionLog(Retention())
    first = log.append(data_section(b"a"), None, 2000)
    second = log.append(data_section(b"b"), None, 1000)  # the clock stepped back
    assert second.offset == first.offset + len(first.message)
    assert second.enqueued_time == 2000


def test_empty_partition_info() -> None:
    info = PartitionLog(Retention()).info()
    assert (info.begin_sequence_number, info.last_sequence_number, info.last_offset, info.is_empty) == (0, -1, -1, True)


@pytest.mark.parametrize(
    ("text", "selector"),
    [
        ("amqp.annotation.x-opt-offset > '-1'", Selector("x-opt-offset", False, "-1")),
        ("amqp.annotation.x-opt-offset > '@latest'", Selector("x-opt-offset", False, "@latest")),
        ("amqp.annotation.x-opt-offset >= '1200'", Selector("x-opt-offset", True, "1200")),
        ("amqp.annotation.x-opt-sequence-number > '7'", Selector("x-opt-sequence-number", False, "7")),
        (
            "amqp.annotation.x-opt-enqueued-time >= '1700000000000'",
            Selector("x-opt-enqueued-time", True, "1700000000000"),
        ),
    ],
)
def test_parse_selector(text: str, selector: Selector) -> None:
    assert parse_selector(text) == selector


@pytest.mark.parametrize(
    "text",
    [
        "amqp.annotation.x-opt-offset < '5'",
        "amqp.annotation.x-opt-sequence-number > 'five'",
        "amqp.annotation.x-opt-partition-key > '5'",
        "amqp.annotation.x-opt-offset > 5",
        "",
    ],
)
def test_bad_selectors_are_refused(text: str) -> None:
    with pytest.raises(SelectorError):
        parse_selector(text)


def test_start_positions() -> None:
    log = filled(10)  # sequence numbers 0..9, enqueued at 1000, 1010, ...
    offset_of = {n: s.offset for n in range(10) if (s := log.get(n))}
    start = log.start
    assert start(None) == 0  # a link without a filter starts at the beginning, as on the service
    assert start(Selector("x-opt-offset", False, "@latest")) == 10
    assert start(Selector("x-opt-offset", False, "-1")) == 0
    assert start(Selector("x-opt-sequence-number", False, "3")) == 4
    assert start(Selector("x-opt-sequence-number", True, "3")) == 3
    assert start(Selector("x-opt-offset", False, str(offset_of[5]))) == 6
    assert start(Selector("x-opt-offset", True, str(offset_of[5]))) == 5
    assert start(Selector("x-opt-enqueued-time", False, "1050")) == 6
    assert start(Selector("x-opt-enqueued-time", True, "1050")) == 5
    assert start(Selector("x-opt-enqueued-time", True, "1051")) == 6
    assert start(Selector("x-opt-sequence-number", False, "99")) == 100
    trimmed = filled(10, Retention(max_events=4))
    assert trimmed.start(Selector("x-opt-sequence-number", False, "1")) == 6  # fell off: the oldest kept


# Addresses (partition keys: tests/test_routing.py) ----------------------------------------------


@pytest.mark.parametrize(
    ("address", "entity"),
    [
        ("amqps://127.0.0.1:5671/hub", Entity("hub")),
        ("amqps://127.0.0.1:5671/hub/Partitions/2", Entity("hub", None, "2")),
        ("amqps://h/hub/ConsumerGroups/$Default/Partitions/0", Entity("hub", "$Default", "0")),
        ("hub/consumergroups/audit/partitions/1", Entity("hub", "audit", "1")),
        ("hub/Partitions", None),
        ("", None),
    ],
)
def test_parse_entity(address: str, entity: Entity | None) -> None:
    assert parse_entity(address) == entity


# Attach requests and the management node -------------------------------------------------------


def test_link_request_reads_filter_epoch_and_capabilities() -> None:
    selector = codec.described(0x468C00000004, codec.string("amqp.annotation.x-opt-offset > '-1'"))
    source = codec.described(
        0x28,
        codec.list_of(
            [codec.string("amqps://h/hub/ConsumerGroups/$Default/Partitions/0")]
            + [codec.NULL] * 6
            + [codec.map_of([(codec.symbol(links.SELECTOR_FILTER), selector)])]
        ),
    )
    fields = [codec.string("r1"), b"\x52\x05", b"\x41", codec.NULL, codec.NULL, source, codec.NULL]
    fields += [codec.NULL] * 5 + [codec.symbol(links.RUNTIME_METRIC)]
    fields.append(codec.map_of([(codec.symbol(links.EPOCH), codec.long(3))]))
    attach = frame(codec.described(0x12, codec.list_of(fields)), channel=2)
    parsed = frames.parse(attach, frozenset({0x12}))
    assert parsed is not None
    request = links.link_request(parsed)
    assert request == links.LinkRequest(
        channel=2,
        handle=5,
        name="r1",
        source="amqps://h/hub/ConsumerGroups/$Default/Partitions/0",
        target=None,
        selector="amqp.annotation.x-opt-offset > '-1'",
        epoch=3,
        runtime_metric=True,
    )


def test_management_reads_hub_and_partition_properties() -> None:
    store = HubStore(HubSpec("hub", partitions=2), Retention(), created_at=1_000)
    store.logs["1"].append(data_section(b"x"), None, 5_000)
    stores = {"hub": store}
    hub = management.read({"operation": "READ", "name": "HUB", "type": "com.microsoft:eventhub"}, stores.get)
    assert hub.status == 404  # names are looked up as given here; the server folds case first
    hub = management.read({"operation": "READ", "name": "hub", "type": "com.microsoft:eventhub"}, stores.get)
    assert (hub.status, hub.body and hub.body["partition_ids"]) == (200, ["0", "1"])
    partition = management.read(
        {"operation": "READ", "name": "hub", "type": "com.microsoft:partition", "partition": "1"}, stores.get
    )
    assert partition.body is not None
    assert partition.body["last_enqueued_sequence_number"] == 0
    assert partition.body["last_enqueued_time_utc"] == management.Timestamp(5_000)
    assert management.read({"operation": "READ", "name": "nope"}, stores.get).status == 404
    assert management.read({"operation": "READ", "name": "hub", "partition": "7"}, stores.get).status == 404
    assert management.read({"operation": "DELETE"}, stores.get).status == 400
