"""Rules test files, the format ``python -m worker test`` reads: loaded into cases and checked.

A test file names the rules it tests and holds cases. A case sends events to one partition (and
passes the time), then says what must have happened: which rules matched an event, the actions
planned with their parameters rendered, the expectations that expired, the group notifications,
and what is still pending. This module reads a file, and the event bodies it names, into plain
records, checking all it can without the rules: unknown fields, durations, times, events that do
not decode, expectations naming an event that no step sends. Every problem names its file and line;
an invalid file raises one :class:`~worker.errors.RulesTestError` listing them all. It reads files
and does nothing else.

Format (``docs/rules.md``, "Testing rules")::

    rules: [../examples.yaml]       # rules files or directories, relative to this file
    start: 2026-11-01T09:00:00Z     # optional: the clock's start
    defaults: {topic: ..., dataVersion: "2"}   # optional: fields that inline events leave out
    cases:
      - name: a failed run mails the on-call team
        exhaustive: true            # optional (the default): every action planned must be expected
        events:
          - file: events/run-failed.json    # a message body; or `event: {...}`; or `advance: 6h`
            after: 1s                       # optional (the default): time since the previous step; or `at: TIME`
        expect:
          - {event: ID, rule: NAME, matched: true, actions: [{type: email, subject: ...}]}
          - {expiry: {rule: NAME, key: K, event: ID}, actions: [...]}
          - {group: {rule: NAME, key: K, events: [ID, ...], count: N}, actions: [...]}
        pending: [{rule: NAME, kind: expect, key: K}]   # optional: exactly what is still pending
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple

import orjson
import yaml

from worker.core.decoding import decode
from worker.core.filters import _did_you_mean
from worker.core.memos import iso
from worker.errors import Problem, RulesTestError
from worker.events import InvalidEvent, Message, Position
from worker.moments import parse_duration, parse_time

FILE_KEYS: Final = ("rules", "start", "defaults", "cases")
CASE_KEYS: Final = ("name", "exhaustive", "events", "expect", "pending")
STEP_KEYS: Final = ("file", "event", "advance", "after", "at")
EVENT_CHECK_KEYS: Final = ("event", "rule", "matched", "actions")
EXPIRY_KEYS: Final = ("rule", "key", "event")
GROUP_KEYS: Final = ("rule", "key", "events", "count")
PENDING_KEYS: Final = ("rule", "kind", "key")
#: The clock's start when a file gives none.
DEFAULT_START: Final = datetime(2026, 1, 1, tzinfo=UTC)
#: The time between steps when a step gives none (seconds).
DEFAULT_GAP: Final = 1.0

_ZERO: Final = re.compile(r"0+(?:\.0*)?[smhdw]?")
_TIMESTAMP: Final = "tag:yaml.org,2002:timestamp"
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

#: Where a value sits in the file's data: keys and list indexes.
At = tuple[str | int, ...]
#: An expected action: its ``type`` and parameters, any subset of what is rendered.
Fields = Mapping[str, object]


class Step(NamedTuple):
    """One step of a case: a message sent to the partition, or the clock moved on."""

    where: str
    #: POSIX seconds: the message's enqueued time, or the time the clock is moved to.
    at: float
    #: The message body (every event in it with its time); None for a time advance.
    body: bytes | None = None
    #: The ids of the body's events, in order.
    ids: tuple[str, ...] = ()


class EventCheck(NamedTuple):
    """What one rule did with one event: matched it or not, and the actions it planned."""

    where: str
    event: str
    rule: str
    matched: bool = True
    #: The actions in order, each a subset of its rendered parameters (None: whatever was planned).
    actions: tuple[Fields, ...] | None = None


class MemoCheck(NamedTuple):
    """An expectation of a rule that expired, or a group notification of a rule, that must have fired."""

    where: str
    kind: Literal["expiry", "group"]
    rule: str
    key: str | None = None
    #: An expiry's starting event (one id); a notification's listed events, in order (None: any).
    events: tuple[str, ...] | None = None
    #: A notification's count (None: any).
    total: int | None = None
    actions: tuple[Fields, ...] | None = None


class PendingCheck(NamedTuple):
    """An expectation or group that is still pending at the end of the case."""

    where: str
    rule: str
    kind: Literal["expect", "group"]
    #: None: any key.
    key: str | None = None


Check = EventCheck | MemoCheck


class Case(NamedTuple):
    """One case: steps in order, then what must have happened."""

    name: str
    where: str
    steps: tuple[Step, ...]
    checks: tuple[Check, ...]
    #: Exactly what must still be pending at the end (None: not checked).
    pending: tuple[PendingCheck, ...] | None
    #: Every action planned must be named by a check.
    exhaustive: bool = True


class CaseFile(NamedTuple):
    """A test file: the rules sources it tests (relative to the working directory) and its cases."""

    path: str
    rules: tuple[Path, ...]
    cases: tuple[Case, ...]


def load_case_file(path: str | Path) -> CaseFile:
    """Read and check the test file at ``path`` (and the bodies it names): every problem or none."""
    reader = _Reader(Path(path))
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesTestError([Problem(str(path), None, None, None, f"cannot read the test file: {exc}")]) from None
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise RulesTestError([Problem(str(path), line, None, None, f"not valid YAML: {problem}")]) from None
    if node is None:
        raise RulesTestError([Problem(str(path), None, None, None, "the file is empty; expected 'rules' and 'cases'")])
    try:
        loaded = _File(reader).load(reader.data(node, ()))
    except RecursionError:
        reader.report((), "the YAML nests too deeply, or an alias refers to a node that contains it")
        loaded = None
    if reader.problems or loaded is None:
        raise RulesTestError(reader.problems)
    return loaded


class _Reader:
    """Plain data from a file's YAML nodes, with the line of each value, and the problems found."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = str(path)
        self.problems: list[Problem] = []
        self._lines: dict[At, int] = {}
        self._yaml: Any = _Loader("")

    def line(self, at: At) -> int | None:
        for end in range(len(at), -1, -1):
            found = self._lines.get(at[:end])
            if found:
                return found
        return None

    def where(self, at: At) -> str:
        line = self.line(at)
        return f"{self.file}:{line}" if line else self.file

    def report(self, at: At, message: str) -> None:
        self.problems.append(Problem(self.file, self.line(at), None, None, message))

    def data(self, node: yaml.Node, at: At) -> object:
        self._lines.setdefault(at, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[str, object] = {}
            for key_node, value_node in node.value:
                key = self._scalar(key_node)
                name = key if isinstance(key, str) else str(key)
                if name in out:
                    line = key_node.start_mark.line + 1
                    self.problems.append(Problem(self.file, line, None, None, f"duplicate key {name!r}"))
                    continue
                out[name] = self.data(value_node, (*at, name))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.data(item, (*at, i)) for i, item in enumerate(node.value)]
        return self._scalar(node)

    def _scalar(self, node: yaml.Node) -> object:
        if node.tag == _TIMESTAMP:  # a time stays the text it was written as (an event's eventTime)
            return str(node.value)
        try:
            return self._yaml.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError) as exc:
            problem = getattr(exc, "problem", None) or str(exc)
            line = node.start_mark.line + 1
            self.problems.append(Problem(self.file, line, None, None, f"cannot read the value: {problem}"))
            return node.value


class _File:
    """Reading one file's data into a :class:`CaseFile`."""

    def __init__(self, reader: _Reader) -> None:
        self.reader = reader
        self.base = reader.path.parent
        self.defaults: Mapping[str, object] = {}

    def known(self, raw: Mapping[str, object], at: At, keys: Sequence[str], what: str) -> bool:
        """Whether every field of ``raw`` is among ``keys`` (each unknown one reported)."""
        ok = True
        for key in raw:
            if key not in keys:
                self.reader.report((*at, key), f"unknown field {key!r} of {what}{_did_you_mean(key, keys)}")
                ok = False
        return ok

    def load(self, document: object) -> CaseFile | None:
        report = self.reader.report
        if not isinstance(document, dict):
            report((), "a test file is a mapping with 'rules' and 'cases'")
            return None
        self.known(document, (), FILE_KEYS, "a test file")
        rules = self.rules(document.get("rules"))
        start = DEFAULT_START.timestamp()
        if "start" in document:
            given = self.time(document["start"], ("start",))
            start = start if given is None else given
        defaults = document.get("defaults", {})
        if isinstance(defaults, dict):
            self.defaults = defaults
        else:
            report(("defaults",), "'defaults' is a mapping of the fields inline events leave out, such as {topic: ...}")
        raw_cases = document.get("cases")
        if not isinstance(raw_cases, list) or not raw_cases:
            report(("cases",), "'cases' must be a non-empty list of cases")
            return None
        cases: list[Case] = []
        names: dict[str, str] = {}
        for i, raw in enumerate(raw_cases):
            case = self.case(raw, ("cases", i), start)
            if case is None:
                continue
            if case.name in names:
                report(("cases", i, "name"), f"duplicate case name {case.name!r}; first at {names[case.name]}")
            names.setdefault(case.name, case.where)
            cases.append(case)
        return CaseFile(self.reader.file, rules, tuple(cases))

    def rules(self, raw: object) -> tuple[Path, ...]:
        items = [raw] if isinstance(raw, str) else raw
        if not isinstance(items, list) or not items or not all(isinstance(item, str) and item for item in items):
            self.reader.report(
                ("rules",), "'rules' names the rules files or directories to test, relative to this file"
            )
            return ()
        return tuple(Path(os.path.normpath(self.base / str(item))) for item in items)

    def time(self, raw: object, at: At) -> float | None:
        try:
            return parse_time(str(raw)).timestamp()
        except ValueError as exc:
            self.reader.report(at, f"'{at[-1]}': {exc}")
            return None

    def duration(self, raw: object, at: At, *, zero: bool = False) -> float | None:
        text = raw if isinstance(raw, str) else ""
        if zero and _ZERO.fullmatch(text.strip()):
            return 0.0
        try:
            return parse_duration(text).total_seconds()
        except ValueError:
            self.reader.report(at, f"'{at[-1]}' must be a duration such as 90s, 30m, 6h or 2d, got {raw!r}")
            return None

    # --- a case -------------------------------------------------------------------------------

    def case(self, raw: object, at: At, start: float) -> Case | None:
        report, where = self.reader.report, self.reader.where(at)
        if not isinstance(raw, dict):
            report(at, "each case is a mapping with 'name', 'events' and 'expect'")
            return None
        self.known(raw, at, CASE_KEYS, "a case")
        name = raw.get("name")
        if not isinstance(name, str) or not name.strip():
            report((*at, "name"), "every case needs a 'name' (a non-empty string)")
            name = ""
        exhaustive = raw.get("exhaustive", True)
        if not isinstance(exhaustive, bool):
            report((*at, "exhaustive"), f"'exhaustive' must be true or false, got {exhaustive!r}")
            exhaustive = True
        steps = self.steps(raw.get("events"), (*at, "events"), start)
        ids = {event_id for step in steps for event_id in step.ids}
        raw_checks = raw.get("expect", [])
        checks: list[Check] = []
        if not isinstance(raw_checks, list):
            report((*at, "expect"), "'expect' must be a list of expectations")
            raw_checks = []
        for i, item in enumerate(raw_checks):
            check = self.check(item, (*at, "expect", i), ids)
            if check is not None:
                checks.append(check)
        pending = None
        if "pending" in raw:
            pending = self.pending(raw["pending"], (*at, "pending"))
        return Case(name, where, steps, tuple(checks), pending, exhaustive)

    def steps(self, raw: object, at: At, start: float) -> tuple[Step, ...]:
        if not isinstance(raw, list) or not raw:
            self.reader.report(
                at, "'events' must be a non-empty list of steps: {file: ...}, {event: {...}} or {advance: 6h}"
            )
            return ()
        clock = start
        steps: list[Step] = []
        for i, item in enumerate(raw):
            step = self.step(item, (*at, i), clock)
            if step is not None:
                clock = step.at
                steps.append(step)
        return tuple(steps)

    def step(self, raw: object, at: At, clock: float) -> Step | None:
        report, where = self.reader.report, self.reader.where(at)
        if not isinstance(raw, dict):
            report(at, "each step is a mapping: {file: BODY_FILE}, {event: {...}} or {advance: 6h}")
            return None
        self.known(raw, at, STEP_KEYS, "a step")  # reported; the step is still read, for the ids it sends
        kinds = [kind for kind in ("file", "event", "advance") if kind in raw]
        if len(kinds) != 1:
            report(at, "a step has one of 'file', 'event' (a message) or 'advance' (the time passing)")
            return None
        if kinds == ["advance"]:
            if "after" in raw or "at" in raw:
                report(at, "'advance' moves the clock by itself: leave out 'after' and 'at'")
                return None
            gap = self.duration(raw["advance"], (*at, "advance"))
            return None if gap is None else Step(where, clock + gap)
        moment = self.moment(raw, at, clock)
        if moment is None:
            return None
        if "file" in raw:
            body = self.body_file(raw["file"], (*at, "file"), moment)
        else:
            body = self.inline(raw["event"], (*at, "event"), moment)
        if body is None:
            return None
        ids: list[str] = []
        for item in decode(Message(body, Position("0"))):
            if isinstance(item, InvalidEvent):
                report(at, f"not an event the worker reads ({item.error.reason}): {item.error}")
                return None
            ids.append(item.id)
        return Step(where, moment, body, tuple(ids))

    def moment(self, raw: Mapping[str, object], at: At, clock: float) -> float | None:
        """A message step's time: ``at``, or ``after`` the previous step (default 1s)."""
        if "at" in raw and "after" in raw:
            self.reader.report(at, "a step has 'at' (a time) or 'after' (a duration), not both")
            return None
        if "at" in raw:
            moment = self.time(raw["at"], (*at, "at"))
            if moment is not None and moment < clock:
                self.reader.report((*at, "at"), f"'at' goes back in time: the previous step is at {iso(clock)}")
                return None
            return moment
        if "after" in raw:
            gap = self.duration(raw["after"], (*at, "after"), zero=True)
            return None if gap is None else clock + gap
        return clock + DEFAULT_GAP

    def inline(self, raw: object, at: At, moment: float) -> bytes | None:
        if not isinstance(raw, dict):
            self.reader.report(at, "'event' is one event: a mapping in the Event Grid or CloudEvents schema")
            return None
        event = _with_time({**self.defaults, **raw}, moment)
        try:
            # Event Grid delivers its schema in a one-element array, CloudEvents as one object.
            return orjson.dumps(event if "specversion" in event else [event])
        except TypeError as exc:
            self.reader.report(at, f"the event is not JSON: {exc}")
            return None

    def body_file(self, raw: object, at: At, moment: float) -> bytes | None:
        if not isinstance(raw, str) or not raw:
            self.reader.report(at, "'file' names a message body file (JSON), relative to the test file")
            return None
        path = Path(os.path.normpath(self.base / raw))
        try:
            document = orjson.loads(path.read_bytes())
        except OSError as exc:
            self.reader.report(at, f"cannot read the body file: {exc}")
            return None
        except orjson.JSONDecodeError as exc:
            self.reader.report(at, f"the body file {path} is not JSON: {exc}")
            return None
        if isinstance(document, dict):
            document = _with_time(document, moment)
        elif isinstance(document, list):
            document = [_with_time(item, moment) if isinstance(item, dict) else item for item in document]
        return orjson.dumps(document)

    # --- expectations -------------------------------------------------------------------------

    def check(self, raw: object, at: At, ids: set[str]) -> Check | None:
        report = self.reader.report
        shapes = "{event: ID, rule: NAME, ...}, {expiry: {rule: NAME, ...}} or {group: {rule: NAME, ...}}"
        if not isinstance(raw, dict):
            report(at, f"each expectation is a mapping: {shapes}")
            return None
        kinds = [kind for kind in ("event", "expiry", "group") if kind in raw]
        if len(kinds) != 1:
            report(at, f"an expectation names one of 'event', 'expiry' or 'group': {shapes}")
            return None
        kind = kinds[0]
        where = self.reader.where(at)
        if kind == "event":
            if not self.known(raw, at, EVENT_CHECK_KEYS, "an event's expectation"):
                return None
            event = self.event_id(raw["event"], (*at, "event"), ids)
            rule = self.name(raw.get("rule"), (*at, "rule"))
            matched = raw.get("matched", True)
            if not isinstance(matched, bool):
                report((*at, "matched"), f"'matched' must be true or false, got {matched!r}")
                return None
            actions = self.actions(raw, at)
            if not matched and actions:
                report((*at, "actions"), "a rule that does not match an event plans no actions: leave out 'actions'")
                return None
            if event is None or rule is None or (actions is None and "actions" in raw):
                return None
            return EventCheck(where, event, rule, matched, actions)
        if not self.known(raw, at, (kind, "actions"), f"an {kind}'s expectation"):
            return None
        memo = raw[kind]
        inner = (*at, kind)
        keys = EXPIRY_KEYS if kind == "expiry" else GROUP_KEYS
        if not isinstance(memo, dict):
            report(inner, f"'{kind}' is a mapping of {', '.join(keys)} (rule required)")
            return None
        if not self.known(memo, inner, keys, f"'{kind}'"):
            return None
        rule = self.name(memo.get("rule"), (*inner, "rule"))
        key = memo.get("key")
        if key is not None and not isinstance(key, str):
            report((*inner, "key"), f"'key' is the key as rendered, a string; got {key!r}")
            return None
        events: tuple[str, ...] | None = None
        if kind == "expiry" and "event" in memo:
            started = self.event_id(memo["event"], (*inner, "event"), ids)
            if started is None:
                return None
            events = (started,)
        if kind == "group" and "events" in memo:
            listed = memo["events"]
            if not isinstance(listed, list) or not listed:
                report((*inner, "events"), "'events' lists the ids of the notification's events, in order")
                return None
            found = [self.event_id(item, (*inner, "events", i), ids) for i, item in enumerate(listed)]
            if any(item is None for item in found):
                return None
            events = tuple(item for item in found if item is not None)
        count = memo.get("count")
        if count is not None and (type(count) is not int or count < 1):
            report((*inner, "count"), f"'count' is a number of events (1 or more), got {count!r}")
            return None
        actions = self.actions(raw, at)
        if rule is None or (actions is None and "actions" in raw):
            return None
        return MemoCheck(where, "expiry" if kind == "expiry" else "group", rule, key, events, count, actions)

    def event_id(self, raw: object, at: At, ids: set[str]) -> str | None:
        if not isinstance(raw, str) or not raw:
            self.reader.report(at, f"an event is named by its id (a string), got {raw!r}")
            return None
        if raw not in ids:
            close = _did_you_mean(raw, sorted(ids))
            self.reader.report(at, f"no step of the case sends an event with the id {raw!r}{close}")
            return None
        return raw

    def name(self, raw: object, at: At) -> str | None:
        if not isinstance(raw, str) or not raw:
            self.reader.report(at, f"'rule' names a rule of the rules tested, got {raw!r}")
            return None
        return raw

    def actions(self, raw: Mapping[str, object], at: At) -> tuple[Fields, ...] | None:
        if "actions" not in raw:
            return None
        listed = raw["actions"]
        where = (*at, "actions")
        if not isinstance(listed, list) or not all(isinstance(item, dict) for item in listed):
            self.reader.report(
                where, "'actions' lists the actions planned, in order, such as [{type: email, subject: ...}]"
            )
            return None
        ok = True
        for i, item in enumerate(listed):
            if "type" in item and not isinstance(item["type"], str):
                self.reader.report(
                    (*where, i, "type"), f"an action's 'type' is a name such as email, got {item['type']!r}"
                )
                ok = False
        return tuple(listed) if ok else None

    def pending(self, raw: object, at: At) -> tuple[PendingCheck, ...] | None:
        report = self.reader.report
        if not isinstance(raw, list):
            report(at, "'pending' lists what is still pending at the end: [{rule: NAME, kind: expect, key: K}]")
            return None
        out: list[PendingCheck] = []
        for i, item in enumerate(raw):
            here = (*at, i)
            if not isinstance(item, dict):
                report(here, "each pending entry is a mapping: {rule: NAME, kind: expect or group, key: K}")
                continue
            if not self.known(item, here, PENDING_KEYS, "a pending entry"):
                continue
            rule = self.name(item.get("rule"), (*here, "rule"))
            kind = item.get("kind")
            key = item.get("key")
            if kind not in ("expect", "group"):
                report((*here, "kind"), f"'kind' is expect (an expectation) or group, got {kind!r}")
                continue
            if key is not None and not isinstance(key, str):
                report((*here, "key"), f"'key' is the key as rendered, a string; got {key!r}")
                continue
            if rule is not None:
                out.append(PendingCheck(self.reader.where(here), rule, "expect" if kind == "expect" else "group", key))
        return tuple(out)


def _with_time(event: Mapping[str, object], moment: float) -> dict[str, object]:
    """The event with its time (``eventTime``, or CloudEvents' ``time``) set to ``moment`` if it has none."""
    name = "time" if "specversion" in event else "eventTime"
    out = dict(event)
    if out.get(name) is None:
        out[name] = iso(moment)
    return out
