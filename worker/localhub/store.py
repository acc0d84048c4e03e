"""The hub's memory: per partition, a bounded log of stamped messages. Pure: time comes in as an argument.

Sequence numbers count from 0 per partition; an offset is the byte position of the message in the
partition's stream (a string on the wire, as on the service); enqueued times are epoch
milliseconds, never going backwards within a partition. Retention is bounded per partition by
count and by bytes: the oldest messages fall off, as on the service.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import Final

from worker.localhub.errors import SelectorError
from worker.localhub.messages import Stamp, Stamped, stamp

#: ``amqp.annotation.x-opt-offset > '42'`` and its kin, as the SDK writes them.
_SELECTOR: Final = re.compile(
    r"^\s*amqp\.annotation\.(?P<field>x-opt-offset|x-opt-sequence-number|x-opt-enqueued-time)"
    r"\s*(?P<op>>=|>)\s*'(?P<value>[^']*)'\s*$"
)
LATEST: Final = "@latest"
START: Final = "-1"


@dataclass(frozen=True, slots=True)
class Retention:
    """How much each partition keeps: the oldest messages fall off past either bound."""

    max_events: int = 100_000
    max_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Selector:
    """Where a receiver starts: after (or at, when ``inclusive``) a position of one kind."""

    field: str  # "x-opt-offset", "x-opt-sequence-number" or "x-opt-enqueued-time"
    inclusive: bool
    value: str


def parse_selector(text: str) -> Selector:
    """A selector filter's text as a :class:`Selector`; :class:`SelectorError` when malformed."""
    match = _SELECTOR.match(text)
    if match is None:
        raise SelectorError(
            f"unsupported selector filter {text!r}: expected amqp.annotation.FIELD > 'VALUE' (or >=), FIELD one of "
            "x-opt-offset, x-opt-sequence-number, x-opt-enqueued-time"
        )
    field, value = match["field"], match["value"]
    if not (field == "x-opt-offset" and value in (LATEST, START)):
        try:
            int(value)
        except ValueError:
            raise SelectorError(f"the selector filter {text!r} compares {field} with {value!r}, not a number") from None
    return Selector(field, match["op"] == ">=", value)


@dataclass(frozen=True, slots=True)
class Stored:
    """One message in a partition's log, ready to deliver."""

    sequence_number: int
    offset: int
    enqueued_time: int
    #: The message as consumers receive it (the hub's annotations included), and where its parts lie.
    stamped: Stamped

    @property
    def message(self) -> bytes:
        return self.stamped.message


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    """What the management node reports about a partition."""

    begin_sequence_number: int
    last_sequence_number: int  # -1 when empty
    last_offset: int  # -1 when empty
    last_enqueued_time: int  # epoch ms; 0 when empty
    is_empty: bool


class PartitionLog:
    """One partition's retained messages, oldest first."""

    __slots__ = ("_bytes", "_events", "_head", "_next_offset", "_next_sequence", "retention")

    def __init__(self, retention: Retention) -> None:
        self.retention = retention
        self._events: list[Stored] = []
        self._head = 0  # index of the oldest retained message in _events
        self._bytes = 0
        self._next_sequence = 0
        self._next_offset = 0

    def __len__(self) -> int:
        return len(self._events) - self._head

    @property
    def end(self) -> int:
        """The sequence number the next message will get."""
        return self._next_sequence

    @property
    def begin(self) -> int:
        """The sequence number of the oldest retained message (``end`` when empty)."""
        return self._events[self._head].sequence_number if len(self) else self._next_sequence

    def append(self, message: bytes, partition_key: str | None, now: int) -> Stored:
        """Store a message received at ``now`` (epoch ms); the oldest may fall off."""
        last = self._events[-1].enqueued_time if len(self) else 0
        mark = Stamp(self._next_sequence, self._next_offset, max(now, last), partition_key)
        stamped = stamp(message, mark)
        stored = Stored(mark.sequence_number, mark.offset, mark.enqueued_time, stamped)
        self._events.append(stored)
        self._bytes += len(stamped.message)
        self._next_sequence += 1
        self._next_offset += len(stamped.message)
        self._trim()
        return stored

    def _trim(self) -> None:
        events, limit = self._events, self.retention
        while len(self) > 1 and (len(self) > limit.max_events or self._bytes > limit.max_bytes):
            self._bytes -= len(events[self._head].message)
            self._head += 1
        if self._head > 1024 and self._head * 2 > len(events):
            del events[: self._head]
            self._head = 0

    def get(self, sequence_number: int) -> Stored | None:
        """The retained message with this sequence number, if any."""
        index = self._head + sequence_number - self.begin
        if self._head <= index < len(self._events):
            return self._events[index]
        return None

    def start(self, selector: Selector | None) -> int:
        """The sequence number a receiver with this selector starts at (no selector: the beginning of
        what the partition keeps, as on the service)."""
        if selector is None:
            return self.begin
        field, value = selector.field, selector.value
        if field == "x-opt-offset" and value == LATEST:
            return self.end
        if field == "x-opt-offset" and value == START:
            return self.begin
        number = int(value)
        if field == "x-opt-sequence-number":
            first = number if selector.inclusive else number + 1
            return max(first, self.begin)
        key = (lambda e: e.offset) if field == "x-opt-offset" else (lambda e: e.enqueued_time)
        find = bisect.bisect_left if selector.inclusive else bisect.bisect_right
        index = find(self._events, number, lo=self._head, key=key)
        return self._events[index].sequence_number if index < len(self._events) else self.end

    def info(self) -> PartitionInfo:
        if not len(self):
            return PartitionInfo(self.begin, self.end - 1, -1 if not self.end else self._last_offset(), 0, True)
        last = self._events[-1]
        return PartitionInfo(self.begin, last.sequence_number, last.offset, last.enqueued_time, False)

    def _last_offset(self) -> int:
        return self._events[-1].offset if self._events else -1


@dataclass(frozen=True, slots=True)
class HubSpec:
    """One event hub: its name, partition count and consumer groups."""

    name: str
    partitions: int = 2
    consumer_groups: tuple[str, ...] = ("$Default",)

    @property
    def partition_ids(self) -> tuple[str, ...]:
        return tuple(str(i) for i in range(self.partitions))


class HubStore:
    """Every partition of one event hub."""

    __slots__ = ("created_at", "logs", "spec")

    def __init__(self, spec: HubSpec, retention: Retention, created_at: int) -> None:
        self.spec = spec
        self.created_at = created_at
        self.logs = {pid: PartitionLog(retention) for pid in spec.partition_ids}

    def has_consumer_group(self, name: str) -> bool:
        """Consumer group names compare ignoring case, as on the service."""
        return name.casefold() in {group.casefold() for group in self.spec.consumer_groups}
