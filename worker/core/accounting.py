"""Accounting: every event read ends in exactly one outcome, counted per partition, type and rule.

Outcomes are ``matched`` (the actions of at least one rule run), ``unmatched``, ``skipped`` (with a
reason: foreign topic, unhandled type, duplicate, late), ``invalid`` (with the decoder's reason)
and ``handed_over`` (held in the reorder buffer when the partition was closed here: left to its
next owner, which reads it again from the checkpoint). The counts always add up to the events
read, and :meth:`Tally.check` says so or says what is off. Actions are counted apart, per rule:
run, dead-lettered, or (dry run) planned.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field

from worker.actions.base import ActionFate


class Fate(enum.StrEnum):
    """The one outcome of an event read."""

    MATCHED = "matched"
    UNMATCHED = "unmatched"
    SKIPPED = "skipped"
    INVALID = "invalid"
    #: Still held when the partition was closed here; its next owner reads it again.
    HANDED_OVER = "handed_over"


class Skip(enum.StrEnum):
    """Why an event was skipped."""

    FOREIGN_TOPIC = "foreign_topic"
    UNHANDLED_TYPE = "unhandled_type"
    DUPLICATE = "duplicate"
    LATE = "late"
    #: Older than the max_age of every rule that matched it.
    STALE = "stale"


#: Distinct foreign topics counted by name (the rest are counted as skipped only).
FOREIGN_TOPICS_KEPT = 16

#: The per-rule counters of rules that remember, and their labels in a report.
_REMEMBERING = ("expect_started", "expect_fulfilled", "expect_expired", "group_joined", "group_notified", "key_failed")
_REMEMBERED = ("started", "fulfilled", "expired", "joined", "notified", "key_failed")

#: Type name counted for events whose type is unknown (invalid bodies).
NO_TYPE = "(invalid)"


@dataclass
class Tally:
    """Counts for one run; merge the tallies of several partitions with :meth:`add`."""

    #: Events read (counted when read, apart from their outcomes, so that :meth:`check` means something).
    read: int = 0
    #: Events per (partition, event type, fate): the one counter on the hot path; the views below
    #: are derived from it.
    counts: Counter[tuple[str, str, Fate]] = field(default_factory=Counter)
    skipped: Counter[Skip] = field(default_factory=Counter)
    invalid: Counter[str] = field(default_factory=Counter)
    #: Events each rule matched (and acts on).
    rule_matches: Counter[str] = field(default_factory=Counter)
    #: Events each rule matched but does not act on, being older than the rule's max_age.
    rule_stale: Counter[str] = field(default_factory=Counter)
    #: Actions per (rule, action type, fate).
    actions: Counter[tuple[str, str, ActionFate]] = field(default_factory=Counter)
    #: Events processed although late (the ``process`` late policy); counted under their fate too.
    late_processed: int = 0
    #: Memory caps reached: what was forgotten or released early, by cap.
    evictions: Counter[str] = field(default_factory=Counter)
    #: Events skipped as foreign_topic, by topic: the first :data:`FOREIGN_TOPICS_KEPT` topics seen.
    foreign_topics: Counter[str] = field(default_factory=Counter)
    #: Rules that remember (:mod:`worker.core.remember`), per rule: expectations started, fulfilled and
    #: expired; events that joined a group, and notifications; keys that did not render.
    expect_started: Counter[str] = field(default_factory=Counter)
    expect_fulfilled: Counter[str] = field(default_factory=Counter)
    expect_expired: Counter[str] = field(default_factory=Counter)
    group_joined: Counter[str] = field(default_factory=Counter)
    group_notified: Counter[str] = field(default_factory=Counter)
    key_failed: Counter[str] = field(default_factory=Counter)
    #: What is still pending, per (rule, ``expect`` or ``group``): filled when a partition's source ends.
    pending: Counter[tuple[str, str]] = field(default_factory=Counter)

    @property
    def fates(self) -> Counter[Fate]:
        out: Counter[Fate] = Counter()
        for (_, _, fate), n in self.counts.items():
            out[fate] += n
        return out

    @property
    def by_partition(self) -> dict[str, Counter[Fate]]:
        return self._grouped(0)

    @property
    def by_type(self) -> dict[str, Counter[Fate]]:
        return self._grouped(1)

    def _grouped(self, part: int) -> dict[str, Counter[Fate]]:
        out: dict[str, Counter[Fate]] = {}
        for key, n in self.counts.items():
            out.setdefault(key[part], Counter())[key[2]] += n
        return out

    def count(self, partition: str, event_type: str, fate: Fate) -> None:
        self.counts[partition, event_type, fate] += 1

    def count_skip(self, partition: str, event_type: str, reason: Skip) -> None:
        self.counts[partition, event_type, Fate.SKIPPED] += 1
        self.skipped[reason] += 1

    def count_foreign(self, partition: str, event_type: str, topic: str | None) -> None:
        self.count_skip(partition, event_type, Skip.FOREIGN_TOPIC)
        topics, name = self.foreign_topics, topic or ""
        if name in topics or len(topics) < FOREIGN_TOPICS_KEPT:
            topics[name] += 1

    def count_invalid(self, partition: str, reason: str) -> None:
        self.counts[partition, NO_TYPE, Fate.INVALID] += 1
        self.invalid[reason] += 1

    def count_action(self, rule: str, action_type: str, fate: ActionFate) -> None:
        self.actions[rule, action_type, fate] += 1

    def add(self, other: Tally) -> None:
        self.read += other.read
        self.counts.update(other.counts)
        self.skipped.update(other.skipped)
        self.invalid.update(other.invalid)
        self.rule_matches.update(other.rule_matches)
        self.rule_stale.update(other.rule_stale)
        self.actions.update(other.actions)
        self.late_processed += other.late_processed
        self.evictions.update(other.evictions)
        for name in _REMEMBERING:
            getattr(self, name).update(getattr(other, name))
        self.pending.update(other.pending)
        for topic, n in other.foreign_topics.items():
            if topic in self.foreign_topics or len(self.foreign_topics) < FOREIGN_TOPICS_KEPT:
                self.foreign_topics[topic] += n

    def check(self) -> list[str]:
        """What does not add up; empty when every event read has exactly one outcome."""
        problems = []
        fates, read = self.fates, self.read
        if sum(fates.values()) != read:
            problems.append(f"outcomes add up to {sum(fates.values())}, but {read} events were read")
        if self.fates[Fate.MATCHED] < max(self.rule_matches.values(), default=0):
            problems.append("a rule matched more events than were matched")
        if sum(self.skipped.values()) != fates[Fate.SKIPPED]:
            problems.append("skip reasons do not add up to the skipped events")
        if sum(self.invalid.values()) != fates[Fate.INVALID]:
            problems.append("invalid reasons do not add up to the invalid events")
        if any(n < 0 for n in self.counts.values()):
            problems.append("a count is negative")
        return problems

    def report(self) -> dict[str, object]:
        """The counts as JSON-ready data, keys sorted, every outcome present."""

        def outcomes(counts: Counter[Fate]) -> dict[str, int]:
            return {fate.value: counts[fate] for fate in Fate}

        actions: dict[str, dict[str, dict[str, int]]] = {}
        for (rule, action_type, fate), n in sorted(self.actions.items()):
            actions.setdefault(rule, {}).setdefault(action_type, {})[fate.value] = n
        remembering = [(label, getattr(self, name)) for name, label in zip(_REMEMBERING, _REMEMBERED, strict=True)]
        rules: dict[str, dict[str, object]] = {}
        for rule in sorted({*self.rule_matches, *self.rule_stale, *actions, *self.expect_started, *self.group_joined}):
            entry: dict[str, object] = {
                "matched": self.rule_matches[rule],
                "stale": self.rule_stale[rule],
                "actions": actions.get(rule, {}),
            }
            entry.update({label: counts[rule] for label, counts in remembering if counts[rule]})
            pending = {kind: n for (name, kind), n in sorted(self.pending.items()) if name == rule and n}
            if pending:
                entry["pending"] = pending
            rules[rule] = entry
        return {
            "events": self.read,
            "outcomes": outcomes(self.fates),
            "skipped": {reason.value: self.skipped[reason] for reason in Skip},
            "invalid": dict(sorted(self.invalid.items())),
            "late_processed": self.late_processed,
            "partitions": {p: outcomes(c) for p, c in sorted(self.by_partition.items(), key=_partition_order)},
            "event_types": {t: outcomes(c) for t, c in sorted(self.by_type.items())},
            "rules": rules,
            "evictions": dict(sorted(self.evictions.items())),
        }


def summary(report: dict[str, object]) -> list[str]:
    """Human lines for a :meth:`Tally.report`."""
    outcomes = _ints(report["outcomes"])
    lines = [f"Events read: {report['events']}"]
    details = {"skipped": _ints(report["skipped"]), "invalid": _ints(report["invalid"])}
    for name, n in outcomes.items():
        reasons = ", ".join(f"{k} {v}" for k, v in details.get(name, {}).items() if v)
        lines.append(f"  {name:<11} {n:>8}" + (f"  ({reasons})" if reasons else ""))
    if report["late_processed"]:
        lines.append(f"  late events processed: {report['late_processed']}")
    partitions = report["partitions"]
    assert isinstance(partitions, dict)  # noqa: S101 - built by Tally.report
    lines.append("Partitions: " + (", ".join(f"{p} {sum(c.values())}" for p, c in partitions.items()) or "none"))
    rules = report["rules"]
    assert isinstance(rules, dict)  # noqa: S101
    lines.append("Rules:" if rules else "Rules: none matched")
    width = max((len(name) for name in rules), default=0)
    for name, entry in rules.items():
        actions = "; ".join(
            f"{action_type} " + ", ".join(f"{fate} {n}" for fate, n in fates.items())
            for action_type, fates in entry["actions"].items()
        )
        stale = f"  stale {entry['stale']}" if entry["stale"] else ""
        memory = "".join(f"  {label} {entry[label]}" for label in _REMEMBERED if entry.get(label))
        pending = entry.get("pending")
        if pending:
            memory += "  pending " + ", ".join(f"{kind} {n}" for kind, n in pending.items())
        lines.append(
            f"  {name:<{width}}  matched {entry['matched']:>6}{stale}{memory}" + (f"  {actions}" if actions else "")
        )
    evictions = {k: v for k, v in _ints(report["evictions"]).items() if v}
    if evictions:
        lines.append("Memory caps reached: " + ", ".join(f"{k} {v}" for k, v in evictions.items()))
    return lines


def _ints(value: object) -> dict[str, int]:
    assert isinstance(value, dict)  # noqa: S101 - built by Tally.report
    return value


def _partition_order(item: tuple[str, object]) -> tuple[int, int | str]:
    """Numeric partition ids in numeric order, others after them."""
    name = item[0]
    return (0, int(name)) if name.isdigit() else (1, name)
