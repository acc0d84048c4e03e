"""A dry run's record of what it would have done: per rule, what it acted on and the actions it planned.

A backtest (``replay --dry-run``) executes nothing; :class:`Backtest` collects, from each planned
action, what a person wants to look at afterwards: per rule, every time it would have acted (an
event it matched, an expectation that expired, a group's notification), with the actions it would
have run and their rendered parameters (:func:`~worker.actions.preview.render_params`).

A replay may plan millions of actions, so what is kept is bounded: the first ``rows_per_rule``
occurrences of each rule are kept in full (the rest are counted, not listed), and times are kept as
counts per time bucket (:class:`Histogram`), whose buckets widen when there are too many. The counts
(per rule, per action type and kind, per bucket) cover every action. Pure: no I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Final

from worker.actions.base import PlannedAction
from worker.actions.preview import render_params
from worker.core.memos import Expiry, Notification

#: What a rule acted on: ``event``, or a memo's kind (``expiry``, ``group``).
Kind = str

#: Occurrences kept in full per rule, by default.
ROWS_PER_RULE: Final = 1_000
#: Bucket widths in seconds, each a multiple of the one before: 10 s, 1 min, 5 min, 15 min, 1 h, 3 h,
#: 6 h, 1 day, 1 week.
WIDTHS: Final = (10, 60, 300, 900, 3_600, 10_800, 21_600, 86_400, 604_800)
#: A histogram widens its buckets when it holds more than this many.
MAX_BUCKETS: Final = 2_048


@dataclass(frozen=True, slots=True)
class ActionRow:
    """One action an occurrence would have run."""

    action_type: str
    action_index: int
    idempotency_key: str
    #: Its parameters, rendered for the occurrence.
    params: Mapping[str, object]


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One time a rule would have acted: on an event it matched, an expiry or a group notification."""

    rule: str
    kind: Kind
    #: The event (for an expiry, the one that started the expectation; for a notification, its first).
    event_id: str
    event_type: str
    subject: str | None
    event_time: datetime | None
    enqueued_time: datetime | None
    partition_id: str
    sequence_number: int | None
    late: bool
    #: When it acts, in POSIX seconds: an event's enqueued time (else its own time), an expiry's
    #: deadline, a notification's last event's time; None when nothing tells.
    moment: float | None
    #: An expiry's expectation key, deadline and ``within``.
    expectation_key: str | None = None
    deadline: float | None = None
    within: str | None = None
    #: A notification's group key, count (listed or not) and listed event ids.
    group_key: str | None = None
    count: int | None = None
    event_ids: tuple[str, ...] = ()
    actions: tuple[ActionRow, ...] = ()


@dataclass
class Histogram:
    """Counts per time bucket, aligned to the epoch; the buckets widen (through :data:`WIDTHS`) to
    stay at most :data:`MAX_BUCKETS`. Counts without a time are kept apart (``untimed``)."""

    width: int = WIDTHS[0]
    buckets: Counter[int] = field(default_factory=Counter)
    untimed: int = 0

    @property
    def total(self) -> int:
        return sum(self.buckets.values()) + self.untimed

    def add(self, moment: float | None, n: int = 1) -> None:
        if moment is None:
            self.untimed += n
            return
        self.buckets[int(moment // self.width) * self.width] += n
        if len(self.buckets) > MAX_BUCKETS:
            self._fit()

    def widen(self, width: int) -> None:
        """Count in buckets of ``width`` (a multiple of the current width) from now on."""
        if width <= self.width:
            return
        merged: Counter[int] = Counter()
        for start, n in self.buckets.items():
            merged[start // width * width] += n
        self.width, self.buckets = width, merged

    def merge(self, other: Histogram) -> None:
        """Add ``other``'s counts: in the wider of the two widths, widened further while there are too
        many buckets (as :meth:`add` would have, given the same times)."""
        self.widen(other.width)
        width = self.width
        for start, n in other.buckets.items():
            self.buckets[start // width * width] += n
        self.untimed += other.untimed
        self._fit()

    def _fit(self) -> None:
        """Widen to the next width while there are more than :data:`MAX_BUCKETS` buckets, up to the widest."""
        while len(self.buckets) > MAX_BUCKETS and self.width < WIDTHS[-1]:
            self.widen(WIDTHS[WIDTHS.index(self.width) + 1])

    def span(self) -> tuple[int, int] | None:
        """The first bucket's start and the last bucket's end, or None when nothing has a time."""
        if not self.buckets:
            return None
        return min(self.buckets), max(self.buckets) + self.width

    def bars(self, start: int, end: int, width: int) -> list[tuple[int, int]]:
        """(bucket start, count) for every bucket of ``width`` (a multiple of this histogram's) from
        ``start`` to ``end``, empty ones included."""
        counts: Counter[int] = Counter()
        for moment, n in self.buckets.items():
            counts[moment // width * width] += n
        first = start // width * width
        return [(moment, counts[moment]) for moment in range(first, end, width)]


def display_width(span: tuple[int, int], least: int, bars: int = 60) -> int:
    """The narrowest bucket width of :data:`WIDTHS`, at least ``least``, showing ``span`` in at most
    ``bars`` bars (the widest when none does)."""
    start, end = span
    for width in WIDTHS:
        if width >= least and (end - 1) // width - start // width + 1 <= bars:
            return width
    return WIDTHS[-1]


@dataclass
class RuleRecord:
    """What one rule would have done."""

    rule: str
    #: Occurrences by kind: every one, listed or not.
    occurrences: Counter[str] = field(default_factory=Counter)
    #: Actions by (action type, kind): every one, listed or not.
    actions: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: When its occurrences act.
    times: Histogram = field(default_factory=Histogram)
    #: The first occurrences, in full.
    rows: list[Occurrence] = field(default_factory=list)
    #: Occurrences beyond the rows kept: counted, not listed.
    unlisted: int = 0
    #: The occurrence the last action belonged to, (partition, id): the next action of the same one
    #: is added to it.
    last: tuple[str, str] | None = None
    #: Whether the last occurrence is listed (its actions are added to its row).
    listing: bool = False


class Backtest:
    """Collects the planned actions of a dry run: pass :meth:`add` as the replay's ``observe``."""

    def __init__(self, rows_per_rule: int = ROWS_PER_RULE) -> None:
        self.rows_per_rule = rows_per_rule
        self._rules: dict[str, RuleRecord] = {}

    @property
    def rules(self) -> Mapping[str, RuleRecord]:
        """Each rule that planned an action, in the order they first did."""
        return self._rules

    @property
    def total(self) -> int:
        """Actions planned, every one."""
        return sum(sum(record.actions.values()) for record in self._rules.values())

    def add(self, action: PlannedAction) -> None:
        """Record one planned action. The actions of one occurrence come one after another (a rule's
        actions in order), and are listed together."""
        record = self._rules.get(action.rule)
        if record is None:
            record = self._rules[action.rule] = RuleRecord(action.rule)
        memo = action.memo
        kind = "event" if memo is None else memo.kind
        record.actions[action.spec.type, kind] += 1
        identity = (action.event.position.partition_id, action.event.id if memo is None else memo.id)
        if identity != record.last:
            record.last = identity
            record.occurrences[kind] += 1
            record.times.add(_moment_of(action))
            record.listing = len(record.rows) < self.rows_per_rule
            if not record.listing:
                record.unlisted += 1
                return
            record.rows.append(_occurrence(action, kind))
        if record.listing:
            row = ActionRow(action.spec.type, action.spec.index, action.idempotency_key, render_params(action))
            last = record.rows[-1]
            record.rows[-1] = replace(last, actions=(*last.actions, row))

    def merge(self, other: Backtest) -> None:
        """Add what ``other`` collected as if its actions had come after this one's (the partitions of
        a replay run apart, merged in their order): the same rules in the same order, the same rows
        (the first :attr:`rows_per_rule` of each rule), counts and times."""
        for name, theirs in other.rules.items():
            mine = self._rules.get(name)
            if mine is None:
                mine = self._rules[name] = RuleRecord(name)
            mine.occurrences.update(theirs.occurrences)
            mine.actions.update(theirs.actions)
            mine.times.merge(theirs.times)
            room = max(self.rows_per_rule - len(mine.rows), 0)
            kept = theirs.rows[:room]
            mine.rows.extend(kept)
            mine.unlisted += theirs.unlisted + len(theirs.rows) - len(kept)
            mine.last = theirs.last
            mine.listing = theirs.listing and len(kept) == len(theirs.rows)

    def span(self) -> tuple[int, int] | None:
        """The time every rule's occurrences cover (bucket-aligned), or None when none has a time."""
        return _union(record.times.span() for record in self._rules.values())

    def widest(self) -> int:
        """The widest bucket width of the rules' histograms: charts shared by every rule use at least it."""
        return max((record.times.width for record in self._rules.values()), default=WIDTHS[0])


def _union(spans: Iterable[tuple[int, int] | None]) -> tuple[int, int] | None:
    present = [span for span in spans if span is not None]
    if not present:
        return None
    return min(start for start, _ in present), max(end for _, end in present)


def _occurrence(action: PlannedAction, kind: Kind) -> Occurrence:
    event, memo = action.event, action.memo
    position = event.position
    base = Occurrence(
        rule=action.rule,
        kind=kind,
        event_id=event.id,
        event_type=event.type,
        subject=event.subject,
        event_time=event.time,
        enqueued_time=position.enqueued_time,
        partition_id=position.partition_id,
        sequence_number=position.sequence_number,
        late=action.late,
        moment=_moment_of(action),
    )
    if isinstance(memo, Expiry):
        return replace(base, expectation_key=memo.key, deadline=memo.deadline, within=memo.within)
    if isinstance(memo, Notification):
        return replace(base, group_key=memo.key, count=memo.total, event_ids=tuple(e.id for e in memo.events))
    return base


def _moment_of(action: PlannedAction) -> float | None:
    """When an action's occurrence acts (see :attr:`Occurrence.moment`)."""
    memo = action.memo
    if isinstance(memo, Expiry):
        return memo.deadline
    if isinstance(memo, Notification):
        return memo.last
    event = action.event
    time = event.position.enqueued_time or event.time
    return time.timestamp() if time is not None else None
