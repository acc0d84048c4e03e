"""A partition's memory for rules that remember: pending expectations and groups, and when they fire.

A rule with ``expect`` starts an expectation when an event matches its filter: an event with the
same key that matches ``expect.filter`` must follow within ``within``; when none has by the
deadline, the expectation expires and the rule acts (an :class:`~worker.core.memos.Expiry`). A rule with
``group`` collects the events it matches by key and acts once per group (a
:class:`~worker.core.memos.Notification`): ``wait`` after the first event, then at most once per
``interval`` while events keep joining.

Time comes in as an argument (:meth:`Memory.due`): the partition's watermark in a replay, the wall
clock in the live worker. What is pending, and what fired but has not finished, is saved with the
checkpoint (:meth:`Memory.stored`) and restored by the next owner, which fires what fell due while no
worker ran (marked late). Memory is bounded: at most ``max_pending`` expectations and groups, and
``max_group_events`` events listed per notification; what a cap leaves out is counted in the tally's
evictions. Pure: no I/O, no clock, no logging.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

import orjson

from worker.actions.templates import event_context, path_value
from worker.core.accounting import Tally
from worker.core.decoding import decode
from worker.core.memos import Expiry, Memo, Notification
from worker.core.rules import Rule, RulesTable
from worker.core.state import Pending, PendingKind, StoredEvent, enqueued_datetime
from worker.errors import RenderError, StateError
from worker.events import Event, Message, Position

#: Seconds past its time after which a restored expectation or group that fires is marked late.
LATE_AFTER: Final = 1.0


def event_time(event: Event, default: float) -> float:
    """An event's time for expectations and groups: when Event Hubs enqueued it, else its own time."""
    enqueued = event.message.position.enqueued_time
    if enqueued is not None:
        return enqueued.timestamp()
    return event.time.timestamp() if event.time is not None else default


@dataclass(slots=True)
class _Entry:
    """A pending expectation (one event) or group (its events since the last notification)."""

    rule: str
    key: str
    due: float
    events: list[Event]
    total: int
    first: float
    last: float
    restored: bool = False
    #: An expectation (else a group).
    expect: bool = True


@dataclass(slots=True)
class Memory:
    """One partition's pending expectations and groups."""

    tally: Tally
    partition_id: str
    max_pending: int = 10_000
    max_group_events: int = 100
    _expecting: dict[tuple[str, str], _Entry] = field(default_factory=dict)
    _groups: dict[tuple[str, str], _Entry] = field(default_factory=dict)
    #: (due, order, entry): entries whose due time changed or that ended are skipped when popped.
    _heap: list[tuple[float, int, _Entry]] = field(default_factory=list)
    _order: int = 0
    #: Fired and not finished: (rule, memo id) -> memo.
    _fired: dict[tuple[str, str], Memo] = field(default_factory=dict)
    #: Restored fired memos, to fire again at once.
    _refire: list[Memo] = field(default_factory=list)
    #: Pending expectations per rule: an event is tried against the expect filters of these only.
    _waiting: Counter[str] = field(default_factory=Counter)
    #: Fired memos finished since the start: each changes the state to save, without an event that
    #: would move the checkpoint, so the live partition writes the state again when this moves.
    settled: int = 0

    def __len__(self) -> int:
        return len(self._expecting) + len(self._groups)

    @property
    def busy(self) -> bool:
        """Whether anything is pending or fired."""
        return bool(self._expecting or self._groups or self._fired or self._refire)

    # --- events -------------------------------------------------------------------------------

    def fulfil(self, event: Event, rules: tuple[Rule, ...]) -> bool:
        """End the pending expectations of ``rules`` that the event fulfils; whether it fulfilled any."""
        if not self._expecting:
            return False
        fulfilled = False
        waiting = self._waiting
        for rule in rules:
            expect = rule.expect
            if expect is None or not waiting[rule.name] or not expect.filter.condition.test(event):
                continue
            key = self._key(rule, event)
            if key is None:
                continue
            entry = self._expecting.pop((rule.name, key), None)
            if entry is not None:
                waiting[rule.name] -= 1
                self.tally.expect_fulfilled[rule.name] += 1
                fulfilled = True
        return fulfilled

    def take(self, event: Event, rules: tuple[Rule, ...], at: float) -> None:
        """The event matched these rules that remember: start their expectations, join their groups."""
        moment = event_time(event, at)
        tally = self.tally
        for rule in rules:
            key = self._key(rule, event)
            if key is None:
                continue
            name = rule.name
            if rule.expect is not None:
                if (name, key) in self._expecting:
                    continue  # a second start does not move the deadline
                if len(self) >= self.max_pending:
                    tally.evictions["expectations_forgotten"] += 1
                    continue
                entry = _Entry(name, key, moment + rule.expect.within, [event], 1, moment, moment)
                self._expecting[name, key] = entry
                self._waiting[name] += 1
                tally.expect_started[name] += 1
            elif rule.group is not None:
                group = self._groups.get((name, key))
                if group is None:
                    if len(self) >= self.max_pending:
                        tally.evictions["groups_forgotten"] += 1
                        continue
                    tally.group_joined[name] += 1
                    entry = _Entry(name, key, moment + rule.group.wait, [event], 1, moment, moment, expect=False)
                    self._groups[name, key] = entry
                else:
                    if not group.total:
                        group.first = moment
                    if len(group.events) < self.max_group_events:
                        group.events.append(event)
                    else:
                        tally.evictions["group_events_unlisted"] += 1
                    tally.group_joined[name] += 1
                    group.total += 1
                    group.last = moment
                    continue
            else:
                continue
            self._schedule(entry)

    def _key(self, rule: Rule, event: Event) -> str | None:
        template = rule.expect.key if rule.expect is not None else rule.group.by if rule.group is not None else None
        if template is None:
            return event.subject or ""
        path = template.path
        if path is not None:  # one name or member path: read it as Jinja would, without rendering
            value = path_value(event, path)
            if type(value) is str:
                return value
        try:
            return template.render(event_context(event))
        except RenderError:
            self.tally.key_failed[rule.name] += 1
            return None

    def _schedule(self, entry: _Entry) -> None:
        self._order += 1
        heapq.heappush(self._heap, (entry.due, self._order, entry))

    # --- time ---------------------------------------------------------------------------------

    @property
    def next_due(self) -> float | None:
        """When :meth:`due` next has something to fire (None: nothing pending)."""
        if self._refire:
            return float("-inf")
        heap = self._heap
        while heap and not self._live(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def _live(self, item: tuple[float, int, _Entry]) -> bool:
        due, _, entry = item
        table = self._expecting if entry.expect else self._groups
        return due == entry.due and table.get((entry.rule, entry.key)) is entry

    def due(self, at: float, table: RulesTable) -> list[tuple[Rule, Memo]]:
        """Fire what is due at ``at``, in due order: each with the rule that acts on it. A memo stays
        fired (saved with the checkpoint) until :meth:`done`."""
        out: list[tuple[Rule, Memo]] = []
        if self._refire:
            for memo in self._refire:
                rule = self._rule(table, memo.rule)
                if rule is not None:
                    self._fired[memo.rule, memo.id] = memo
                    out.append((rule, memo))
            self._refire = []
        heap = self._heap
        while heap and heap[0][0] <= at:
            item = heapq.heappop(heap)
            if not self._live(item):
                continue
            entry = item[2]
            fired = self._fire(entry, at, table)
            if fired is not None:
                out.append(fired)
        return out

    def _fire(self, entry: _Entry, at: float, table: RulesTable) -> tuple[Rule, Memo] | None:
        late = entry.restored and at - entry.due > LATE_AFTER
        rule = self._rule(table, entry.rule)
        if entry.expect:
            del self._expecting[entry.rule, entry.key]
            self._waiting[entry.rule] -= 1
            if rule is None or rule.expect is None:
                return None
            self.tally.expect_expired[rule.name] += 1
            memo: Memo = Expiry(rule.name, entry.key, entry.due, rule.expect.within_text, entry.events[0], late)
        else:
            if not entry.total or rule is None or rule.group is None:
                del self._groups[entry.rule, entry.key]  # nothing joined since the last notification: it ends
                return None
            memo = Notification(rule.name, entry.key, tuple(entry.events), entry.total, entry.first, entry.last, late)
            self.tally.group_notified[rule.name] += 1
            entry.events, entry.total, entry.restored = [], 0, False
            entry.due += rule.group.interval
            self._schedule(entry)
        self._fired[rule.name, memo.id] = memo
        return rule, memo

    def _rule(self, table: RulesTable, name: str) -> Rule | None:
        rule = table.rule(name)
        if rule is None or not rule.remembers:
            self.tally.evictions["pending_of_removed_rules"] += 1
            return None
        return rule

    def done(self, rule: str, memo: Memo) -> None:
        """The memo's actions are finished (or dead-lettered): it is no longer saved."""
        if self._fired.pop((rule, memo.id), None) is not None:
            self.settled += 1

    # --- saving -------------------------------------------------------------------------------

    def pending_counts(self) -> Counter[tuple[str, str]]:
        """What is pending, per (rule, kind): ``expect`` or ``group``."""
        counts: Counter[tuple[str, str]] = Counter()
        for rule, _ in self._expecting:
            counts[rule, "expect"] += 1
        for (rule, _), group in self._groups.items():
            if group.total:
                counts[rule, "group"] += 1
        return counts

    def stored(self) -> tuple[Pending, ...]:
        """What to save with the checkpoint."""
        out: list[Pending] = []
        for memo in (*self._fired.values(), *self._refire):
            if isinstance(memo, Expiry):
                out.append(Pending("expiry", memo.rule, memo.key, memo.deadline, (_store(memo.event),)))
            else:
                events = tuple(_store(e) for e in memo.events)
                out.append(Pending("notification", memo.rule, memo.key, 0.0, events, memo.total, memo.first, memo.last))
        entries = sorted((*self._expecting.values(), *self._groups.values()), key=lambda e: e.due)
        for entry in entries:
            kind: PendingKind = "expect" if entry.expect else "group"
            events = tuple(_store(e) for e in entry.events)
            out.append(Pending(kind, entry.rule, entry.key, entry.due, events, entry.total, entry.first, entry.last))
        return tuple(out)

    def restore(self, pending: tuple[Pending, ...], table: RulesTable) -> None:
        """Take up what a previous owner saved: pending entries wait on, fired ones fire again."""
        for item in pending:
            events = [_load(e, self.partition_id) for e in item.events]
            if item.kind in ("expiry", "notification"):
                if not events:
                    continue
                within = ""
                rule = table.rule(item.rule)
                if rule is not None and rule.expect is not None:
                    within = rule.expect.within_text
                memo: Memo
                if item.kind == "expiry":
                    memo = Expiry(item.rule, item.key, item.due, within, events[0], True)
                else:
                    memo = Notification(item.rule, item.key, tuple(events), item.total, item.first, item.last, True)
                self._refire.append(memo)
                continue
            entry = _Entry(
                item.rule, item.key, item.due, events, item.total, item.first, item.last, True, item.kind == "expect"
            )
            if entry.expect and not events:
                continue
            if entry.expect:
                self._expecting[item.rule, item.key] = entry
                self._waiting[item.rule] += 1
            else:
                self._groups[item.rule, item.key] = entry
            self._schedule(entry)


def _store(event: Event) -> StoredEvent:
    position = event.message.position
    enqueued = position.enqueued_time
    return StoredEvent(
        orjson.dumps(event.envelope),
        position.partition_id,
        position.offset,
        position.sequence_number,
        None if enqueued is None else enqueued.timestamp(),
        event.body_index,
    )


def _load(stored: StoredEvent, partition_id: str) -> Event:
    position = Position(
        stored.partition_id or partition_id, stored.offset, stored.sequence_number, enqueued_datetime(stored.enqueued)
    )
    (decoded,) = decode(Message(stored.body, position))
    if not isinstance(decoded, Event):
        raise StateError(f"a saved pending event does not decode: {decoded.error}")
    return decoded._replace(body_index=stored.body_index)
