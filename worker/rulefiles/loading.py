"""Loading rules tables from YAML files: parse with line numbers, validate everything, compile.

A table is never half-valid: every problem in every file is collected, each naming its file, line
and rule, and :func:`load_rules` raises one :class:`~worker.errors.RulesError` listing them all.
:func:`load_rules_of` loads what files and directories hold (:mod:`worker.rulefiles.directories` lists them) as
of one moment, reading again when they change under it.

File format::

    workspaces:            # optional allow-list of topics (workspace resource ids)
      - /subscriptions/.../workspaces/prod
    rules:
      - name: mail-on-failed-run
        description: ...   # optional
        enabled: true      # optional, default true
        max_age: 2h        # optional: no action on an older event (counted as stale)
        filter: {...}      # an Event Grid filter object, plus all / any / not
        expect:            # optional: act when no matching event with the same key follows in time
          within: 6h
          key: "{{ subject }}"   # optional, the default
          filter: {...}
        group:             # optional (not with expect): act once per group of matched events
          by: "{{ data.experimentName }}"
          wait: 2m
          interval: 30m
        actions:
          - type: log
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import ValidationError

from worker.actions import ActionSpec, action_types
from worker.actions.templates import Template
from worker.core.filters import Path as KeyPath
from worker.core.filters import _did_you_mean, compile_filter
from worker.core.rules import Expect, Group, Rule, RulesTable
from worker.errors import Problem, RulesError
from worker.moments import parse_duration
from worker.rulefiles.directories import fingerprint, paths_of

TABLE_KEYS: Final = ("workspaces", "rules")
RULE_KEYS: Final = ("name", "description", "enabled", "max_age", "filter", "expect", "group", "actions")
EXPECT_KEYS: Final = ("within", "key", "filter")
GROUP_KEYS: Final = ("by", "wait", "interval")

#: The event types an Azure ML workspace publishes.
ML_EVENT_TYPES: Final = frozenset(
    f"Microsoft.MachineLearningServices.{name}"
    for name in ("RunCompleted", "RunStatusChanged", "ModelRegistered", "ModelDeployed", "DatasetDriftDetected")
)
_ML_PREFIX: Final = "microsoft.machinelearningservices."
_ML_FOLDED: Final = frozenset(name.casefold() for name in ML_EVENT_TYPES)
_MERGE_TAG: Final = "tag:yaml.org,2002:merge"
#: How many times :func:`load_rules_of` reads rules that change while it reads them.
LOAD_ATTEMPTS: Final = 5

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_rules(paths: Sequence[str | Path], *, env: Mapping[str, str] | None = None) -> RulesTable:
    """Load, validate and compile the rules in ``paths`` into one table.

    Secrets (``${env:NAME}``) are resolved from ``env`` (default: the process environment).
    """
    problems: list[Problem] = []
    rules: list[Rule] = []
    topics: list[str] = []
    warnings: list[str] = []
    seen: dict[str, str] = {}
    if not paths:
        raise RulesError([Problem("(no file)", None, None, None, "no rules file given")])
    for path in paths:
        state = _FileState(path, problems, rules, topics, warnings, seen)
        state.env = os.environ if env is None else env
        try:
            _load_file(Path(path), state)
        except RecursionError:
            message = "the YAML nests too deeply, or an alias refers to a node that contains it"
            problems.append(Problem(state.file, None, None, None, message))
    if problems:
        raise RulesError(problems)
    return RulesTable.build(rules, topics, warnings)


def load_rules_of(sources: Sequence[str | Path], *, env: Mapping[str, str] | None = None) -> RulesTable:
    """Load the table that the files and directories ``sources`` hold (see
    :func:`~worker.rulefiles.directories.paths_of`), as of one moment: when what they hold changed while they
    were read (a ConfigMap update swapping its files, a key removed between listing and reading), or
    a ConfigMap volume is midway through an update, read them again, so that a table is neither a mix
    of two versions nor rejected for a file that an update removed. After :data:`LOAD_ATTEMPTS`
    reads that each saw a change, the last one stands."""
    before = fingerprint(sources)
    for _ in range(LOAD_ATTEMPTS - 1):
        try:
            table = load_rules(paths_of(sources), env=env)
        except RulesError:
            after = fingerprint(sources)
            if after == before and after.settled:
                raise
        else:
            after = fingerprint(sources)
            if after == before and after.settled:
                return table
        before = after
    return load_rules(paths_of(sources), env=env)


class _FileState:
    """What loading one file accumulates; positions map data paths to (line, column)."""

    def __init__(
        self,
        path: str | Path,
        problems: list[Problem],
        rules: list[Rule],
        topics: list[str],
        warnings: list[str],
        seen: dict[str, str],
    ) -> None:
        self.file = str(path)
        self.problems = problems
        self.rules = rules
        self.topics = topics
        self.warnings = warnings
        self.seen = seen
        self.positions: dict[KeyPath, tuple[int, int]] = {}
        self.rule: str | None = None
        self.yaml: Any = _Loader("")
        self.env: Mapping[str, str] = {}

    def report(self, at: KeyPath, message: str) -> None:
        line = column = None
        for end in range(len(at), -1, -1):
            found = self.positions.get(at[:end])
            if found:
                line, column = found
                break
        self.problems.append(Problem(self.file, line, column, self.rule, message))

    def report_node(self, node: yaml.Node, message: str) -> None:
        """A problem located at a YAML node (a key, say) rather than at a data path."""
        mark = node.start_mark
        self.problems.append(Problem(self.file, mark.line + 1, mark.column + 1, self.rule, message))

    def where(self, at: KeyPath) -> str:
        line = self.positions.get(at, (None, None))[0]
        return f"{self.file}:{line}" if line else self.file


def _load_file(path: Path, state: _FileState) -> None:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        state.report((), f"cannot read the rules file: {exc}")
        return
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        line = mark.line + 1 if mark is not None else None
        column = mark.column + 1 if mark is not None else None
        state.problems.append(Problem(state.file, line, column, None, f"not valid YAML: {problem}"))
        return
    if node is None:
        state.report((), "the file is empty; expected a mapping with 'rules'")
        return
    document = _to_data(node, (), state)
    if not isinstance(document, dict):
        state.report((), "the file must be a mapping with 'rules' (and optionally 'workspaces')")
        return
    for key in document:
        if key not in TABLE_KEYS:
            state.report((key,), f"unknown top-level field {key!r}{_did_you_mean(str(key), TABLE_KEYS)}")
    _workspaces(document.get("workspaces"), state)
    rules = document.get("rules")
    if not isinstance(rules, list) or not rules:
        state.report(("rules",), "'rules' must be a non-empty list of rules")
        return
    for i, raw in enumerate(rules):
        state.rule = None
        _rule(raw, ("rules", i), state)
    state.rule = None


def _workspaces(raw: object, state: _FileState) -> None:
    if raw is None:
        return
    if not isinstance(raw, list) or not all(isinstance(t, str) and t for t in raw):
        state.report(("workspaces",), "'workspaces' must be a list of topics (workspace resource ids)")
        return
    state.topics.extend(raw)


def _rule(raw: object, at: KeyPath, state: _FileState) -> None:
    if not isinstance(raw, dict):
        state.report(at, "each rule must be a mapping with 'name', 'filter' and 'actions'")
        return
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        state.report((*at, "name"), "every rule needs a 'name' (a non-empty string)")
        name = None
    else:
        state.rule = name
        if name in state.seen:
            state.report((*at, "name"), f"duplicate rule name; first defined at {state.seen[name]}")
        else:
            state.seen[name] = state.where(at)
    for key in raw:
        if key not in RULE_KEYS:
            state.report((*at, key), f"unknown rule field {key!r}{_did_you_mean(str(key), RULE_KEYS)}")
    enabled = raw.get("enabled", True)
    if type(enabled) is not bool:
        state.report((*at, "enabled"), f"'enabled' must be true or false, got {enabled!r}")
    description = raw.get("description") or ""
    if not isinstance(description, str):
        state.report((*at, "description"), "'description' must be a string")
        description = ""
    max_age = _duration(raw.get("max_age"), (*at, "max_age"), state)
    compiled = compile_filter(raw.get("filter"), (*at, "filter"), state.report)
    if compiled is not None and isinstance(raw.get("filter"), dict):
        _warn_unknown_types(raw["filter"], name, (*at, "filter"), state)
    expect = group = None
    ok = True
    if "expect" in raw:
        expect = _expect(raw["expect"], (*at, "expect"), state)
        ok = expect is not None
    if "group" in raw:
        group = _group(raw["group"], (*at, "group"), state)
        ok = ok and group is not None
        if "expect" in raw:
            state.report((*at, "group"), "a rule has 'expect' or 'group', not both: make two rules")
            ok = False
    actions = _actions(raw.get("actions"), (*at, "actions"), state)
    if name and compiled is not None and actions is not None and ok and enabled is True:
        state.rules.append(Rule(name, compiled, actions, description, state.where(at), max_age, expect, group))


def _duration(raw: object, at: KeyPath, state: _FileState, *, required: bool = False) -> float | None:
    """Seconds from a duration (``2h``); None when absent or wrong (reported)."""
    field = str(at[-1])
    if raw is None:
        if required:
            state.report(at, f"'{field}' is required: a duration such as 90s, 30m, 6h or 2d")
        return None
    if not isinstance(raw, str):
        state.report(at, f"'{field}' must be a duration such as 90s, 30m, 6h or 2d, got {raw!r}")
        return None
    try:
        return parse_duration(raw).total_seconds()
    except ValueError as exc:
        state.report(at, f"'{field}': {exc}")
        return None


def _template(raw: object, at: KeyPath, state: _FileState) -> Template | None:
    field = str(at[-1])
    if not isinstance(raw, str) or not raw.strip():
        state.report(at, f"'{field}' must be a template (a string such as \"{{{{ subject }}}}\"), got {raw!r}")
        return None
    try:
        return Template.compile(raw)
    except ValueError as exc:
        state.report(at, f"'{field}': {exc}")
        return None


def _fields(raw: object, at: KeyPath, state: _FileState, keys: tuple[str, ...], example: str) -> bool | None:
    """None if ``raw`` is not a mapping; else whether all its fields are among ``keys`` (each
    unknown one reported)."""
    name = str(at[-1])
    if not isinstance(raw, dict):
        state.report(at, f"'{name}' must be a mapping, such as {example}")
        return None
    known = True
    for key in raw:
        if key not in keys:
            state.report((*at, key), f"unknown field {key!r} of '{name}'{_did_you_mean(str(key), keys)}")
            known = False
    return known


def _expect(raw: object, at: KeyPath, state: _FileState) -> Expect | None:
    known = _fields(raw, at, state, EXPECT_KEYS, "{within: 6h, filter: {...}}")
    if known is None:
        return None
    assert isinstance(raw, dict)  # noqa: S101 - checked by _fields
    within = _duration(raw.get("within"), (*at, "within"), state, required=True)
    key = _template(raw["key"], (*at, "key"), state) if "key" in raw else None
    if "filter" not in raw:
        state.report((*at, "filter"), "'expect' needs a 'filter': the event expected to follow")
        return None
    compiled = compile_filter(raw["filter"], (*at, "filter"), state.report)
    if not known or within is None or compiled is None or ("key" in raw and key is None):
        return None
    return Expect(within, str(raw["within"]).strip(), compiled, key)


def _group(raw: object, at: KeyPath, state: _FileState) -> Group | None:
    example = '{by: "{{ data.experimentName }}", wait: 2m, interval: 30m}'
    known = _fields(raw, at, state, GROUP_KEYS, example)
    if known is None:
        return None
    assert isinstance(raw, dict)  # noqa: S101 - checked by _fields
    if "by" not in raw:
        state.report((*at, "by"), f"'group' needs 'by': the key events are grouped by, such as {example}")
    by = _template(raw["by"], (*at, "by"), state) if "by" in raw else None
    wait = _duration(raw.get("wait"), (*at, "wait"), state, required=True)
    interval = _duration(raw.get("interval"), (*at, "interval"), state, required=True)
    if not known or by is None or wait is None or interval is None:
        return None
    return Group(by, wait, interval)


def _warn_unknown_types(raw: Mapping[str, object], rule: str | None, at: KeyPath, state: _FileState) -> None:
    types = raw.get("includedEventTypes")
    for i, name in enumerate(types if isinstance(types, list) else ()):
        folded = name.casefold()
        if folded.startswith(_ML_PREFIX) and folded not in _ML_FOLDED:
            known = ", ".join(sorted(ML_EVENT_TYPES))
            state.warnings.append(
                f"{state.where((*at, 'includedEventTypes', i))}: rule {rule!r}: {name!r} is not an Azure ML "
                f"event type and will never be published (known: {known})"
            )


def _actions(raw: object, at: KeyPath, state: _FileState) -> tuple[ActionSpec, ...] | None:
    if not isinstance(raw, list) or not raw:
        state.report(at, "'actions' must be a non-empty list of actions")
        return None
    registry = action_types()
    specs: list[ActionSpec] = []
    ok = True
    for i, item in enumerate(raw):
        where = (*at, i)
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            state.report(where, f"each action must be a mapping with a 'type' (one of: {', '.join(sorted(registry))})")
            ok = False
            continue
        kind = registry.get(item["type"])
        if kind is None:
            hint = f"{_did_you_mean(item['type'], registry)}; known: {', '.join(sorted(registry))}"
            state.report((*where, "type"), f"unknown action type {item['type']!r}{hint}")
            ok = False
            continue
        try:
            params = kind.params.model_validate(
                {k: v for k, v in item.items() if k != "type"}, context={"env": state.env}
            )
        except ValidationError as exc:
            for error in exc.errors():
                loc = tuple(error["loc"])
                field = ".".join(str(p) for p in loc) or "(parameters)"
                message = error["msg"].removeprefix("Value error, ")
                state.report((*where, *loc), f"action {i} ({kind.name}): {field}: {message}")
            ok = False
            continue
        specs.append(ActionSpec(kind.name, i, params))
        if kind.deprecated is not None:
            state.warnings.append(f"{state.where(where)}: action {i} ({kind.name}): {kind.deprecated}")
    return tuple(specs) if ok else None


def _to_data(node: yaml.Node, at: KeyPath, state: _FileState) -> object:
    """Plain data from a YAML node, recording each node's position; duplicate keys are problems."""
    state.positions.setdefault(at, (node.start_mark.line + 1, node.start_mark.column + 1))
    if isinstance(node, yaml.MappingNode):
        return {key: _to_data(value, (*at, key), state) for key, value in _pairs(node, state).items()}
    if isinstance(node, yaml.SequenceNode):
        return [_to_data(item, (*at, i), state) for i, item in enumerate(node.value)]
    return _scalar(node, state)


def _pairs(node: yaml.MappingNode, state: _FileState) -> dict[str, yaml.Node]:
    """A mapping's keys and value nodes with merge keys (``<<: *base``) applied: the mapping's own
    keys override merged ones, and an earlier merged mapping overrides a later one. Only a key
    given twice in the mapping itself is a duplicate."""
    merged: dict[str, yaml.Node] = {}
    own: dict[str, yaml.Node] = {}
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE_TAG:
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for source in sources:
                if not isinstance(source, yaml.MappingNode):
                    state.report_node(source, "'<<' (a merge key) takes a mapping or a list of mappings, such as *base")
                    continue
                for name, value in _pairs(source, state).items():
                    merged.setdefault(name, value)
            continue
        key = _scalar(key_node, state)
        if not isinstance(key, str):
            key = str(key)
        if key in own:
            state.report_node(key_node, f"duplicate key {key!r}")
            continue
        own[key] = value_node
    return merged | own


def _scalar(node: yaml.Node, state: _FileState) -> object:
    if node.tag == "tag:yaml.org,2002:float":
        try:
            return Decimal(str(node.value).replace("_", ""))
        except InvalidOperation:
            pass
    try:
        return state.yaml.construct_object(node, deep=True)
    except (yaml.YAMLError, ValueError) as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        text = node.value if isinstance(node.value, str) else None
        state.report_node(node, f"cannot read the value {text!r}: {problem}")
        return text
