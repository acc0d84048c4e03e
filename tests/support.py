"""Helpers shared by the tests of the pure core."""

from __future__ import annotations

import json

from worker.events import Event, decode_body
from worker.filters import CompiledFilter, compile_filter

AT = ("rules", 0, "filter")


def decode_one(document: object) -> Event:
    """The one valid event that ``document``, serialised as a message body, decodes to."""
    decoded = decode_body(json.dumps(document))
    assert len(decoded) == 1
    event = decoded[0]
    assert isinstance(event, Event), event
    return event


def compile_ok(raw: object) -> CompiledFilter:
    """A filter that must compile without any problem."""
    reports: list[tuple[tuple[str | int, ...], str]] = []
    compiled = compile_filter(raw, AT, lambda path, message: reports.append((path, message)))
    assert reports == []
    assert compiled is not None
    return compiled
