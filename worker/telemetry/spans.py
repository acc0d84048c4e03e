"""The spans the worker makes, behind one narrow interface; :data:`NO_TRACER` makes none.

The driver, the action runner, the HTTP client and the live partitions speak only :class:`Tracer`.
Its OpenTelemetry implementation (:mod:`worker.telemetry.otel`) is loaded only when tracing is on;
off, each call here is a call that does nothing, and the driver skips even that.

The spans, and who makes them:

- ``process {hub}``: one per event that rules act on (kind consumer), from its release by the
  reorder buffer to its last action's end; linked to the producer's context when the message
  carries one (:mod:`worker.telemetry.context`). A rule that remembers makes ``expire {rule}`` or
  ``notify {rule}`` instead, when it fires.
- ``attempt {type}``: one per action attempt, a child of its event's span, with its result.
- ``{METHOD}``: the HTTP client span of an attempt's request (kind client); its context goes to the
  target as a W3C ``traceparent`` header.
- ``checkpoint {partition}``: a checkpoint write, with the Azure SDK's own spans under it.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol

from worker.events import Event

#: What an attribute may hold.
Attribute = str | bool | int | float | tuple[str, ...]


class Span(Protocol):
    def set(self, key: str, value: Attribute) -> None:
        """Set an attribute."""

    def failed(self, reason: str, kind: str | None = None) -> None:
        """Mark the span as an error, saying why (``kind``: its ``error.type``, such as an exception's
        name or a status code)."""

    def end(self) -> None: ...


class Tracer(Protocol):
    def event(self, event: Event, *, rules: Sequence[str], late: bool, memo: str | None) -> Span:
        """Start the span of an event that ``rules`` act on (``memo``: ``expiry`` or ``group`` when a
        rule that remembers fires); not current: see :meth:`current`."""

    def current(self, span: Span) -> AbstractContextManager[object]:
        """Make ``span`` the parent of the spans started inside (it is not ended on leaving)."""

    def attempt(
        self, action_type: str, *, rule: str, index: int, target: str, number: int
    ) -> AbstractContextManager[Span]:
        """The span of an action's attempt ``number``, current inside."""

    def request(self, method: str, url: str, headers: MutableMapping[str, str]) -> AbstractContextManager[Span]:
        """The client span of an HTTP request, current inside; its context is put into ``headers``."""

    def checkpoint(self, partition_id: str, sequence_number: int | None) -> AbstractContextManager[Span]:
        """The span of a checkpoint write, current inside."""

    def close(self) -> None:
        """Send what is still buffered, and stop."""


class _NoSpan:
    __slots__ = ()

    def set(self, key: str, value: Attribute) -> None:
        return None

    def failed(self, reason: str, kind: str | None = None) -> None:
        return None

    def end(self) -> None:
        return None


NO_SPAN: Span = _NoSpan()
_NOTHING: AbstractContextManager[Span] = nullcontext(NO_SPAN)


class _NoTracer:
    """Tracing off: no span is made, nothing is sent, no header is added."""

    __slots__ = ()

    def event(self, event: Event, *, rules: Sequence[str], late: bool, memo: str | None) -> Span:
        return NO_SPAN

    def current(self, span: Span) -> AbstractContextManager[object]:
        return _NOTHING

    def attempt(
        self, action_type: str, *, rule: str, index: int, target: str, number: int
    ) -> AbstractContextManager[Span]:
        return _NOTHING

    def request(self, method: str, url: str, headers: MutableMapping[str, str]) -> AbstractContextManager[Span]:
        return _NOTHING

    def checkpoint(self, partition_id: str, sequence_number: int | None) -> AbstractContextManager[Span]:
        return _NOTHING

    def close(self) -> None:
        return None


NO_TRACER: Tracer = _NoTracer()
