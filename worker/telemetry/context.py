"""The producer's trace context an event carries, read without a tracing library. Pure.

A message says which trace it belongs to in one of three places, taken in this order:

1. an application property ``traceparent`` (W3C Trace Context), with ``tracestate`` beside it;
2. an application property ``Diagnostic-Id``, which the Azure SDKs' producers set: a ``traceparent``
   value, or the older hierarchical Request-Id (``|4bf92f...4736.1.``), which names no span to link
   to and is left out;
3. the event's own ``traceparent`` and ``tracestate`` attributes: a CloudEvent's Distributed Tracing
   extension.

A value that is not a valid ``traceparent`` is ignored (the trace starts here), as W3C Trace Context
tells a receiver to do.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

_TRACEPARENT: Final = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_STATE_LIMIT: Final = 512


@dataclass(frozen=True, slots=True)
class TraceContext:
    """A span of the producer's that an event's processing links to."""

    trace_id: int
    span_id: int
    sampled: bool
    #: The ``tracestate`` that came with it ("" for none).
    state: str = ""


def parse_traceparent(value: object, state: object = "") -> TraceContext | None:
    """A ``traceparent`` header's context, or None when it is not one."""
    if not isinstance(value, str):
        return None
    found = _TRACEPARENT.fullmatch(value.strip())
    if found is None:
        return None
    version, trace, span, flags, rest = found.groups()
    if version == "ff" or (version == "00" and rest) or set(trace) == {"0"} or set(span) == {"0"}:
        return None
    tracestate = state.strip() if isinstance(state, str) and len(state) <= _STATE_LIMIT else ""
    return TraceContext(int(trace, 16), int(span, 16), bool(int(flags, 16) & 1), tracestate)


def from_properties(properties: Mapping[str, object]) -> TraceContext | None:
    """The context in a message's application properties (``traceparent``, else ``Diagnostic-Id``)."""
    if not properties:
        return None
    state = properties.get("tracestate", "")
    return parse_traceparent(properties.get("traceparent"), state) or parse_traceparent(
        properties.get("Diagnostic-Id"), state
    )


def from_event(event: Mapping[str, object]) -> TraceContext | None:
    """The context a CloudEvent carries in its own attributes."""
    return parse_traceparent(event.get("traceparent"), event.get("tracestate", ""))


def traceparent(context: TraceContext) -> str:
    """The ``traceparent`` header of a span with this trace and span id."""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{'01' if context.sampled else '00'}"
