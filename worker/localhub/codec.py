"""AMQP 1.0 values at the byte level: skip, decode and encode the types the local hub meets.

Pure functions over ``bytes``. Decoding gives plain Python values: null None, booleans, integers
(timestamps as integer milliseconds), floats, ``str`` for strings and symbols, ``bytes`` for
binaries, ``uuid.UUID``, lists (arrays too), dicts and :class:`Described`. Encoding covers what the
hub writes itself: message annotations, delivery annotations and padded performatives.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from worker.localhub.errors import ProtocolError

NULL: Final = b"\x40"

# Width of the fixed-size types, by format code.
_FIXED: Final = {
    **dict.fromkeys((0x40, 0x41, 0x42, 0x43, 0x44, 0x45), 0),
    **dict.fromkeys(range(0x50, 0x57), 1),
    **dict.fromkeys((0x60, 0x61), 2),
    **dict.fromkeys(range(0x70, 0x75), 4),
    **dict.fromkeys(range(0x80, 0x85), 8),
    **dict.fromkeys((0x94, 0x98), 16),
}
#: Variable-width types whose size takes one byte, and four bytes.
_SMALL: Final = frozenset((0xA0, 0xA1, 0xA3, 0xC0, 0xC1, 0xE0))
_LARGE: Final = frozenset((0xB0, 0xB1, 0xB3, 0xD0, 0xD1, 0xF0))
_SIZE1: Final = 1
_SIZE4: Final = 4
_UNPACK: Final = {
    0x50: struct.Struct(">B"),
    0x51: struct.Struct(">b"),
    0x52: struct.Struct(">B"),
    0x53: struct.Struct(">B"),
    0x54: struct.Struct(">b"),
    0x55: struct.Struct(">b"),
    0x60: struct.Struct(">H"),
    0x61: struct.Struct(">h"),
    0x70: struct.Struct(">I"),
    0x71: struct.Struct(">i"),
    0x72: struct.Struct(">f"),
    0x73: struct.Struct(">I"),
    0x80: struct.Struct(">Q"),
    0x81: struct.Struct(">q"),
    0x82: struct.Struct(">d"),
    0x83: struct.Struct(">q"),
}
_U32: Final = struct.Struct(">I")
_Q: Final = struct.Struct(">q")
_CONSTANT: Final[dict[int, object]] = {0x40: None, 0x41: True, 0x42: False, 0x43: 0, 0x44: 0, 0x45: []}


@dataclass(frozen=True, slots=True)
class Described:
    """A described value: a descriptor (a code or a symbol) and the value it describes."""

    descriptor: object
    value: object


def skip(buf: bytes, pos: int) -> int:
    """The position just past the value that starts at ``pos``."""
    try:
        code = buf[pos]
        if code == 0x00:
            return skip(buf, skip(buf, pos + 1))
        width = _FIXED.get(code)
        if width is not None:
            end = pos + 1 + width
        elif code in _SMALL:
            end = pos + 2 + buf[pos + 1]
        elif code in _LARGE:
            end = pos + 5 + _U32.unpack_from(buf, pos + 1)[0]
        else:
            raise ProtocolError(f"unknown AMQP format code 0x{code:02x} at byte {pos}")
    except (IndexError, struct.error):
        raise ProtocolError(f"truncated AMQP value at byte {pos}") from None
    if end > len(buf):
        raise ProtocolError(f"truncated AMQP value at byte {pos}")
    return end


def decode(buf: bytes, pos: int = 0) -> tuple[object, int]:
    """The value that starts at ``pos``, and the position just past it."""
    code = buf[pos]
    if code == 0x00:
        descriptor, at = decode(buf, pos + 1)
        value, end = decode(buf, at)
        return Described(descriptor, value), end
    if code in _CONSTANT:
        constant = _CONSTANT[code]
        return ([] if code == 0x45 else constant), pos + 1
    unpack = _UNPACK.get(code)
    if unpack is not None:
        return unpack.unpack_from(buf, pos + 1)[0], pos + 1 + unpack.size
    if code == 0x56:
        return buf[pos + 1] == 1, pos + 2
    if code == 0x98:
        return uuid.UUID(bytes=bytes(buf[pos + 1 : pos + 17])), pos + 17
    end = skip(buf, pos)
    head = _SIZE1 if code & 0xF0 in (0xA0, 0xC0, 0xE0) else _SIZE4
    start = pos + 1 + head
    kind = code & 0x0F
    if code & 0xF0 in (0xA0, 0xB0):
        raw = bytes(buf[start:end])
        return (raw if kind == 0 else raw.decode()), end
    if code & 0xF0 in (0xC0, 0xD0):
        items = _items(buf, start + head, end)
        if kind == 0:
            return items, end
        return dict(zip(items[::2], items[1::2], strict=True)), end
    if code & 0xF0 in (0xE0, 0xF0):
        return _array(buf, start, head, end), end
    raise ProtocolError(f"cannot decode AMQP format code 0x{code:02x} at byte {pos}")


def _items(buf: bytes, pos: int, end: int) -> list[object]:
    items = []
    while pos < end:
        value, pos = decode(buf, pos)
        items.append(value)
    return items


def _array(buf: bytes, start: int, head: int, end: int) -> list[object]:
    count = buf[start] if head == _SIZE1 else _U32.unpack_from(buf, start)[0]
    pos = start + head
    constructor_end = skip_constructor(buf, pos)
    constructor = bytes(buf[pos:constructor_end])
    items = []
    pos = constructor_end
    for _ in range(count):
        # Re-attach the shared constructor to each element and decode it as a standalone value.
        width = _element_end(buf, constructor[-1], pos) - pos
        value, _ = decode(constructor + bytes(buf[pos : pos + width]), 0)
        items.append(value)
        pos += width
    if pos != end:
        raise ProtocolError("malformed AMQP array")
    return items


def skip_constructor(buf: bytes, pos: int) -> int:
    """The position past an array's element constructor (a format code, or a described one)."""
    if buf[pos] == 0x00:
        return skip_constructor(buf, skip(buf, pos + 1))
    return pos + 1


def _element_end(buf: bytes, code: int, pos: int) -> int:
    width = _FIXED.get(code)
    if width is not None:
        return pos + width
    if code & 0xF0 in (0xA0, 0xC0, 0xE0):
        return pos + 1 + buf[pos]
    return pos + 4 + int(_U32.unpack_from(buf, pos)[0])


# Encoding ----------------------------------------------------------------------------------------


def compound(items: Iterable[bytes], *, kind: int, count: int | None = None) -> bytes:
    """A list (``kind`` 0) or map (``kind`` 1) of already-encoded items; a map counts keys and values."""
    body = b"".join(items)
    number = count or 0
    if len(body) + 1 <= 0xFF and number <= 0xFF:
        return bytes((0xC0 | kind, len(body) + 1, number)) + body
    return bytes((0xD0 | kind,)) + _U32.pack(len(body) + 4) + _U32.pack(number) + body


def list_of(items: list[bytes]) -> bytes:
    return compound(items, kind=0, count=len(items))


def map_of(pairs: list[tuple[bytes, bytes]]) -> bytes:
    return compound((k + v for k, v in pairs), kind=1, count=2 * len(pairs))


def _variable(small: int, raw: bytes) -> bytes:
    if len(raw) <= 0xFF:
        return bytes((small, len(raw))) + raw
    return bytes((small + 0x10,)) + _U32.pack(len(raw)) + raw


def symbol(text: str) -> bytes:
    return _variable(0xA3, text.encode())


def string(text: str) -> bytes:
    return _variable(0xA1, text.encode())


def binary(raw: bytes) -> bytes:
    return _variable(0xA0, raw)


def long(number: int) -> bytes:
    return b"\x81" + _Q.pack(number)


def timestamp(millis: int) -> bytes:
    return b"\x83" + _Q.pack(millis)


def described(code: int, value: bytes) -> bytes:
    """A value described by a numeric code (encoded as smallulong when it fits, as proton does)."""
    if code <= 0xFF:
        return b"\x00\x53" + bytes((code,)) + value
    return b"\x00\x80" + struct.pack(">Q", code) + value
