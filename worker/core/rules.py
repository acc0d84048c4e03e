"""The rules table, compiled and indexed, and its evaluation against one event.

The table is compiled once (see :mod:`worker.rulefiles.loading`) into an index by event type, then by
subject prefix, so evaluating an event costs in proportion to the rules that could match it, not
to the size of the table. Pure: no I/O, no clock, no logging.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from worker.actions.base import ActionSpec, PlannedAction
from worker.actions.templates import Template
from worker.core.filters import CompiledFilter
from worker.events import Event


@dataclass(frozen=True, slots=True)
class Expect:
    """A rule's ``expect``: the event that must follow a matched one, by key, within a time."""

    #: Seconds from the starting event's time.
    within: float
    #: ``within`` as written (``6h``), for templates.
    within_text: str
    filter: CompiledFilter
    #: The key both events are matched by (None: the subject).
    key: Template | None = None


@dataclass(frozen=True, slots=True)
class Group:
    """A rule's ``group``: matched events collected by key, notified once per ``wait``/``interval``."""

    by: Template
    #: Seconds from a group's first event to its first notification.
    wait: float
    #: Seconds between notifications while events keep joining.
    interval: float


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    filter: CompiledFilter
    actions: tuple[ActionSpec, ...]
    description: str = ""
    #: Where the rule was defined, ``file:line``, for messages.
    source: str = ""
    #: Seconds: the rule does not act on an older event (None: the worker's default, if any).
    max_age: float | None = None
    #: A rule that acts when an expected event does not come (see :mod:`worker.core.remember`).
    expect: Expect | None = None
    #: A rule that acts once for a group of events (see :mod:`worker.core.remember`).
    group: Group | None = None

    @property
    def remembers(self) -> bool:
        """Whether the rule acts through the partition's memory rather than on each event."""
        return self.expect is not None or self.group is not None


class Outcome(enum.StrEnum):
    """How the rules table disposed of one event."""

    MATCHED = "matched"
    UNMATCHED = "unmatched"
    FOREIGN_TOPIC = "foreign_topic"
    UNHANDLED_TYPE = "unhandled_type"


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    rules: tuple[Rule, ...] = ()

    def plan(self, event: Event, *, late: bool = False) -> tuple[PlannedAction, ...]:
        """The actions the matched rules ask for, in rule order then action order."""
        return tuple(PlannedAction(rule.name, spec, event, late) for rule in self.rules for spec in rule.actions)


_FOREIGN = Verdict(Outcome.FOREIGN_TOPIC)
_UNHANDLED = Verdict(Outcome.UNHANDLED_TYPE)
_UNMATCHED = Verdict(Outcome.UNMATCHED)


#: An index entry: the rule's position in the table (for ordering), its test, the rule.
_Entry = tuple[int, Callable[[Event], bool], Rule]


@dataclass(frozen=True, slots=True)
class _PrefixIndex:
    """Rules by subject prefix: those without one, then by case-folded and by exact prefixes."""

    always: tuple[_Entry, ...]
    folded: dict[str, tuple[_Entry, ...]]
    folded_lengths: tuple[int, ...]
    exact: dict[str, tuple[_Entry, ...]]
    exact_lengths: tuple[int, ...]

    @classmethod
    def build(cls, rules: Sequence[Rule], positions: Iterable[int]) -> _PrefixIndex:
        always: list[_Entry] = []
        folded: dict[str, list[_Entry]] = defaultdict(list)
        exact: dict[str, list[_Entry]] = defaultdict(list)
        for i in positions:
            rule = rules[i]
            entry = (i, rule.filter.residual.test, rule)
            prefix = rule.filter.subject_prefix
            if not prefix:
                always.append(entry)
            else:
                (exact if rule.filter.prefix_case_sensitive else folded)[prefix].append(entry)
        return cls(
            always=tuple(always),
            folded={k: tuple(v) for k, v in folded.items()},
            folded_lengths=tuple(sorted({len(k) for k in folded})),
            exact={k: tuple(v) for k, v in exact.items()},
            exact_lengths=tuple(sorted({len(k) for k in exact})),
        )

    def candidates(self, subject: str | None) -> Sequence[_Entry]:
        """The rules whose subject prefix the subject has, in table order."""
        if subject is None or not (self.folded_lengths or self.exact_lengths):
            return self.always
        found: list[_Entry] = list(self.always)
        hits = 0
        if self.folded_lengths:
            # Case folding may lengthen the subject ("ß" -> "ss"): bound by the folded length.
            folded = subject.casefold()
            folded_size = len(folded)
            for length in self.folded_lengths:
                if length > folded_size:
                    break
                hit = self.folded.get(folded[:length])
                if hit:
                    found.extend(hit)
                    hits += 1
        size = len(subject)
        for length in self.exact_lengths:
            if length > size:
                break
            hit = self.exact.get(subject[:length])
            if hit:
                found.extend(hit)
                hits += 1
        if hits and (hits > 1 or self.always):
            found.sort(key=_position)
        return found


def _position(entry: _Entry) -> int:
    return entry[0]


@dataclass(frozen=True, slots=True)
class RulesTable:
    """A validated, compiled rules table."""

    rules: tuple[Rule, ...]
    #: Case-folded topics (workspaces) whose events are acted on; empty means every topic.
    topics: frozenset[str] = frozenset()
    #: Non-fatal findings of the loader (for example an unknown Azure ML event type).
    warnings: tuple[str, ...] = ()
    #: Whether any rule has a max_age of its own.
    ages: bool = False
    #: The rules with ``expect``, whose ``expect.filter`` every event is tried against.
    expecting: tuple[Rule, ...] = ()
    #: Whether any rule remembers (``expect`` or ``group``).
    remembers: bool = False
    #: Event types only an ``expect.filter`` names (case-folded); None: one admits every type.
    _expected_types: frozenset[str] | None = field(default=frozenset(), repr=False)
    _named: dict[str, Rule] = field(default_factory=dict, repr=False)
    _topics_as_written: frozenset[str] = field(default=frozenset(), repr=False)
    _by_type: dict[str, _PrefixIndex] = field(default_factory=dict, repr=False)
    _any_type: _PrefixIndex | None = field(default=None, repr=False)

    @classmethod
    def build(cls, rules: Sequence[Rule], topics: Iterable[str] = (), warnings: Sequence[str] = ()) -> RulesTable:
        every_type = [i for i, r in enumerate(rules) if r.filter.event_types is None]
        by_type: dict[str, list[int]] = defaultdict(list)
        for i, rule in enumerate(rules):
            for name in rule.filter.event_types or ():
                by_type[name].append(i)
        index = {name: _PrefixIndex.build(rules, sorted({*found, *every_type})) for name, found in by_type.items()}
        # The spellings as written point at the same entries: most events match them exactly,
        # which spares a case fold per event.
        for rule in rules:
            for name in rule.filter.event_type_names:
                index.setdefault(name, index[name.casefold()])
        topics = tuple(topics)
        expecting = tuple(rule for rule in rules if rule.expect is not None)
        expected: frozenset[str] | None = frozenset()
        for rule in expecting:
            assert rule.expect is not None  # noqa: S101 - selected above
            types = rule.expect.filter.event_types
            expected = None if types is None or expected is None else expected | types
        return cls(
            rules=tuple(rules),
            topics=frozenset(t.casefold() for t in topics),
            warnings=tuple(warnings),
            ages=any(rule.max_age is not None for rule in rules),
            expecting=expecting,
            remembers=any(rule.remembers for rule in rules),
            _expected_types=expected,
            _named={rule.name: rule for rule in rules},
            _topics_as_written=frozenset(topics),
            _by_type=index,
            _any_type=_PrefixIndex.build(rules, every_type) if every_type else None,
        )

    def handles(self, event_type: str) -> bool:
        """Whether any rule names this event type (or admits every type), in its filter or its ``expect``."""
        if self._any_type is not None or event_type in self._by_type:
            return True
        folded = event_type.casefold()
        expected = self._expected_types
        return folded in self._by_type or expected is None or folded in expected

    def rule(self, name: str) -> Rule | None:
        """The rule of that name, if the table has it."""
        return self._named.get(name)

    def admits_topic(self, topic: str | None) -> bool:
        return (
            not self.topics
            or topic in self._topics_as_written
            or (topic is not None and topic.casefold() in self.topics)
        )

    def evaluate(self, event: Event) -> Verdict:
        """Which rules match the event: the workspace guard, then the type and subject index."""
        if self.topics and not self.admits_topic(event.topic):
            return _FOREIGN
        index = self._by_type.get(event.type) or self._by_type.get(event.type.casefold(), self._any_type)
        if index is None:
            # A type only an ``expect.filter`` names is handled: it may fulfil an expectation.
            return _UNMATCHED if self.expecting and self.handles(event.type) else _UNHANDLED
        matched = tuple([rule for _, holds, rule in index.candidates(event.subject) if holds(event)])
        return Verdict(Outcome.MATCHED, matched) if matched else _UNMATCHED


@dataclass(frozen=True, slots=True)
class Explanation:
    rule: str
    matched: bool
    reason: str


def explain(table: RulesTable, event: Event) -> list[Explanation]:
    """Every rule's verdict on the event, with the condition that failed; for debugging filters.

    Evaluates every rule without the index, so it also checks the index's answer.
    """
    if not table.admits_topic(event.topic):
        reason = f"topic {event.topic!r} is not in the workspace allow-list, so no rule is evaluated"
        return [Explanation(rule.name, False, reason) for rule in table.rules]
    out = []
    for rule in table.rules:
        why = rule.filter.condition.why_not(event)
        out.append(Explanation(rule.name, why is None, why or "every condition holds"))
    return out
