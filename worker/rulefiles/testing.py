"""Rules tests, run: each case's steps through a partition's core, and what happened held against the case.

``python -m worker test`` is to a rules table what ``promtool test rules`` is to alerting rules. A
case (:mod:`worker.rulefiles.testfiles`) runs on a fresh :class:`~worker.core.partition.PartitionCore` of its
own, partition ``0``, with no reorder window and the watermark clock: each step's message is
received and released at once, so events are evaluated in the order given, and the time passes only
as the steps say (an event's enqueued time, or an ``advance``). Every work item released is recorded,
its actions' parameters rendered as a dry run shows them (:func:`~worker.actions.preview.render_params`),
and finished at once. Nothing is executed and no secret is needed: the rules load with placeholders.

Then the case's expectations are held against what happened: whether a rule matched an event (and,
when not, the condition that failed, from :func:`~worker.core.rules.explain`), the actions planned (each
expected action a subset of the rendered one), the expiries and group notifications that fired, and
what is still pending. By default a case is exhaustive: an action planned that no expectation names
fails it. A failure carries a diff of the expected against the planned actions, in YAML. Pure but
for reading the test file, its bodies and the rules.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple

import yaml

from worker.actions.preview import render_params
from worker.actions.secrets import Placeholders
from worker.core.decoding import decode
from worker.core.filters import _did_you_mean
from worker.core.memos import Expiry, Notification
from worker.core.partition import PartitionCore, Work
from worker.core.rules import RulesTable, explain
from worker.errors import Problem, RulesError, RulesTestError
from worker.events import Event, Message, Position
from worker.rulefiles.directories import paths_of
from worker.rulefiles.loading import load_rules
from worker.rulefiles.testfiles import Case, CaseFile, EventCheck, Fields, MemoCheck, load_case_file
from worker.settings import CoreSettings

#: A case's partition: no reorder window (each event is evaluated as it is sent), the replay's clock.
SETTINGS = CoreSettings(window=0.0, clock="watermark")


class Planned(NamedTuple):
    """The actions one rule planned at once: on an event, on an expiry, or on a group notification."""

    kind: Literal["event", "expiry", "group"]
    rule: str
    #: The event acted on: the event itself, an expiry's starting event, a notification's first event.
    event: str
    #: An expiry's or a notification's key.
    key: str | None
    #: The events acted on, in order: a notification's listed events, else the one event.
    events: tuple[str, ...]
    #: A notification's count (listed or not), else 1.
    total: int
    #: Each action's ``type`` and rendered parameters, in order.
    actions: tuple[dict[str, object], ...]


class Run(NamedTuple):
    """What a case's steps did."""

    planned: tuple[Planned, ...]
    #: The events sent, by id (the first of an id sent twice).
    events: Mapping[str, Event]
    #: Why the partition acted on an event's rules less than they matched it (skipped, stale), by id.
    notes: Mapping[str, str]
    #: (rule, ``expect`` or ``group``, key) of what is still pending at the end, sorted.
    pending: tuple[tuple[str, str, str], ...]


class Failure(NamedTuple):
    """One expectation of a case that did not hold, or one thing that happened that none named."""

    where: str
    message: str
    #: Lines shown under the message: a diff of the actions, or what happened instead.
    detail: tuple[str, ...] = ()


class CaseResult(NamedTuple):
    case: Case
    failures: tuple[Failure, ...]

    @property
    def ok(self) -> bool:
        return not self.failures

    def lines(self) -> list[str]:
        """One line, ``ok`` or ``FAIL`` with the case's place and name; then each failure, indented."""
        out = [f"{'ok' if self.ok else 'FAIL':<4}  {self.case.where}: {self.case.name}"]
        for failure in self.failures:
            out.append(f"      {failure.where}: {failure.message}")
            out.extend(f"          {line}".rstrip() for line in failure.detail)
        return out


class FileResult(NamedTuple):
    """A test file's cases, run; or why it could not run (the file or its rules are invalid)."""

    path: str
    results: tuple[CaseResult, ...] = ()
    problems: tuple[Problem, ...] = ()


def run_file(path: str | Path) -> FileResult:
    """Load the test file at ``path`` and its rules, and run every case."""
    try:
        cases, table = prepare(path)
    except (RulesTestError, RulesError) as exc:
        return FileResult(str(path), problems=exc.problems)
    return FileResult(str(path), tuple(run_case(case, table) for case in cases.cases))


def prepare(path: str | Path) -> tuple[CaseFile, RulesTable]:
    """The test file and the table it tests (loaded with placeholders for secrets), the rules each
    expectation names checked against the table."""
    cases = load_case_file(path)
    table = load_rules(paths_of(cases.rules), env=Placeholders())
    problems = check_names(cases, table)
    if problems:
        raise RulesTestError(problems)
    return cases, table


def check_names(cases: CaseFile, table: RulesTable) -> list[Problem]:
    """Expectations naming a rule the table lacks, or one that cannot do what they expect of it."""
    names = [rule.name for rule in table.rules]
    problems: list[Problem] = []

    def problem(where: str, message: str) -> None:
        problems.append(Problem(where, None, None, None, message))  # where: file:line

    for case in cases.cases:
        named: list[tuple[str, str, str | None]] = [
            (c.where, c.rule, c.kind if isinstance(c, MemoCheck) else None) for c in case.checks
        ]
        named += [(entry.where, entry.rule, entry.kind) for entry in case.pending or ()]
        for where, name, kind in named:
            rule = table.rule(name)
            if rule is None:
                problem(where, f"case {case.name!r}: no rule {name!r} in the rules tested{_did_you_mean(name, names)}")
            elif kind in ("expiry", "expect") and rule.expect is None:
                problem(
                    where, f"case {case.name!r}: rule {name!r} has no 'expect': nothing of it expires or is pending"
                )
            elif kind == "group" and rule.group is None:
                problem(where, f"case {case.name!r}: rule {name!r} has no 'group': it notifies no group")
    return problems


def run_case(case: Case, table: RulesTable) -> CaseResult:
    """Run one case on a fresh partition and hold its expectations against what happened."""
    run = play(case, table)
    return CaseResult(case, compare(case, run, table))


def play(case: Case, table: RulesTable) -> Run:
    """Send the case's steps to a fresh partition core, finishing every work item as it is released."""
    core = PartitionCore("0", table, SETTINGS)
    tally = core.tally
    planned: list[Planned] = []
    events: dict[str, Event] = {}
    notes: dict[str, str] = {}
    for index, step in enumerate(case.steps):
        if step.body is None:
            released = core.advance(step.at)
        else:
            position = Position("0", str(index), index, datetime.fromtimestamp(step.at, UTC))
            message = Message(step.body, position)
            for item in decode(message):
                if isinstance(item, Event):
                    events.setdefault(item.id, item)
            skipped, stale = Counter(tally.skipped), Counter(tally.rule_stale)
            released = core.receive(message) + core.release_all()
            why = [f"skipped as {reason}" for reason in sorted(tally.skipped - skipped)]
            why += [f"too old for rule {name}'s max_age" for name in sorted(tally.rule_stale - stale)]
            if why:
                note = ", ".join(why) if len(step.ids) == 1 else f"of its message's events: {', '.join(why)}"
                for event_id in step.ids:
                    notes.setdefault(event_id, note)
        for work in released:
            planned += _planned(work)
            core.finish(work)
    pending = sorted(
        (entry.rule, entry.kind, entry.key)
        for entry in core.state().pending
        if entry.kind == "expect" or (entry.kind == "group" and entry.total)
    )
    return Run(tuple(planned), events, notes, tuple(pending))


def _planned(work: Work) -> list[Planned]:
    """The work's actions, rule by rule, with their parameters rendered."""
    memo = work.memo
    out: list[Planned] = []
    by_rule: dict[str, list[dict[str, object]]] = {}
    for action in work.actions:
        by_rule.setdefault(action.rule, []).append({"type": action.spec.type, **render_params(action)})
    for rule, actions in by_rule.items():
        if isinstance(memo, Notification):
            ids = tuple(event.id for event in memo.events)
            out.append(Planned("group", rule, ids[0], memo.key, ids, memo.total, tuple(actions)))
        elif isinstance(memo, Expiry):
            started = memo.event.id
            out.append(Planned("expiry", rule, started, memo.key, (started,), 1, tuple(actions)))
        else:
            out.append(Planned("event", rule, work.event.id, None, (work.event.id,), 1, tuple(actions)))
    return out


# --- comparing ------------------------------------------------------------------------------------


def compare(case: Case, run: Run, table: RulesTable) -> tuple[Failure, ...]:
    """The case's expectations that do not hold, and (exhaustive) the actions planned that none names."""
    failures: list[Failure] = []
    claimed: set[int] = set()
    for check in case.checks:
        if isinstance(check, EventCheck):
            failures += _event_check(check, run, table, claimed)
        else:
            failures += _memo_check(check, run, claimed)
    if case.exhaustive:
        for i, planned in enumerate(run.planned):
            if i not in claimed:
                failures.append(
                    Failure(case.where, f"unexpected actions: {_what(planned)}", _dump(list(planned.actions)))
                )
    if case.pending is not None:
        left = list(run.pending)
        for entry in case.pending:
            found = next(
                (p for p in left if p[:2] == (entry.rule, entry.kind) and entry.key in (None, p[2])),
                None,
            )
            if found is None:
                key = "" if entry.key is None else f", key {entry.key!r}"
                failures.append(Failure(entry.where, f"not pending: {entry.kind} of rule {entry.rule}{key}"))
            else:
                left.remove(found)
        for rule, kind, key in left:
            failures.append(Failure(case.where, f"pending, and not expected to be: {kind} of rule {rule}, key {key!r}"))
    return tuple(failures)


def _event_check(check: EventCheck, run: Run, table: RulesTable, claimed: set[int]) -> list[Failure]:
    event = run.events[check.event]
    label = f"event {check.event}, rule {check.rule}"
    matched = any(rule.name == check.rule for rule in table.evaluate(event).rules)
    index = next(
        (i for i, p in enumerate(run.planned) if p.kind == "event" and p.event == check.event and p.rule == check.rule),
        None,
    )
    if index is not None:
        claimed.add(index)
    if matched != check.matched:
        if matched:
            return [Failure(check.where, f"{label}: expected not to match, but it matches")]
        reason = next((e.reason for e in explain(table, event) if e.rule == check.rule), "")
        return [Failure(check.where, f"{label}: expected to match, but it does not: {reason}")]
    if check.actions is None:
        return []
    got = run.planned[index].actions if index is not None else ()
    if _fits(check.actions, got):
        return []
    message = f"{label}: the actions planned differ"
    if not got:
        note = run.notes.get(check.event)
        message = f"{label}: no actions were planned" + (f" ({note})" if note else "")
    return [Failure(check.where, message, _diff(check.actions, got))]


def _memo_check(check: MemoCheck, run: Run, claimed: set[int]) -> list[Failure]:
    what = "expiry" if check.kind == "expiry" else "group notification"
    label = f"{what} of rule {check.rule}" + ("" if check.key is None else f", key {check.key!r}")
    found = next(
        (
            i
            for i, p in enumerate(run.planned)
            if i not in claimed
            and p.kind == check.kind
            and p.rule == check.rule
            and check.key in (None, p.key)
            and check.events in (None, p.events)
            and check.total in (None, p.total)
        ),
        None,
    )
    if found is None:
        instead = [
            f"fired: {_what(p)}"
            for i, p in enumerate(run.planned)
            if i not in claimed and p.kind == check.kind and p.rule == check.rule
        ]
        instead += [
            f"pending: {kind} of rule {rule}, key {key!r}" for rule, kind, key in run.pending if rule == check.rule
        ]
        if check.events is not None:
            label += f", events {', '.join(check.events)}"
        if check.total is not None:
            label += f", count {check.total}"
        return [
            Failure(
                check.where, f"{label}: did not fire", tuple(instead) or ("nothing of the rule fired or is pending",)
            )
        ]
    claimed.add(found)
    got = run.planned[found].actions
    if check.actions is None or _fits(check.actions, got):
        return []
    return [Failure(check.where, f"{label}: the actions planned differ", _diff(check.actions, got))]


def _what(planned: Planned) -> str:
    count = len(planned.actions)
    actions = f"{count} action{'s' * (count != 1)} ({', '.join(str(a['type']) for a in planned.actions)})"
    if planned.kind == "event":
        return f"event {planned.event}, rule {planned.rule}: {actions}"
    if planned.kind == "expiry":
        return f"expiry of rule {planned.rule}, key {planned.key!r} (started by event {planned.event}): {actions}"
    return (
        f"group notification of rule {planned.rule}, key {planned.key!r} (events {', '.join(planned.events)}; "
        f"count {planned.total}): {actions}"
    )


def _fits(expected: Sequence[Fields], got: Sequence[Mapping[str, object]]) -> bool:
    return len(expected) == len(got) and all(_holds(e, g) for e, g in zip(expected, got, strict=True))


def _holds(expected: object, got: object) -> bool:
    """Whether ``got`` has what ``expected`` says: every member of a mapping (and maybe more), every
    item of a list, equal values (a number equal to a number, a boolean only to a boolean)."""
    if isinstance(expected, Mapping):
        return isinstance(got, Mapping) and all(k in got and _holds(v, got[k]) for k, v in expected.items())
    if isinstance(expected, list):
        return (
            isinstance(got, list)
            and len(got) == len(expected)
            and all(_holds(e, g) for e, g in zip(expected, got, strict=True))
        )
    if isinstance(expected, bool) or isinstance(got, bool):
        return expected is got
    if isinstance(expected, int | float) and isinstance(got, int | float):
        return expected == got
    return type(expected) is type(got) and expected == got


def _project(expected: object, got: object) -> object:
    """``got`` cut down to what ``expected`` names, in its order: what a diff should show."""
    if isinstance(expected, Mapping) and isinstance(got, Mapping):
        return {k: _project(v, got[k]) for k, v in expected.items() if k in got}
    if isinstance(expected, list) and isinstance(got, list) and len(expected) == len(got):
        return [_project(e, g) for e, g in zip(expected, got, strict=True)]
    return got


def _diff(expected: Sequence[Fields], got: Sequence[Mapping[str, object]]) -> tuple[str, ...]:
    """A unified diff of the expected actions and the planned ones (cut down to what is expected)."""
    shown = [_project(e, g) for e, g in zip(expected, got, strict=False)] + list(got[len(expected) :])
    before, after = _dump(list(expected)), _dump(shown)
    return tuple(
        difflib.unified_diff(before, after, "expected", "planned", n=max(len(before), len(after)), lineterm="")
    )


class _Dumper(yaml.SafeDumper):
    """YAML as people write it: texts of several lines as blocks, a value repeated in full (no alias)."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def _text(dumper: yaml.SafeDumper, value: str) -> Any:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _text)


def _dump(value: object) -> tuple[str, ...]:
    text = yaml.dump(value, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1000)
    lines = text.splitlines()
    return tuple(lines[:-1] if lines and lines[-1] == "..." else lines)  # no end-of-document marker
