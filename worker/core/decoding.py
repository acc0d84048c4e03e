"""Decoding Event Hubs message bodies into event records. Never raises.

A body holds Event Grid schema or CloudEvents 1.0 events: one JSON object, or a JSON array of any
length (Event Grid delivers one event per message, wrapped in a one-element array). Both schemas
are normalised into one immutable :class:`~worker.events.Event`. Anything unusable becomes an
:class:`~worker.events.InvalidEvent` carrying a typed :class:`~worker.errors.DecodeError`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final

import orjson

from worker.errors import BadField, DecodeError, MissingField, NotAnEvent, NotJson, NotUtf8
from worker.events import NO_PROPERTIES, Decoded, Event, InvalidEvent, Message, Position, Schema

_BOM: Final = b"\xef\xbb\xbf"


def decode(message: Message) -> tuple[Decoded, ...]:
    """Decode every event in a message body. Never raises."""
    try:
        document = _parse(message.body)
    except DecodeError as exc:
        return (InvalidEvent(message, None, exc),)
    if isinstance(document, list):
        if not document:
            return (InvalidEvent(message, None, NotAnEvent("the body is an empty JSON array")),)
        return tuple(_one(message, item, i) for i, item in enumerate(document))
    return (_one(message, document, 0),)


def decode_body(
    body: bytes | str, position: Position | None = None, properties: Mapping[str, object] | None = None
) -> tuple[Decoded, ...]:
    """Decode a bare body (bytes or str), for tools and tests."""
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else bytes(body)
    return decode(Message(raw, position or Position("0"), properties or NO_PROPERTIES))


def _parse(body: bytes) -> object:
    if body.startswith(_BOM):
        body = body[len(_BOM) :]
    try:
        # orjson reads integers beyond 64 bits as the nearest double; scanning every body for long
        # digit runs would double the cost of parsing, for numbers Azure ML events do not carry.
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    # Slow path, for bodies orjson refused: classify the failure, and accept the JSON orjson alone
    # rejects (numbers beyond the range of a double).
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotUtf8(f"the body is not UTF-8 text (byte {exc.start}: {body[exc.start : exc.start + 1]!r})") from None
    try:
        document = json.loads(text, parse_constant=_reject_constant)
        # json accepts an escaped lone surrogate ("\\ud800"), which orjson refuses and UTF-8 cannot hold.
        json.dumps(document, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise NotJson(f"the body is not JSON: it escapes a lone surrogate (starts with {_preview(text)})") from None
    except (ValueError, RecursionError) as exc:
        raise NotJson(f"the body is not JSON: {_short(exc)} (starts with {_preview(text)})") from None
    return document


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON value")


def _one(message: Message, item: object, index: int) -> Decoded:
    try:
        return _event(message, item, index)
    except DecodeError as exc:
        return InvalidEvent(message, index, exc)


def _event(message: Message, obj: object, index: int) -> Event:
    if not isinstance(obj, dict):
        raise NotAnEvent(f"event #{index} is a JSON {_json_type(obj)}, not an object")
    if "specversion" in obj:
        spec = obj["specversion"]
        if spec != "1.0":
            raise BadField(f"event #{index}: specversion {spec!r} is not supported (expected '1.0')")
        return Event(
            _required_str(obj, "id", index),
            _required_str(obj, "type", index),
            _optional_str(obj, "subject", index),
            _required_str(obj, "source", index),
            _time(obj, "time", index, required=False),
            _optional_str(obj, "dataversion", index),
            obj.get("data"),
            Schema.CLOUD_EVENTS,
            obj,
            message,
            index,
        )
    if "eventType" in obj:
        return Event(
            _required_str(obj, "id", index),
            _required_str(obj, "eventType", index),
            _required_str(obj, "subject", index),
            _optional_str(obj, "topic", index),
            _time(obj, "eventTime", index, required=True),
            _optional_str(obj, "dataVersion", index),
            obj.get("data"),
            Schema.EVENT_GRID,
            obj,
            message,
            index,
        )
    keys = ", ".join(sorted(obj)[:8]) or "none"
    raise NotAnEvent(
        f"event #{index} is neither Event Grid schema (no 'eventType') nor CloudEvents 1.0 "
        f"(no 'specversion'); its keys: {keys}"
    )


def _required_str(obj: dict[str, object], name: str, index: int) -> str:
    if name not in obj or obj[name] is None:
        raise MissingField(f"event #{index} has no {name!r}")
    value = obj[name]
    if not isinstance(value, str) or not value:
        raise BadField(f"event #{index}: {name!r} must be a non-empty string, got {_preview(value)}")
    return value


def _optional_str(obj: dict[str, object], name: str, index: int) -> str | None:
    value = obj.get(name)
    if value is None or isinstance(value, str):
        return value
    raise BadField(f"event #{index}: {name!r} must be a string, got {_preview(value)}")


def _time(obj: dict[str, object], name: str, index: int, *, required: bool) -> datetime | None:
    text = _required_str(obj, name, index) if required else _optional_str(obj, name, index)
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadField(f"event #{index}: {name!r} is not an ISO 8601 time: {text[:40]!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _json_type(value: object) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null", dict: "object"}.get(
        type(value), "number"
    )


def _preview(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short(exc: BaseException) -> str:
    return str(exc).split("\n", 1)[0][:120] or type(exc).__name__
