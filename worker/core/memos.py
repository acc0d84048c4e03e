"""What a rule that remembers acts on: an expectation that expired, or a group's notification.

A plain rule acts on one event. A rule with ``expect`` acts when an expected event did not come in
time (an :class:`Expiry`, carrying the event that started the expectation); a rule with ``group``
acts once for several events (a :class:`Notification`). Each has a stable :attr:`id`, from which
its actions' idempotency keys are made, so that a restart never fires one twice. Pure records.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal, NamedTuple

from worker.events import Event


def iso(moment: float) -> str:
    """POSIX seconds as an ISO 8601 UTC time."""
    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")


class Expiry(NamedTuple):
    """An expectation that no matching event fulfilled by its deadline."""

    rule: str
    key: str
    #: POSIX seconds.
    deadline: float
    #: The rule's ``within``, as written (``6h``).
    within: str
    #: The event that started the expectation.
    event: Event
    #: It fell due while no worker ran, and fires late.
    late: bool = False

    @property
    def kind(self) -> Literal["expiry"]:
        return "expiry"

    @property
    def id(self) -> str:
        return f"expiry\x1f{self.key}\x1f{self.event.id}"

    def context(self) -> dict[str, object]:
        """What templates see as ``expectation``."""
        return {"key": self.key, "deadline": iso(self.deadline), "within": self.within}

    def template_context(self) -> dict[str, object]:
        return {"expectation": self.context(), "events": [self.event.envelope]}

    def record(self) -> dict[str, object]:
        """The ``file`` action's fields (``event_id`` and ``subject`` are the starting event's)."""
        return {"expired": True, "expectation_key": self.key}


class Notification(NamedTuple):
    """One notification of a group: the events that joined it since the last one."""

    rule: str
    key: str
    #: The events listed, in order (at most the group's cap).
    events: tuple[Event, ...]
    #: Every event of this notification, the unlisted ones too.
    total: int
    #: POSIX seconds: the first and last event's time.
    first: float
    last: float
    late: bool = False

    @property
    def kind(self) -> Literal["group"]:
        return "group"

    @property
    def event(self) -> Event:
        """The notification's first event, which templates see as ``event``."""
        return self.events[0]

    @property
    def id(self) -> str:
        return f"group\x1f{self.key}\x1f{self.events[0].id}"

    def context(self) -> dict[str, object]:
        """What templates see as ``group``."""
        return {"key": self.key, "count": self.total, "first": iso(self.first), "last": iso(self.last)}

    def template_context(self) -> dict[str, object]:
        return {"group": self.context(), "events": [event.envelope for event in self.events]}

    def record(self) -> dict[str, object]:
        """The ``file`` action's fields."""
        return {"group": self.key, "event_ids": [event.id for event in self.events], "count": self.total}


Memo = Expiry | Notification
