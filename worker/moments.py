"""Times as operators write them: durations (``90s``, ``15m``, ``2h``, ``7d``, ``1h30m``) and start positions.

A start position says where a partition that has no checkpoint starts reading (``earliest``,
``latest``, an ISO 8601 time, or a duration back from now), and where ``checkpoints reset`` moves
a checkpoint. Pure: parsing takes text, and resolving a duration takes ``now`` from the caller.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)([smhdw]))", re.IGNORECASE)
DURATION_FORMAT = "a number and a unit (s, m, h, d, w), such as 90s, 15m, 2h, 7d or 1h30m"


def parse_duration(text: str) -> timedelta:
    """``2h`` → 2 hours. ``ValueError`` naming the expected form when ``text`` is not a duration."""
    compact = text.strip().replace(" ", "")
    parts = _DURATION.findall(compact)
    if not compact or "".join(number + unit for number, unit in parts) != compact:
        raise ValueError(f"{text!r} is not a duration: expected {DURATION_FORMAT}")
    seconds = sum(float(number) * _UNITS[unit.lower()] for number, unit in parts)
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a duration: it must be longer than zero")
    return timedelta(seconds=seconds)


def parse_time(text: str) -> datetime:
    """An ISO 8601 time; one without a zone is taken as UTC."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time such as 2026-11-30T08:00:00Z") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class StartPosition:
    """Where to start reading a partition: its earliest or latest event, an enqueued time, or a time back from now."""

    kind: Literal["earliest", "latest", "time", "ago"]
    time: datetime | None = None
    ago: timedelta | None = None

    def at(self, now: datetime) -> Literal["earliest", "latest"] | datetime:
        """The position resolved at ``now``: ``earliest``, ``latest`` or an enqueued time."""
        if self.kind == "time":
            assert self.time is not None  # noqa: S101 - built by parse_start
            return self.time
        if self.kind == "ago":
            assert self.ago is not None  # noqa: S101 - built by parse_start
            return now - self.ago
        return self.kind

    def __str__(self) -> str:
        if self.kind == "time":
            assert self.time is not None  # noqa: S101 - built by parse_start
            return self.time.isoformat()
        if self.kind == "ago":
            assert self.ago is not None  # noqa: S101 - built by parse_start
            return f"{_seconds(self.ago)} ago"
        return self.kind


EARLIEST = StartPosition("earliest")
LATEST = StartPosition("latest")
START_FORMAT = "earliest, latest, an ISO 8601 time (2026-11-30T08:00:00Z) or a duration back from now (2h)"


def parse_start(text: str) -> StartPosition:
    """``earliest`` | ``latest`` | an ISO 8601 time | a duration back from now."""
    word = text.strip().lower()
    if word in ("earliest", "latest"):
        return EARLIEST if word == "earliest" else LATEST
    if word[:1].isdigit() and word[-1:] in _UNITS and "-" not in word and ":" not in word:
        return StartPosition("ago", ago=parse_duration(word))
    try:
        return StartPosition("time", time=parse_time(text))
    except ValueError:
        raise ValueError(f"{text!r} is not a start position: expected {START_FORMAT}") from None


def _seconds(span: timedelta) -> str:
    """A duration as the shortest text that parses back to it (``2h``, ``90s``, ``1h30m``)."""
    total = span.total_seconds()
    if total != int(total):
        return f"{total:g}s"
    remaining, out = int(total), []
    for unit, size in sorted(_UNITS.items(), key=lambda item: -item[1]):
        if unit == "w":
            continue
        count, remaining = divmod(remaining, size)
        if count:
            out.append(f"{count}{unit}")
    return "".join(out) or "0s"


def format_duration(span: timedelta) -> str:
    """The inverse of :func:`parse_duration`, for messages and reports."""
    return _seconds(span)
