"""Which partition an event lands on: by partition key, as the service hashes it, or round-robin.

The hash is Bob Jenkins' lookup3 (``hashlittle2``) over the key's code points, folded to a signed
16-bit value, then ``abs(hash % partitions)``: the same as the azure-eventhub SDK's buffered
producer, so a key lands here on the partition it would land on in Azure.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

_MASK = 0xFFFFFFFF


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _MASK


def _mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    a = ((a - c) & _MASK) ^ _rot(c, 4)
    c = (c + b) & _MASK
    b = ((b - a) & _MASK) ^ _rot(a, 6)
    a = (a + c) & _MASK
    c = ((c - b) & _MASK) ^ _rot(b, 8)
    b = (b + a) & _MASK
    a = ((a - c) & _MASK) ^ _rot(c, 16)
    c = (c + b) & _MASK
    b = ((b - a) & _MASK) ^ _rot(a, 19)
    a = (a + c) & _MASK
    c = ((c - b) & _MASK) ^ _rot(b, 4)
    b = (b + a) & _MASK
    return a, b, c


def _final(a: int, b: int, c: int) -> tuple[int, int, int]:
    c = ((c ^ b) - _rot(b, 14)) & _MASK
    a = ((a ^ c) - _rot(c, 11)) & _MASK
    b = ((b ^ a) - _rot(a, 25)) & _MASK
    c = ((c ^ b) - _rot(b, 16)) & _MASK
    a = ((a ^ c) - _rot(c, 4)) & _MASK
    b = ((b ^ a) - _rot(a, 14)) & _MASK
    c = ((c ^ b) - _rot(b, 24)) & _MASK
    return a, b, c


def _word(units: Sequence[int]) -> int:
    """Little-endian sum of up to four units (code points may exceed a byte, as in the SDK)."""
    return sum(unit << (8 * i) for i, unit in enumerate(units))


def hash_code(key: str) -> int:
    """The signed 16-bit hash of a partition key (0 for an empty key)."""
    if not key:
        return 0
    units = [ord(char) for char in key]
    a = b = c = (0xDEADBEEF + len(units)) & _MASK
    rest = units
    while len(rest) > 12:
        a = (a + _word(rest[0:4])) & _MASK
        b = (b + _word(rest[4:8])) & _MASK
        c = (c + _word(rest[8:12])) & _MASK
        a, b, c = _mix(a, b, c)
        rest = rest[12:]
    # The tail: up to 12 units spread over a, b and c; nothing to add when the key was a multiple of 12.
    a = (a + _word(rest[0:4])) & _MASK
    b = (b + _word(rest[4:8])) & _MASK
    c = (c + _word(rest[8:12])) & _MASK
    if rest:
        a, b, c = _final(a, b, c)
    value = (c ^ b) & 0xFFFF
    return value - 0x10000 if value & 0x8000 else value


def partition_for_key(key: str, partition_ids: Sequence[str]) -> str:
    """The partition a keyed event lands on."""
    return partition_ids[abs(hash_code(key) % len(partition_ids))]


def round_robin(partition_ids: Sequence[str]) -> Iterator[str]:
    """Partition ids in turn, for events sent with neither a partition id nor a key."""
    return itertools.cycle(partition_ids)
