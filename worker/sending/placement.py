"""Which partition an event lands on: by partition key, as the Event Hubs service places it, or round-robin.

The service hashes a key's UTF-8 bytes with Bob Jenkins' lookup3 (``hashlittle2``, both seeds 0,
the last 1 to 12 bytes taken as the tail), folds the two 32-bit results (``c ^ b``) to a signed
16-bit value, and takes the partition at ``abs(hash % count)`` with a *truncating* remainder (the
sign of the dividend, as in C#). The .NET and JavaScript SDKs place keys this way, their tests
holding vectors from the service's own implementation; so a key lands here on the partition it
would land on in Azure, and the events of one key stay in order on one partition.

The Python SDK's buffered producer differs: it hashes code points rather than UTF-8 bytes and takes
Python's flooring ``%``, so some keys (a negative hash whose remainder is not 0, most non-ASCII
keys) land elsewhere than on the service. Its resolver is therefore not the reference here.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterator, Sequence
from typing import Final

_MASK: Final = 0xFFFFFFFF
#: lookup3 consumes 12 bytes at a time, as three little-endian 32-bit words.
_BLOCK: Final = struct.Struct("<3I")


def _rot(x: int, k: int) -> int:
    """``x`` rotated left by ``k`` bits, as a 32-bit word."""
    return ((x << k) | (x >> (32 - k))) & _MASK


def _mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    """lookup3's ``mix``: stirs the state after each full block but the last."""
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
    """lookup3's ``final``: the last mixing, after the tail is added."""
    c = ((c ^ b) - _rot(b, 14)) & _MASK
    a = ((a ^ c) - _rot(c, 11)) & _MASK
    b = ((b ^ a) - _rot(a, 25)) & _MASK
    c = ((c ^ b) - _rot(b, 16)) & _MASK
    a = ((a ^ c) - _rot(c, 4)) & _MASK
    b = ((b ^ a) - _rot(a, 14)) & _MASK
    c = ((c ^ b) - _rot(b, 24)) & _MASK
    return a, b, c


def _utf8(key: str) -> bytes:
    """The key's UTF-8 bytes, as a UTF-16 string's would be.

    The service and the other SDKs hold keys as UTF-16: there, a lone surrogate encodes as U+FFFD
    and two surrogate code points are one character. A Python string may hold either, so it is
    read as UTF-16 first rather than failing to encode.
    """
    try:
        return key.encode()
    except UnicodeEncodeError:
        return key.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace").encode()


def _lookup3(data: bytes) -> tuple[int, int]:
    """Jenkins' ``hashlittle2`` of ``data`` with both seeds 0: the pair ``(c, b)``."""
    a = b = c = (0xDEADBEEF + len(data)) & _MASK
    if not data:
        return c, b  # nothing added, nothing mixed
    # Every full block but the last is mixed in; the last 1 to 12 bytes are the tail, so a key of
    # exactly 12 bytes is all tail.
    body = 12 * ((len(data) - 1) // 12)
    for w0, w1, w2 in _BLOCK.iter_unpack(data[:body]):
        a, b, c = _mix((a + w0) & _MASK, (b + w1) & _MASK, (c + w2) & _MASK)
    # The tail's byte k goes into its word shifted by 8k: the same as reading it zero-padded.
    w0, w1, w2 = _BLOCK.unpack(data[body:].ljust(12, b"\0"))
    a, b, c = _final((a + w0) & _MASK, (b + w1) & _MASK, (c + w2) & _MASK)
    return c, b


def hash_code(key: str) -> int:
    """The service's signed 16-bit hash of a partition key (0 for an empty key)."""
    c, b = _lookup3(_utf8(key))
    folded = (c ^ b) & 0xFFFF
    return folded - 0x10000 if folded & 0x8000 else folded


def partition_for_key(key: str, partition_ids: Sequence[str]) -> str:
    """The partition the service puts a keyed event on.

    ``abs(hash % count)`` with a truncating remainder equals ``abs(hash) % count`` in Python, whose
    ``%`` floors instead (and would move negative hashes elsewhere).
    """
    return partition_ids[abs(hash_code(key)) % len(partition_ids)]


def round_robin(partition_ids: Sequence[str]) -> Iterator[str]:
    """Partition ids in turn, for events sent with neither a partition id nor a key."""
    return itertools.cycle(partition_ids)
