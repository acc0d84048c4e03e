"""AMQP frames at the byte level: cut a byte stream into frames, and pad performatives.

The azure-eventhub SDK's AMQP stack reads performative fields by position, so every frame the hub
sends must carry its full field list, trailing nulls included, nested composites too. proton's
encoder drops trailing nulls, as AMQP allows; :func:`pad_frames` puts them back.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from worker.localhub import codec

#: Full field counts of the composites the hub sends, by descriptor code.
FIELD_COUNTS: Final = {
    0x10: 10,  # open
    0x11: 8,  # begin
    0x12: 14,  # attach
    0x13: 11,  # flow
    0x14: 11,  # transfer
    0x15: 6,  # disposition
    0x16: 3,  # detach
    0x17: 1,  # end
    0x18: 1,  # close
    0x1D: 3,  # error
    0x23: 2,  # received
    0x24: 0,  # accepted
    0x25: 1,  # rejected
    0x26: 0,  # released
    0x27: 3,  # modified
    0x28: 11,  # source
    0x29: 7,  # target
    0x40: 1,  # sasl-mechanisms
    0x44: 2,  # sasl-outcome
}
ATTACH: Final = 0x12
TRANSFER: Final = 0x14
PROTOCOL_HEADER_SIZE: Final = 8
_HEAD: Final = struct.Struct(">IBBH")


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame: its channel, and its performative's code and fields (None for an empty frame)."""

    channel: int
    code: int | None
    fields: list[object]


class FrameCutter:
    """Cuts a byte stream (protocol headers, then frames) into whole units, across reads."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The protocol headers and frames completed by ``data``, each whole."""
        self._buffer += data
        buffer = self._buffer
        pos = 0
        while True:
            if len(buffer) - pos < PROTOCOL_HEADER_SIZE:
                break
            if buffer[pos : pos + 4] == b"AMQP":
                size = PROTOCOL_HEADER_SIZE
            else:
                size = _HEAD.unpack_from(buffer, pos)[0]
                size = max(size, PROTOCOL_HEADER_SIZE)
            if len(buffer) - pos < size:
                break
            yield bytes(buffer[pos : pos + size])
            pos += size
        del buffer[:pos]


def parse(unit: bytes, codes: frozenset[int]) -> Frame | None:
    """The frame in ``unit`` when its performative is one of ``codes``; None otherwise (and for headers)."""
    if unit[:4] == b"AMQP":
        return None
    _, doff, _, channel = _HEAD.unpack_from(unit)
    start = doff * 4
    if len(unit) <= start or unit[start] != 0x00:
        return None
    descriptor, at = codec.decode(unit, start + 1)
    if descriptor not in codes:
        return None
    fields, _ = codec.decode(unit, at)
    return Frame(channel, int(descriptor), fields if isinstance(fields, list) else [])


def pad_frames(data: bytes) -> tuple[bytes, int]:
    """``data`` with every performative padded to its full length, up to the last whole unit.

    Returns the padded bytes and how many bytes of ``data`` they cover (a partial frame at the end
    is left for the next call).
    """
    out = []
    pos = 0
    end = len(data)
    while end - pos >= PROTOCOL_HEADER_SIZE:
        if data[pos : pos + 4] == b"AMQP":
            out.append(data[pos : pos + PROTOCOL_HEADER_SIZE])
            pos += PROTOCOL_HEADER_SIZE
            continue
        size, doff, kind, channel = _HEAD.unpack_from(data, pos)
        frame_end = pos + size
        if frame_end > end:
            break
        start = pos + doff * 4
        if start >= frame_end:  # an empty frame (heartbeat)
            out.append(data[pos:frame_end])
        else:
            body_end = codec.skip(data, start)
            body = pad(data, start, body_end)
            header = data[pos + 8 : start]
            out.append(_HEAD.pack(8 + len(header) + len(body) + frame_end - body_end, doff, kind, channel))
            out.append(header)
            out.append(body)
            out.append(data[body_end:frame_end])
        pos = frame_end
    return b"".join(out), pos


def pad(buf: bytes, start: int, end: int) -> bytes:
    """The value in ``buf[start:end]``, re-encoded with every known composite padded to its full length."""
    if buf[start] != 0x00:
        return buf[start:end]
    at = codec.skip(buf, start + 1)
    code = buf[start + 2] if buf[start + 1] == 0x53 else None
    full = FIELD_COUNTS.get(code) if code is not None else None
    kind = buf[at]
    if full is None or kind not in (0x45, 0xC0, 0xD0):
        return buf[start:end]
    if kind == 0x45:
        items_start = at + 1
    elif kind == 0xC0:
        items_start = at + 3
    else:
        items_start = at + 9
    items = []
    pos = items_start
    while pos < end:
        item_end = codec.skip(buf, pos)
        items.append(pad(buf, pos, item_end) if buf[pos] == 0x00 else buf[pos:item_end])
        pos = item_end
    items.extend([codec.NULL] * (full - len(items)))
    return buf[start:at] + codec.list_of(items)
