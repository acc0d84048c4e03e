"""Per-subject ordering: sequencer keys and the reorder buffer of one partition.

Event Grid delivers at least once and in no guaranteed order. Within a partition, events wait in a
reorder buffer, per subject, and leave it in sequencer order once the partition's watermark (the
latest enqueued time seen, minus a window) has passed their own enqueued time. When an event
ripens, the events of its subject with lower keys leave with it, in key order, since they must come
first anyway. Pure: no I/O, no clock; the caller decides when a partition has been idle.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, Generic, TypeVar

from worker.events import Event
from worker.keys import MISSING, KeyPath, compile_key, lookup

T = TypeVar("T")

#: (kind, primary, sequence number, index in message). Kind 0 orders by event time (microseconds
#: since the epoch), kind 1 by a sequencer string from the event; the Event Hubs sequence number
#: and the index break ties, so two events of one partition never have equal keys.
SequencerKey = tuple[int, int | str, int, int]

BY_TIME: Final = 0
BY_SEQUENCER: Final = 1
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Sequencers:
    """Where each event type keeps its sequencer: a filter-style key (``data.sequencer``) per type.

    Types not listed (all Azure ML events: they carry none) order by event time, then by Event Hubs
    sequence number. Sequencer values are compared as strings; an event of a listed type without a
    string at its key falls back to time order.
    """

    keys: Mapping[str, str] = field(default_factory=dict)
    _paths: dict[str, KeyPath] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for event_type, key in self.keys.items():
            path = compile_key(key)
            if path is None:
                raise ValueError(f"sequencer key {key!r} for event type {event_type!r} is not a dot path")
            self._paths[event_type.casefold()] = path

    def key(self, event: Event) -> SequencerKey:
        position = event.message.position
        sequence = position.sequence_number or 0
        if self._paths:
            path = self._paths.get(event.type.casefold())
            if path is not None:
                value = lookup(event.envelope, path)
                if value is not MISSING and type(value) is str:
                    return (BY_SEQUENCER, value, sequence, event.body_index)
        moment = event.time or position.enqueued_time
        micros = 0 if moment is None else (moment - _EPOCH) // _MICROSECOND
        return (BY_TIME, micros, sequence, event.body_index)


class ReorderBuffer(Generic[T]):
    """Items held per subject, released in key order as the watermark passes them.

    ``window`` is in seconds, like the enqueued times passed to :meth:`push` (POSIX timestamps).
    ``capacity`` bounds the items held: past it the earliest item is released early, which
    :attr:`forced` counts.

    Within a partition enqueued times only grow, so items ripen in the order they arrived: a queue
    (first in, first out) says which ripens next. An item whose entry comes up after it has left
    with a later key of its subject is recognised by its subject's heap holding nothing at or below
    its key.
    """

    __slots__ = ("_held", "_ripening", "_serial", "_subjects", "capacity", "forced", "high", "window")

    def __init__(self, window: float, capacity: int) -> None:
        if window < 0:
            raise ValueError(f"window must not be negative, got {window}")
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.window = window
        self.capacity = capacity
        #: The latest enqueued time seen.
        self.high = float("-inf")
        self.forced = 0
        self._held = 0
        self._serial = 0
        #: Per subject, a heap of (key, serial, item): the serial keeps equal keys from comparing items.
        self._subjects: dict[str, list[tuple[SequencerKey, int, T]]] = {}
        #: (enqueued, subject, key), in arrival order.
        self._ripening: deque[tuple[float, str, SequencerKey]] = deque()

    def __len__(self) -> int:
        return self._held

    def held(self) -> Iterator[T]:
        """The items held, in no particular order."""
        for heap in self._subjects.values():
            for _, _, item in heap:
                yield item

    def push(self, item: T, subject: str, key: SequencerKey, enqueued: float | None) -> list[T]:
        """Hold ``item``; return the items released by its arrival, in release order."""
        high = self.high
        if enqueued is None:
            enqueued = high
        elif enqueued > high:
            self.high = high = enqueued
        serial = self._serial = self._serial + 1
        heap = self._subjects.get(subject)
        if heap is None:
            self._subjects[subject] = [(key, serial, item)]
        else:
            heapq.heappush(heap, (key, serial, item))
        self._ripening.append((enqueued, subject, key))
        self._held += 1
        released: list[T] = []
        self._release_first(released, high - self.window)
        while self._held > self.capacity:
            self.forced += 1
            self._release_first(released)
        return released

    def release_all(self) -> list[T]:
        """Release everything held (the partition went idle, or the source ended)."""
        released: list[T] = []
        while self._held:
            self._release_first(released)
        return released

    def _release_first(self, out: list[T], watermark: float | None = None) -> None:
        """Release the earliest-arrived item still held, with its subject's lower keys; with a
        ``watermark``, every item enqueued at or before it instead."""
        ripening, subjects = self._ripening, self._subjects
        while ripening and (watermark is None or ripening[0][0] <= watermark):
            _, subject, key = ripening.popleft()
            heap = subjects.get(subject)
            if heap is None or heap[0][0] > key:
                continue  # it left earlier, with a later key of its subject
            while heap and heap[0][0] <= key:
                out.append(heapq.heappop(heap)[2])
                self._held -= 1
            if not heap:
                del subjects[subject]
            if watermark is None:
                return
