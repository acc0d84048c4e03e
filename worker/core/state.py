"""The pipeline state saved beside each partition's checkpoint, and its JSON form.

A checkpoint alone says where to resume; this small state says what was already done around it:
per subject the last sequencer key released, the ids of recent events, the ids of events
finished beyond the checkpoint, and what rules that remember are waiting for (pending expectations
and groups, and fired ones whose actions are not finished: :mod:`worker.core.remember`). With it, a
restart from the checkpoint neither repeats a finished action nor takes an unfinished event for a
duplicate or a late one, and goes on waiting where the last owner stopped. Pure: no I/O.

Version 1 (without ``pending``) is read as a state with nothing pending.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, NamedTuple

import orjson

from worker.core.ordering import SequencerKey
from worker.errors import StateError

_VERSION = 2
_READABLE = (1, 2)
PendingKind = Literal["expect", "group", "expiry", "notification"]
_KINDS: tuple[PendingKind, ...] = ("expect", "group", "expiry", "notification")


class StoredEvent(NamedTuple):
    """An event a pending entry holds: its JSON object, and where it was read."""

    body: bytes
    partition_id: str
    offset: str | None
    sequence_number: int | None
    #: POSIX seconds.
    enqueued: float | None
    body_index: int


class Pending(NamedTuple):
    """A pending expectation (``expect``) or group (``group``), or one that fired and whose actions
    are not finished (``expiry``, ``notification``): they fire again after a restart."""

    kind: PendingKind
    rule: str
    key: str
    #: POSIX seconds: the deadline, or the group's next notification.
    due: float
    #: The starting event; the group's listed events.
    events: tuple[StoredEvent, ...]
    #: A group's events, the unlisted ones too.
    total: int = 0
    #: POSIX seconds: a group's first and last event's time.
    first: float = 0.0
    last: float = 0.0


@dataclass(frozen=True, slots=True)
class SavedState:
    """What to persist beside a partition's checkpoint; only what finished events justify."""

    #: Per subject, the last released sequencer key, or for a subject with unfinished work the key
    #: released before it.
    last_keys: tuple[tuple[str, SequencerKey], ...] = ()
    #: Ids of recent events, oldest first, without those still held or in flight.
    recent_ids: tuple[str, ...] = ()
    #: Ids of events finished in messages beyond the checkpoint.
    finished_beyond: tuple[str, ...] = ()
    #: What rules that remember wait for, in the order they fall due.
    pending: tuple[Pending, ...] = ()

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "version": _VERSION,
                "last_keys": [[subject, list(key)] for subject, key in self.last_keys],
                "recent_ids": self.recent_ids,
                "finished_beyond": self.finished_beyond,
                "pending": [_pending_json(p) for p in self.pending],
            }
        )

    @classmethod
    def from_json(cls, data: bytes, where: str) -> SavedState:
        """Read a state written by :meth:`to_json`; ``where`` names the blob or file in errors."""
        try:
            raw = orjson.loads(data)
            version = raw.get("version")
            if version not in _READABLE:
                raise StateError(
                    f"{where}: unsupported pipeline state version {version!r} (expected one of {_READABLE})"
                )
            state = cls(
                last_keys=tuple((str(s), _key(k)) for s, k in raw["last_keys"]),
                recent_ids=tuple(str(i) for i in raw["recent_ids"]),
                finished_beyond=tuple(str(i) for i in raw["finished_beyond"]),
                pending=tuple(_pending(p) for p in raw.get("pending", ())),
            )
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:
            raise StateError(f"{where}: the pipeline state is unreadable ({exc}); remove it to start afresh") from exc
        return state


def _pending_json(entry: Pending) -> dict[str, object]:
    return {
        "kind": entry.kind,
        "rule": entry.rule,
        "key": entry.key,
        "due": entry.due,
        "total": entry.total,
        "first": entry.first,
        "last": entry.last,
        "events": [
            [orjson.Fragment(e.body), e.partition_id, e.offset, e.sequence_number, e.enqueued, e.body_index]
            for e in entry.events
        ],
    }


def _pending(raw: dict[str, object]) -> Pending:
    kind = next((k for k in _KINDS if k == raw["kind"]), None)
    if kind is None:
        raise ValueError(f"unknown pending kind {raw['kind']!r}")
    events, total = raw["events"], raw["total"]
    if not isinstance(events, list) or type(total) is not int:
        raise TypeError("pending events must be a list, and its total a number")
    return Pending(
        kind,
        str(raw["rule"]),
        str(raw["key"]),
        _seconds(raw["due"]),
        tuple(_stored_event(e) for e in events),
        total,
        _seconds(raw["first"]),
        _seconds(raw["last"]),
    )


def _seconds(raw: object) -> float:
    if type(raw) not in (int, float):
        raise TypeError(f"a time must be a number of seconds, got {raw!r}")
    return float(raw)  # type: ignore[arg-type] # an int or a float, checked above


def _stored_event(raw: object) -> StoredEvent:
    if not isinstance(raw, list) or len(raw) != 6 or not isinstance(raw[0], dict):
        raise ValueError(f"bad pending event {str(raw)[:80]!r}")
    body, partition, offset, sequence, enqueued, index = raw
    return StoredEvent(
        orjson.dumps(body),
        str(partition),
        None if offset is None else str(offset),
        None if sequence is None else int(sequence),
        None if enqueued is None else float(enqueued),
        int(index),
    )


def enqueued_datetime(enqueued: float | None) -> datetime | None:
    return None if enqueued is None else datetime.fromtimestamp(enqueued, UTC)


def _key(raw: object) -> SequencerKey:
    if not isinstance(raw, list) or len(raw) != 4:
        raise ValueError(f"a sequencer key must be a list of 4, got {raw!r}")
    kind, primary, sequence, index = raw
    if type(kind) is not int or type(primary) not in (int, str) or type(sequence) is not int or type(index) is not int:
        raise ValueError(f"bad sequencer key {raw!r}")
    return (kind, primary, sequence, index)
