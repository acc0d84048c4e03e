"""Helpers shared by the tests of the pure core."""

from __future__ import annotations

import json
import os
from pathlib import Path

from worker.events import Event, decode_body
from worker.filters import CompiledFilter, compile_filter

AT = ("rules", 0, "filter")

#: Optional test inputs from outside the project (Azure ML sample events, real capture files), from
#: WORKER_TEST_DATA or a ``shared/data`` folder beside the checkout. Tests using them skip when absent.
TEST_DATA = Path(os.environ.get("WORKER_TEST_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


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
