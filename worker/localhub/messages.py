"""Event Hubs messages at the byte level: split a batch, read the partition key, stamp positions.

A message is a run of sections, each a described value: header (0x70), delivery annotations
(0x71), message annotations (0x72), properties (0x73), application properties (0x74), data
(0x75), sequence (0x76), value (0x77), footer (0x78). The SDK's ``send_batch`` sends one message
of format :data:`BATCH_FORMAT` whose data sections each hold a whole encoded message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from worker.localhub import codec
from worker.localhub.errors import ProtocolError

BATCH_FORMAT: Final = 0x80013700
HEADER, DELIVERY_ANNOTATIONS, MESSAGE_ANNOTATIONS, DATA = 0x70, 0x71, 0x72, 0x75
PARTITION_KEY: Final = "x-opt-partition-key"
SEQUENCE_NUMBER: Final = "x-opt-sequence-number"
OFFSET: Final = "x-opt-offset"
ENQUEUED_TIME: Final = "x-opt-enqueued-time"
_STAMPED: Final = frozenset((SEQUENCE_NUMBER, OFFSET, ENQUEUED_TIME, PARTITION_KEY))


@dataclass(frozen=True, slots=True)
class Section:
    """Where one section lies in a message: its code and its byte range."""

    code: int
    start: int
    end: int


def sections(message: bytes) -> list[Section]:
    """The sections of an encoded message, in order."""
    found = []
    pos = 0
    while pos < len(message):
        if message[pos] != 0x00:
            raise ProtocolError(f"a message section must be a described value (byte {pos} is 0x{message[pos]:02x})")
        descriptor, _ = codec.decode(message, pos + 1)
        end = codec.skip(message, pos)
        if not isinstance(descriptor, int):
            raise ProtocolError(f"unknown message section {descriptor!r} at byte {pos}")
        found.append(Section(descriptor, pos, end))
        pos = end
    return found


def _section_value(message: bytes, section: Section) -> object:
    described, _ = codec.decode(message, section.start)
    assert isinstance(described, codec.Described)  # noqa: S101 - sections() checked it
    return described.value


def split_batch(message: bytes) -> list[bytes]:
    """The messages held by a batch message's data sections."""
    return [
        value
        for section in sections(message)
        if section.code == DATA and isinstance(value := _section_value(message, section), bytes)
    ]


def message_annotations(message: bytes) -> dict[object, object]:
    """The message annotations of an encoded message (empty when it has none)."""
    for section in sections(message):
        if section.code == MESSAGE_ANNOTATIONS:
            value = _section_value(message, section)
            return value if isinstance(value, dict) else {}
    return {}


def partition_key(message: bytes) -> str | None:
    key = message_annotations(message).get(PARTITION_KEY)
    return key if isinstance(key, str) else None


@dataclass(frozen=True, slots=True)
class Stamp:
    """What the hub adds to a message it stores."""

    sequence_number: int
    offset: int
    enqueued_time: int  # epoch milliseconds
    partition_key: str | None


@dataclass(frozen=True, slots=True)
class Stamped:
    """A message as consumers receive it, and where its parts lie: the header ends at
    ``header_length``; the sender's delivery annotations, if any, end at ``annotations_end``."""

    message: bytes
    header_length: int
    annotations_end: int


def stamp(message: bytes, mark: Stamp) -> Stamped:
    """The message as consumers receive it, with the hub's annotations.

    Message annotations the sender set are kept, beside the hub's own; so are the sender's delivery
    annotations, as the service delivers them. They sit right after the header, where the hub adds
    its per-delivery annotations (:func:`with_delivery_annotations`).
    """
    parts = sections(message)
    kept: list[tuple[bytes, bytes]] = []
    header = delivery = b""
    rest = []
    for section in parts:
        if section.code == HEADER:
            header = message[section.start : section.end]
        elif section.code == DELIVERY_ANNOTATIONS:
            delivery = message[section.start : section.end]
        elif section.code == MESSAGE_ANNOTATIONS:
            kept += _entries(message, section, leaving=_STAMPED)
        else:
            rest.append(message[section.start : section.end])
    ours = [
        (codec.symbol(SEQUENCE_NUMBER), codec.long(mark.sequence_number)),
        (codec.symbol(OFFSET), codec.string(str(mark.offset))),
        (codec.symbol(ENQUEUED_TIME), codec.timestamp(mark.enqueued_time)),
    ]
    if mark.partition_key is not None:
        ours.append((codec.symbol(PARTITION_KEY), codec.string(mark.partition_key)))
    stamped = codec.described(MESSAGE_ANNOTATIONS, codec.map_of(ours + kept))
    return Stamped(header + delivery + stamped + b"".join(rest), len(header), len(header) + len(delivery))


def _entries(message: bytes, section: Section, leaving: frozenset[str] = frozenset()) -> list[tuple[bytes, bytes]]:
    """The raw key/value pairs of an annotations section, less those keyed in ``leaving``."""
    at = codec.skip(message, section.start + 1)  # past the descriptor
    kind = message[at]
    if kind not in (0xC1, 0xD1):
        return []
    pos = at + (3 if kind == 0xC1 else 9)
    pairs = []
    while pos < section.end:
        key_end = codec.skip(message, pos)
        value_end = codec.skip(message, key_end)
        key, _ = codec.decode(message, pos)
        if key not in leaving:
            pairs.append((message[pos:key_end], message[key_end:value_end]))
        pos = value_end
    return pairs


def with_delivery_annotations(stored: Stamped, entries: list[tuple[bytes, bytes]]) -> bytes:
    """The stored message with ``entries`` added to its delivery annotations (made when it has none)."""
    message, head, end = stored.message, stored.header_length, stored.annotations_end
    own = _entries(message, Section(DELIVERY_ANNOTATIONS, head, end)) if end > head else []
    added = {key for key, _ in entries}
    merged = [pair for pair in own if pair[0] not in added] + entries
    return message[:head] + codec.described(DELIVERY_ANNOTATIONS, codec.map_of(merged)) + message[end:]


def runtime_annotations(
    last_sequence_number: int, last_offset: int, last_enqueued: int, now: int
) -> list[tuple[bytes, bytes]]:
    """The runtime-metric delivery annotations a receiver asks for (``track_last_enqueued_event_properties``)."""
    return [
        (codec.symbol("last_enqueued_sequence_number"), codec.long(last_sequence_number)),
        (codec.symbol("last_enqueued_offset"), codec.string(str(last_offset))),
        (codec.symbol("last_enqueued_time_utc"), codec.timestamp(last_enqueued)),
        (codec.symbol("runtime_info_retrieval_time_utc"), codec.timestamp(now)),
    ]
