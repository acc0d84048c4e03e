"""Event Hubs Capture files: Avro ``EventData`` records, read into messages and written as Azure does.

Capture writes one Avro file per partition and time window. Each record holds one message::

    SequenceNumber    long
    Offset            string
    EnqueuedTimeUtc   string    .NET's "M/d/yyyy h:mm:ss tt" in UTC: "12/9/2022 4:51:25 PM"
    SystemProperties  map       x-opt-enqueued-time (epoch milliseconds), x-opt-partition-key...
    Properties        map       application properties: long, double, string, bytes or null
    Body              bytes     (nullable)

Files are read with the schema embedded in each (real files differ from the documentation), with the
``null`` or ``deflate`` codec, record by record: a file is never loaded whole. The default blob
layout is ``{Namespace}/{EventHub}/{PartitionId}/{Year}/{Month}/{Day}/{Hour}/{Minute}/{Second}.avro``,
named by the start of the capture window. Everything here is synchronous and works on the streams it
is handed; where the files come from is :mod:`worker.replay.sources`' business.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, BinaryIO, Final, Literal, cast

import fastavro

from worker.errors import CaptureError, WorkerError
from worker.events import Message, Position

Codec = Literal["null", "deflate"]

#: The schema of the files Azure writes, as found in real ones: the documentation shows four branches
#: for ``Properties`` values, real files have five (``null`` too).
SCHEMA: Final[dict[str, Any]] = {
    "type": "record",
    "name": "EventData",
    "namespace": "Microsoft.ServiceBus.Messaging",
    "fields": [
        {"name": "SequenceNumber", "type": "long"},
        {"name": "Offset", "type": "string"},
        {"name": "EnqueuedTimeUtc", "type": "string"},
        {"name": "SystemProperties", "type": {"type": "map", "values": ["long", "double", "string", "bytes"]}},
        {"name": "Properties", "type": {"type": "map", "values": ["long", "double", "string", "bytes", "null"]}},
        {"name": "Body", "type": ["null", "bytes"]},
    ],
}
_PARSED_SCHEMA: Final = fastavro.parse_schema(SCHEMA)

#: The system property holding the enqueued time in milliseconds since the epoch.
ENQUEUED_TIME_PROPERTY: Final = "x-opt-enqueued-time"

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND: Final = timedelta(milliseconds=1)
_LONG_MIN: Final = -(2**63)
_LONG_MAX: Final = 2**63 - 1
#: Offsets made up by :func:`number_messages` advance by the body's size plus this much, so they are
#: unique and increasing like the broker's (which count framing too).
_OFFSET_OVERHEAD: Final = 64

#: The tail of the default layout: .../{PartitionId}/{Year}/{Month}/{Day}/{Hour}/{Minute}/{Second}.avro
_LAYOUT: Final = re.compile(r"(?:^|/)([^/]+)/(\d{4})/(\d{2})/(\d{2})/(\d{2})/(\d{2})/(\d{2})\.avro$", re.ASCII)

#: Fields a record must have, with the Avro types accepted for each.
_FIELDS: Final[Mapping[str, str]] = {
    "SequenceNumber": "long",
    "Offset": "string",
    "EnqueuedTimeUtc": "string",
    "SystemProperties": "map",
    "Properties": "map",
    "Body": "bytes",
}


# -- reading ------------------------------------------------------------------------------------


def read_capture(stream: BinaryIO, *, partition_id: str, name: str) -> Iterator[Message]:
    """The messages of one Capture file, in file order, streamed from ``stream``.

    ``partition_id`` goes into every message's position (files do not record it); ``name`` names the
    file in errors. The enqueued time comes from ``x-opt-enqueued-time`` when the record has it
    (millisecond precision), else from ``EnqueuedTimeUtc``. A null body reads as ``b""``.

    Raises :class:`~worker.errors.CaptureError` when the file is not Avro, its records are not
    ``EventData``, or it is truncated or corrupt. Errors of the stream itself pass through.
    """
    try:
        reader = fastavro.reader(stream)
    except (WorkerError, OSError):
        raise
    except Exception as exc:
        raise CaptureError(f"{name}: not an Avro file ({_describe(exc)})") from exc
    _check_schema(reader.writer_schema, name)

    parse = _parse_cached
    ms_key = ENQUEUED_TIME_PROPERTY
    epoch = _EPOCH
    millisecond = _MILLISECOND
    last_text: str | None = None
    last_time = epoch
    number = 0
    # Records follow the schema checked above: every field is there, with its type.
    records = cast("Iterator[dict[str, Any]]", iter(reader))
    while True:
        try:
            record = next(records)
        except StopIteration:
            return
        except (WorkerError, OSError):
            raise
        except Exception as exc:
            raise CaptureError(
                f"{name}: record {number + 1}: cannot be read, the file is truncated or corrupt ({_describe(exc)})"
            ) from exc
        number += 1
        millis = record["SystemProperties"].get(ms_key)
        if type(millis) is int:
            try:
                enqueued = epoch + millis * millisecond
            except OverflowError:
                raise CaptureError(f"{name}: record {number}: {ms_key} {millis} is not a time") from None
        else:
            text = record["EnqueuedTimeUtc"]
            if text != last_text:
                try:
                    last_time = parse(text)
                except ValueError as exc:
                    raise CaptureError(f"{name}: record {number}: EnqueuedTimeUtc: {exc}") from None
                last_text = text
            enqueued = last_time
        position = Position(partition_id, record["Offset"], record["SequenceNumber"], enqueued)
        yield Message(record["Body"] or b"", position, record["Properties"])


def parse_enqueued_time(text: str) -> datetime:
    """An ``EnqueuedTimeUtc`` value as an aware UTC datetime.

    Accepts .NET's ``M/d/yyyy h:mm:ss tt`` that Capture writes (``12/9/2022 4:51:25 PM``; the same
    with a 24-hour clock and no AM/PM; fractions of a second), and ISO 8601 (a time without an offset
    is UTC). Raises ``ValueError`` on anything else.
    """
    try:
        moment = _parse_dotnet(text) if "/" in text else datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an enqueued time ('M/d/yyyy h:mm:ss tt' or ISO 8601): {text[:40]!r}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def format_enqueued_time(moment: datetime) -> str:
    """``moment`` in .NET's ``M/d/yyyy h:mm:ss tt`` (UTC, whole seconds), as Capture writes it."""
    if moment.tzinfo is None:
        raise ValueError(f"the enqueued time {moment.isoformat()} has no time zone")
    t = moment.astimezone(UTC)
    designator = "PM" if t.hour >= 12 else "AM"
    return f"{t.month}/{t.day}/{t.year} {t.hour % 12 or 12}:{t.minute:02}:{t.second:02} {designator}"


def partition_from_path(path: str) -> str | None:
    """The PartitionId of a file in Capture's default layout, or None for a path outside it."""
    match = _match_layout(path)
    return match[0] if match else None


def window_from_path(path: str) -> datetime | None:
    """The start of the capture window a file of the default layout is named by, or None."""
    match = _match_layout(path)
    return match[1] if match else None


def _match_layout(path: str) -> tuple[str, datetime] | None:
    match = _LAYOUT.search(path.replace("\\", "/"))
    if match is None:
        return None
    partition, year, month, day, hour, minute, second = match.groups()
    try:
        start = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=UTC)
    except ValueError:  # 13/45/... is not a time, so not the layout
        return None
    return partition, start


@lru_cache(maxsize=4096)
def _parse_cached(text: str) -> datetime:
    return parse_enqueued_time(text)


def _parse_dotnet(text: str) -> datetime:
    parts = text.split()
    if len(parts) == 3:
        date, clock, designator = parts
        designator = designator.upper()
        if designator not in ("AM", "PM"):
            raise ValueError(designator)
    elif len(parts) == 2:
        date, clock = parts
        designator = ""
    else:
        raise ValueError(text)
    month, day, year = date.split("/")
    hour, minute, second = clock.split(":")
    second, _, fraction = second.partition(".")
    hours = _digits(hour, 1, 2)
    if designator:
        if not 1 <= hours <= 12:
            raise ValueError(hour)
        hours = hours % 12 + (12 if designator == "PM" else 0)
    micro = _digits(fraction[:6].ljust(6, "0"), 6, 6) if fraction else 0
    return datetime(
        _digits(year, 4, 4),
        _digits(month, 1, 2),
        _digits(day, 1, 2),
        hours,
        _digits(minute, 1, 2),
        _digits(second, 1, 2),
        micro,
        tzinfo=UTC,
    )


def _digits(text: str, shortest: int, longest: int) -> int:
    if not (shortest <= len(text) <= longest and text.isascii() and text.isdigit()):
        raise ValueError(text)
    return int(text)


def _check_schema(schema: object, name: str) -> None:
    fields = schema.get("fields") if isinstance(schema, dict) and schema.get("type") == "record" else None
    if not isinstance(fields, list):
        raise CaptureError(f"{name}: not an Event Hubs Capture file: its records are not EventData ({schema!r:.80})")
    types = {field.get("name"): field.get("type") for field in fields if isinstance(field, dict)}
    problems = []
    for field, expected in _FIELDS.items():
        if field not in types:
            problems.append(f"no {field!r}")
        elif not _has_type(types[field], expected, nullable=field == "Body"):
            problems.append(f"{field!r} is {types[field]!r:.60}, not {expected}")
    if problems:
        detail = "; ".join(problems)
        raise CaptureError(f"{name}: not an Event Hubs Capture file: its records are not EventData ({detail})")


def _has_type(declared: object, expected: str, *, nullable: bool) -> bool:
    if isinstance(declared, list) and nullable:
        return expected in declared and all(branch in ("null", expected) for branch in declared)
    if isinstance(declared, dict):
        return declared.get("type") == expected
    return declared == expected


def _describe(exc: BaseException) -> str:
    text = str(exc).split("\n", 1)[0][:160]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- writing ------------------------------------------------------------------------------------


def write_capture(
    stream: BinaryIO, messages: Iterable[Message], *, codec: Codec = "null", sync_interval: int = 16_000
) -> int:
    """Write ``messages`` to ``stream`` as one Capture file, the way Azure writes them; return how many.

    Each message's position must carry its sequence number, offset and enqueued time (an aware
    datetime; see :func:`number_messages`). The file has Azure's schema, ``EnqueuedTimeUtc`` in
    .NET's format (whole seconds) and ``x-opt-enqueued-time`` in ``SystemProperties`` (milliseconds,
    truncated). Property values must be ``int`` (64-bit), ``float``, ``str``, ``bytes`` or ``None``.
    ``messages`` is consumed lazily: memory does not grow with the file. No messages write the
    header-only file Capture writes for an empty window.
    """
    count = 0

    def records() -> Iterator[dict[str, object]]:
        nonlocal count
        for count, message in enumerate(messages, 1):
            yield _record(message, count)

    fastavro.writer(stream, _PARSED_SCHEMA, records(), codec=codec, sync_interval=sync_interval)
    return count


def number_messages(
    bodies: Iterable[bytes],
    *,
    start: datetime,
    step: timedelta = timedelta(seconds=1),
    partition_id: str = "0",
    first_sequence_number: int = 0,
    first_offset: int = 0,
    properties: Mapping[str, object] | None = None,
) -> Iterator[Message]:
    """Messages holding ``bodies`` at the positions Event Hubs would give them in one partition.

    Sequence numbers count up from ``first_sequence_number``; offsets are increasing byte counts
    from ``first_offset``; enqueued times start at ``start`` and are ``step`` apart. Every message
    gets the same ``properties``.
    """
    props = dict(properties or {})
    offset = first_offset
    moment = start
    for sequence, body in enumerate(bodies, first_sequence_number):
        yield Message(body, Position(partition_id, str(offset), sequence, moment), props)
        offset += len(body) + _OFFSET_OVERHEAD
        moment += step


def _record(message: Message, number: int) -> dict[str, object]:
    position = message.position
    moment = position.enqueued_time
    if position.sequence_number is None or position.offset is None or moment is None:
        raise ValueError(f"message {number}: a capture record needs a sequence number, an offset and an enqueued time")
    text = format_enqueued_time(moment)
    for key, value in message.properties.items():
        _check_property(key, value, number)
    return {
        "SequenceNumber": position.sequence_number,
        "Offset": position.offset,
        "EnqueuedTimeUtc": text,
        "SystemProperties": {ENQUEUED_TIME_PROPERTY: (moment - _EPOCH) // _MILLISECOND},
        "Properties": message.properties,
        "Body": message.body,
    }


def _check_property(key: object, value: object, number: int) -> None:
    if not isinstance(key, str):
        raise TypeError(f"message {number}: property name {key!r} is not a string")
    kind = type(value)
    if kind is int:
        if not _LONG_MIN <= value <= _LONG_MAX:  # type: ignore[operator]
            raise ValueError(f"message {number}: property {key!r}: {value} does not fit in a 64-bit long")
    elif value is not None and kind not in (float, str, bytes):
        raise TypeError(
            f"message {number}: property {key!r} is a {kind.__name__}; "
            "Capture stores long, double, string, bytes or null"
        )
