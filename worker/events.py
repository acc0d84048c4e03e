"""The records every room speaks: where a message sits, the message, and the events decoded from it.

A body holds Event Grid schema or CloudEvents 1.0 events; :mod:`worker.core.decoding` normalises both
into one immutable :class:`Event`, and anything unusable into an :class:`InvalidEvent` carrying a
typed :class:`~worker.errors.DecodeError`.

The records built once per message or event (:class:`Position`, :class:`Message`, :class:`Event`)
are named tuples: immutable, typed field by field, and built at the cost of a tuple, which is about
a quarter of a frozen dataclass's ``__init__`` (``bench/bench_records.py``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Final, NamedTuple

from worker.errors import DecodeError

#: The properties of a message that has none.
NO_PROPERTIES: Final[Mapping[str, object]] = MappingProxyType({})
#: ``object`` under a module-level name: compiled with mypyc, a named tuple's field annotations are
#: looked up among the module's names, where the builtin ``object`` is not.
_Object = object


class Position(NamedTuple):
    """Where a message sits in its Event Hub partition."""

    partition_id: str
    offset: str | None = None
    sequence_number: int | None = None
    enqueued_time: datetime | None = None


class Message(NamedTuple):
    """One Event Hubs message as a source hands it to the core."""

    body: bytes
    position: Position
    #: Application properties, such as Event Grid's ``aeg-delivery-count``.
    properties: Mapping[str, object] = NO_PROPERTIES


class Schema(enum.StrEnum):
    EVENT_GRID = "EventGridSchema"
    CLOUD_EVENTS = "CloudEventSchemaV1_0"


class Event(NamedTuple):
    """One Event Grid or CloudEvents event, normalised.

    ``topic`` is Event Grid's ``topic`` or CloudEvents' ``source``; ``time`` is ``eventTime`` or
    ``time``. ``envelope`` is the event's JSON object as received, read by filter keys; treat it
    as read-only.
    """

    id: str
    type: str
    subject: str | None
    topic: str | None
    time: datetime | None
    data_version: str | None
    data: _Object
    schema: Schema
    envelope: Mapping[str, object]
    message: Message
    #: Index of the event within its message body.
    body_index: int = 0

    @property
    def position(self) -> Position:
        return self.message.position


@dataclass(frozen=True, slots=True)
class InvalidEvent:
    """A body, or one element of a body array (``body_index``), that is not a usable event."""

    message: Message
    body_index: int | None
    error: DecodeError

    @property
    def position(self) -> Position:
        return self.message.position


Decoded = Event | InvalidEvent
