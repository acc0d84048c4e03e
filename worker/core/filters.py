"""Event Grid event-subscription filters, compiled into condition trees.

A rule's ``filter`` is Event Grid's own filter object in its ARM/REST JSON shape
(``includedEventTypes``, ``subjectBeginsWith``, ``subjectEndsWith``, ``isSubjectCaseSensitive``,
``enableAdvancedFilteringOnArrays``, ``advancedFilters``), evaluated with Event Grid's semantics,
plus three extensions Event Grid lacks: ``all``, ``any`` and ``not``, whose items are advanced
filters or nested filter objects. Everything here is pure: no I/O, no clock, no logging.

Policies where Event Grid's documentation is silent (each also in docs/rules.md):

- event types compare ignoring case; ``["All"]`` means every type;
- a missing subject fails a non-empty subject filter;
- a JSON ``null`` is treated as a missing key by every comparison operator;
- NumberInRange is false and NumberNotInRange true on a missing key;
- Number* and BoolEquals are false on a scalar of another JSON type; String* operators compare
  against the text of a number or boolean;
- with ``enableAdvancedFilteringOnArrays`` off, every comparison operator is false on an array;
  with it on, elements of another type are ignored, an empty array makes positive operators
  false and negated ones true;
- strings compare with Unicode case folding.
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from worker.events import Event
from worker.keys import MISSING, compile_key, lookup, split_key

Path = tuple[str | int, ...]
Report = Callable[[Path, str], None]

#: Event Grid's own limits, enforced so that a filter valid here is valid in a subscription.
MAX_ADVANCED_FILTERS: Final = 25
MAX_FILTER_VALUES: Final = 25
MAX_STRING_VALUE: Final = 512


class Kind(enum.Enum):
    NUMBER = "number"
    STRING = "string"
    BOOL = "boolean"
    PRESENCE = "presence"


class Operand(enum.Enum):
    VALUE = "value"
    VALUES = "values"
    RANGES = "ranges"
    NONE = "none"

    @property
    def field(self) -> str:
        """The advanced-filter field that holds this operand."""
        return "value" if self is Operand.VALUE else "values"


Predicate = Callable[[Any], bool]


@dataclass(frozen=True, slots=True)
class OperatorSpec:
    """One Event Grid advanced-filter operator, as data."""

    name: str
    kind: Kind
    operand: Operand
    #: The operator holds when *no* (element, value) pair satisfies the positive predicate.
    negated: bool
    #: Result on a missing key or a null value (Event Grid's documented table).
    on_missing: bool
    build: Callable[[Any], Predicate]


def _in(values: Sequence[Any]) -> Predicate:
    return frozenset(values).__contains__


def _ranges(pairs: Sequence[tuple[Decimal, Decimal]]) -> Predicate:
    return lambda n: any(low <= n <= high for low, high in pairs)


def _contains(values: Sequence[str]) -> Predicate:
    return lambda s: any(v in s for v in values)


def _begins(values: Sequence[str]) -> Predicate:
    prefixes = tuple(values)
    return lambda s: s.startswith(prefixes)


def _ends(values: Sequence[str]) -> Predicate:
    suffixes = tuple(values)
    return lambda s: s.endswith(suffixes)


# The single-value operators' builders are named functions, not nested lambdas in the table below:
# mypyc cannot compile a lambda within a lambda at module level.
def _less(v: Any) -> Predicate:
    return lambda n: n < v


def _greater(v: Any) -> Predicate:
    return lambda n: n > v


def _at_most(v: Any) -> Predicate:
    return lambda n: n <= v


def _at_least(v: Any) -> Predicate:
    return lambda n: n >= v


def _is(v: Any) -> Predicate:
    return lambda b: b is v


def _never(_: object) -> Predicate:
    return lambda _v: False


_N, _S, _B, _P = Kind.NUMBER, Kind.STRING, Kind.BOOL, Kind.PRESENCE
_ONE, _MANY, _RANGES, _NONE = Operand.VALUE, Operand.VALUES, Operand.RANGES, Operand.NONE

OPERATORS: Final[Mapping[str, OperatorSpec]] = {
    spec.name: spec
    for spec in (
        OperatorSpec("NumberIn", _N, _MANY, False, False, _in),
        OperatorSpec("NumberNotIn", _N, _MANY, True, True, _in),
        OperatorSpec("NumberLessThan", _N, _ONE, False, False, _less),
        OperatorSpec("NumberGreaterThan", _N, _ONE, False, False, _greater),
        OperatorSpec("NumberLessThanOrEquals", _N, _ONE, False, False, _at_most),
        OperatorSpec("NumberGreaterThanOrEquals", _N, _ONE, False, False, _at_least),
        OperatorSpec("NumberInRange", _N, _RANGES, False, False, _ranges),
        OperatorSpec("NumberNotInRange", _N, _RANGES, True, True, _ranges),
        OperatorSpec("BoolEquals", _B, _ONE, False, False, _is),
        OperatorSpec("StringIn", _S, _MANY, False, False, _in),
        OperatorSpec("StringNotIn", _S, _MANY, True, True, _in),
        OperatorSpec("StringContains", _S, _MANY, False, False, _contains),
        OperatorSpec("StringNotContains", _S, _MANY, True, False, _contains),
        OperatorSpec("StringBeginsWith", _S, _MANY, False, False, _begins),
        OperatorSpec("StringNotBeginsWith", _S, _MANY, True, False, _begins),
        OperatorSpec("StringEndsWith", _S, _MANY, False, False, _ends),
        OperatorSpec("StringNotEndsWith", _S, _MANY, True, False, _ends),
        OperatorSpec("IsNullOrUndefined", _P, _NONE, False, True, _never),
        OperatorSpec("IsNotNull", _P, _NONE, False, False, _never),
    )
}


def as_number(value: object) -> int | Decimal | None:
    """A JSON number as an exact decimal (Event Grid compares .NET decimals), else None."""
    kind = type(value)
    if kind is int or kind is Decimal:
        return value  # type: ignore[return-value]
    if kind is float:
        return Decimal(repr(value))
    return None


def _as_string_element(value: object) -> str | None:
    return value.casefold() if type(value) is str else None


def _as_string_scalar(value: object) -> str | None:
    if type(value) is str:
        return value.casefold()
    if type(value) is bool:
        return "true" if value else "false"
    number = as_number(value)
    return None if number is None else str(number)


def _as_bool(value: object) -> bool | None:
    return value if type(value) is bool else None


_ELEMENT: Final = {Kind.NUMBER: as_number, Kind.STRING: _as_string_element, Kind.BOOL: _as_bool}
_SCALAR: Final = {Kind.NUMBER: as_number, Kind.STRING: _as_string_scalar, Kind.BOOL: _as_bool}


# --- condition nodes -------------------------------------------------------------------------


Test = Callable[[Event], bool]


class Condition:
    """A compiled condition. ``test`` is the hot path: a closure specialised at compile time, with
    no method dispatch and no attribute lookups per event; ``why_not`` explains a failure."""

    __slots__ = ("label", "test")

    def __init__(self, label: str, test: Test) -> None:
        self.label = label
        self.test = test

    def holds(self, event: Event) -> bool:
        return self.test(event)

    def why_not(self, event: Event) -> str | None:
        """None when the condition holds; otherwise a sentence naming what failed."""
        raise NotImplementedError


class Always(Condition):
    """An empty filter: every event passes."""

    __slots__ = ()

    def __init__(self, label: str) -> None:
        super().__init__(label, _always)

    def why_not(self, event: Event) -> str | None:
        return None


def _always(_event: Event) -> bool:
    return True


class EventTypeIn(Condition):
    __slots__ = ("folded", "names")

    def __init__(self, label: str, names: Sequence[str]) -> None:
        folded = frozenset(n.casefold() for n in names)
        exact = frozenset(names)

        def test(event: Event) -> bool:
            kind = event.type
            return kind in exact or kind.casefold() in folded

        super().__init__(label, test)
        self.names = tuple(names)
        self.folded = folded

    def why_not(self, event: Event) -> str | None:
        if self.holds(event):
            return None
        return f"{self.label}: event type {event.type!r} is not one of {list(self.names)}"


class SubjectAffix(Condition):
    __slots__ = ("affix", "case_sensitive", "suffix")

    def __init__(self, label: str, affix: str, *, suffix: bool, case_sensitive: bool) -> None:
        folded = affix if case_sensitive else affix.casefold()
        check = str.endswith if suffix else str.startswith

        def test(event: Event) -> bool:
            subject = event.subject
            if subject is None:
                return False
            return check(subject if case_sensitive else subject.casefold(), folded)

        super().__init__(label, test)
        self.affix = folded
        self.suffix = suffix
        self.case_sensitive = case_sensitive

    def why_not(self, event: Event) -> str | None:
        if self.holds(event):
            return None
        if event.subject is None:
            return f"{self.label}: the event has no subject"
        verb = "end" if self.suffix else "begin"
        case = "" if self.case_sensitive else " (ignoring case)"
        return f"{self.label}: subject {event.subject!r} does not {verb} with {self.affix!r}{case}"


class Advanced(Condition):
    """One advanced filter: ``operatorType`` applied to the value at ``key``."""

    __slots__ = ("arrays", "key", "path")

    def __init__(self, label: str, spec: OperatorSpec, key: str, operand: object, *, arrays: bool) -> None:
        path = compile_key(key) or ((key, key),)
        presence, negated, on_missing = spec.kind is Kind.PRESENCE, spec.negated, spec.on_missing
        predicate = spec.build(operand)
        element, scalar = _ELEMENT.get(spec.kind, _as_bool), _SCALAR.get(spec.kind, _as_bool)
        strings = spec.kind is Kind.STRING
        missing = MISSING

        def test(event: Event) -> bool:
            value = lookup(event.envelope, path)
            if value is missing or value is None:
                return on_missing
            if presence:
                return not on_missing
            if type(value) is list:
                if not arrays:
                    return False
                for item in value:
                    normal = element(item)
                    if normal is not None and predicate(normal):
                        return not negated
                return negated
            normal = value.casefold() if strings and type(value) is str else scalar(value)
            if normal is None:
                return False
            return predicate(normal) != negated

        super().__init__(label, test)
        self.key = key
        self.path = path
        self.arrays = arrays

    def why_not(self, event: Event) -> str | None:
        if self.holds(event):
            return None
        value = lookup(event.envelope, self.path)
        if value is MISSING:
            found = "the key is not in the event"
        elif type(value) is list and not self.arrays:
            found = "the value is an array and enableAdvancedFilteringOnArrays is off"
        else:
            found = f"the value is {_show(value)}"
        return f"{self.label}: {found}"


class AllOf(Condition):
    __slots__ = ("children",)

    def __init__(self, label: str, children: Sequence[Condition]) -> None:
        tests = tuple(child.test for child in children)
        if len(tests) == 1:
            test = tests[0]
        elif len(tests) == 2:
            first, second = tests

            def test(event: Event) -> bool:
                return first(event) and second(event)
        else:

            def test(event: Event) -> bool:
                for t in tests:
                    if not t(event):
                        return False
                return True

        super().__init__(label, test)
        self.children = tuple(children)

    def why_not(self, event: Event) -> str | None:
        for child in self.children:
            reason = child.why_not(event)
            if reason is not None:
                return reason
        return None


class AnyOf(Condition):
    __slots__ = ("children",)

    def __init__(self, label: str, children: Sequence[Condition]) -> None:
        tests = tuple(child.test for child in children)

        def test(event: Event) -> bool:
            for t in tests:
                if t(event):
                    return True
            return False

        super().__init__(label, test)
        self.children = tuple(children)

    def why_not(self, event: Event) -> str | None:
        if self.holds(event):
            return None
        reasons = "; ".join(r for c in self.children if (r := c.why_not(event)))
        return f"{self.label}: none of {len(self.children)} conditions holds ({reasons})"


class NotOf(Condition):
    __slots__ = ("child",)

    def __init__(self, label: str, child: Condition) -> None:
        inner = child.test

        def test(event: Event) -> bool:
            return not inner(event)

        super().__init__(label, test)
        self.child = child

    def why_not(self, event: Event) -> str | None:
        if self.holds(event):
            return None
        return f"{self.label}: the negated condition holds ({self.child.label})"


def _show(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- compiling ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CompiledFilter:
    """A rule's filter, with what the rules index needs to know about it."""

    condition: Condition
    #: ``condition`` without the event types and subject prefix that the rules index enforces.
    residual: Condition
    #: Case-folded event types the filter admits, or None for every type.
    event_types: frozenset[str] | None
    subject_prefix: str
    prefix_case_sensitive: bool
    #: The event types as written, so the index can try an exact lookup before folding case.
    event_type_names: tuple[str, ...] = ()


FILTER_KEYS: Final = (
    "includedEventTypes",
    "subjectBeginsWith",
    "subjectEndsWith",
    "isSubjectCaseSensitive",
    "enableAdvancedFilteringOnArrays",
    "advancedFilters",
    "all",
    "any",
    "not",
)
ADVANCED_KEYS: Final = ("operatorType", "key", "value", "values")


def compile_filter(raw: object, at: Path, report: Report) -> CompiledFilter | None:
    """Compile a rule's ``filter``; report every problem found and return None if there were any."""
    problems: list[str] = []

    def counting(path: Path, message: str) -> None:
        problems.append(message)
        report(path, message)

    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        report(at, f"'filter' must be a mapping (an Event Grid filter object), got {_type_name(raw)}")
        return None
    parts = _filter_parts(raw, at, counting, case_sensitive=False, arrays=False)
    if problems:
        return None
    # The rules index already selects by the top-level event types and subject prefix: the rest is
    # what evaluation still has to test.
    residual = [p for p in parts if not _indexed(p)]
    types = _included_types(raw)
    prefix = raw.get("subjectBeginsWith") or ""
    case_sensitive = raw.get("isSubjectCaseSensitive") is True
    return CompiledFilter(
        condition=_all_of(parts, at),
        residual=_all_of(residual, at),
        event_types=None if types is None else frozenset(t.casefold() for t in types),
        subject_prefix=prefix if case_sensitive else prefix.casefold(),
        prefix_case_sensitive=case_sensitive,
        event_type_names=tuple(types or ()),
    )


def _indexed(part: Condition) -> bool:
    """Whether the rules index enforces this top-level part of a filter."""
    return isinstance(part, EventTypeIn) or (isinstance(part, SubjectAffix) and not part.suffix)


def _included_types(raw: Mapping[str, object]) -> list[str] | None:
    types = raw.get("includedEventTypes")
    if not isinstance(types, list) or not types or any(str(t).casefold() == "all" for t in types):
        return None
    return [str(t) for t in types]


def _filter_object(
    raw: Mapping[str, object], at: Path, report: Report, *, case_sensitive: bool, arrays: bool
) -> Condition | None:
    parts = _filter_parts(raw, at, report, case_sensitive=case_sensitive, arrays=arrays)
    return _all_of(parts, at)


def _all_of(parts: Sequence[Condition], at: Path) -> Condition:
    if not parts:
        return Always(_where(at, None) or "filter")
    return parts[0] if len(parts) == 1 else AllOf(_where(at, None) or "filter", parts)


def _filter_parts(
    raw: Mapping[str, object], at: Path, report: Report, *, case_sensitive: bool, arrays: bool
) -> list[Condition]:
    _check_keys(raw, FILTER_KEYS, at, report, what="filter")
    case_sensitive = _optional_bool(raw, "isSubjectCaseSensitive", at, report, case_sensitive)
    arrays = _optional_bool(raw, "enableAdvancedFilteringOnArrays", at, report, arrays)
    parts: list[Condition] = []

    types = raw.get("includedEventTypes")
    if types is not None:
        if not isinstance(types, list) or not all(isinstance(t, str) and t for t in types):
            report((*at, "includedEventTypes"), "'includedEventTypes' must be a list of event type names")
        elif _included_types(raw) is not None:
            parts.append(EventTypeIn(_where(at, "includedEventTypes"), types))

    for name, suffix in (("subjectBeginsWith", False), ("subjectEndsWith", True)):
        affix = raw.get(name)
        if affix is None or affix == "":
            continue
        if not isinstance(affix, str):
            report((*at, name), f"{name!r} must be a string, got {_type_name(affix)}")
            continue
        label = f"{_where(at, name)} {affix!r}"
        parts.append(SubjectAffix(label, affix, suffix=suffix, case_sensitive=case_sensitive))

    advanced = raw.get("advancedFilters")
    if advanced is not None:
        if not isinstance(advanced, list):
            report((*at, "advancedFilters"), "'advancedFilters' must be a list of advanced filters")
        else:
            if len(advanced) > MAX_ADVANCED_FILTERS:
                report(
                    (*at, "advancedFilters"),
                    f"{len(advanced)} advanced filters; Event Grid allows at most {MAX_ADVANCED_FILTERS} "
                    "per filter (split the rule, or nest them under 'all')",
                )
            count = sum(_value_count(f) for f in advanced)
            if count > MAX_FILTER_VALUES:
                report(
                    (*at, "advancedFilters"),
                    f"{count} filter values in all; Event Grid allows at most {MAX_FILTER_VALUES} per filter",
                )
            for i, item in enumerate(advanced):
                node = _advanced(item, (*at, "advancedFilters", i), report, arrays=arrays)
                if node is not None:
                    parts.append(node)

    for name, combine in (("all", AllOf), ("any", AnyOf)):
        items = raw.get(name)
        if items is None:
            continue
        if not isinstance(items, list) or not items:
            report((*at, name), f"{name!r} must be a non-empty list of conditions")
            continue
        children = [
            _condition(item, (*at, name, i), report, case_sensitive=case_sensitive, arrays=arrays)
            for i, item in enumerate(items)
        ]
        if all(c is not None for c in children):
            parts.append(combine(_where(at, name), [c for c in children if c is not None]))

    if "not" in raw and raw["not"] is not None:
        child = _condition(raw["not"], (*at, "not"), report, case_sensitive=case_sensitive, arrays=arrays)
        if child is not None:
            parts.append(NotOf(_where(at, "not"), child))
    return parts


def _condition(raw: object, at: Path, report: Report, *, case_sensitive: bool, arrays: bool) -> Condition | None:
    """An item of ``all`` / ``any`` / ``not``: an advanced filter or a nested filter object."""
    if not isinstance(raw, dict):
        report(at, f"a condition must be a mapping (an advanced filter or a filter object), got {_type_name(raw)}")
        return None
    if "operatorType" in raw:
        return _advanced(raw, at, report, arrays=arrays)
    if not raw:
        report(at, "an empty condition; give an advanced filter or a filter object")
        return None
    return _filter_object(raw, at, report, case_sensitive=case_sensitive, arrays=arrays)


def _advanced(raw: object, at: Path, report: Report, *, arrays: bool) -> Condition | None:
    if not isinstance(raw, dict):
        report(at, f"an advanced filter must be a mapping with operatorType and key, got {_type_name(raw)}")
        return None
    _check_keys(raw, ADVANCED_KEYS, at, report, what="advanced filter")
    name = raw.get("operatorType")
    spec = OPERATORS.get(name) if isinstance(name, str) else None
    if spec is None:
        hint = _did_you_mean(str(name), OPERATORS)
        report((*at, "operatorType"), f"unknown operatorType {name!r}{hint}; known: {', '.join(OPERATORS)}")
        return None
    key = raw.get("key")
    if not isinstance(key, str) or split_key(key) is None:
        report((*at, "key"), f"{name}: 'key' must be a dot path such as 'data.runStatus', got {key!r}")
        return None
    operand = _operand(spec, raw, at, report)
    if operand is _INVALID:
        return None
    label = f"{_where(at, None)} {name} {key}"
    if spec.operand is not Operand.NONE:
        label += f" {_show_operand(raw.get(spec.operand.field))}"
    return Advanced(label, spec, key, operand, arrays=arrays)


_INVALID: Final = object()


def _operand(spec: OperatorSpec, raw: Mapping[str, object], at: Path, report: Report) -> object:
    wanted, other = ("value", "values") if spec.operand is Operand.VALUE else ("values", "value")
    if spec.operand is Operand.NONE:
        given = [k for k in ("value", "values") if raw.get(k) is not None]
        if given:
            report((*at, given[0]), f"{spec.name} takes no {given[0]!r}")
            return _INVALID
        return None
    if raw.get(other) is not None and raw.get(wanted) is None:
        report((*at, other), f"{spec.name} takes {wanted!r}, not {other!r}")
        return _INVALID
    if wanted not in raw or raw[wanted] is None:
        report(at, f"{spec.name} needs {wanted!r}")
        return _INVALID
    given_value = raw[wanted]
    where = (*at, wanted)
    if spec.operand is Operand.VALUE:
        return _scalar(spec, given_value, where, report)
    if not isinstance(given_value, list) or not given_value:
        report(where, f"{spec.name}: 'values' must be a non-empty list")
        return _INVALID
    if spec.operand is Operand.RANGES:
        pairs = [_range(spec, item, (*where, i), report) for i, item in enumerate(given_value)]
        return _INVALID if _INVALID in pairs else pairs
    items = [_scalar(spec, item, (*where, i), report) for i, item in enumerate(given_value)]
    return _INVALID if _INVALID in items else items


def _scalar(spec: OperatorSpec, value: object, at: Path, report: Report) -> object:
    if spec.kind is Kind.BOOL:
        if type(value) is bool:
            return value
        report(at, f"{spec.name}: expected true or false, got {_show(value)}")
        return _INVALID
    if spec.kind is Kind.NUMBER:
        number = _decimal(value)
        if number is None:
            report(at, f"{spec.name}: expected a number, got {_show(value)}")
            return _INVALID
        return number
    if not isinstance(value, str):
        report(at, f"{spec.name}: expected a string, got {_show(value)} (quote it in YAML)")
        return _INVALID
    if len(value) > MAX_STRING_VALUE:
        report(at, f"{spec.name}: a string value is limited to {MAX_STRING_VALUE} characters, got {len(value)}")
        return _INVALID
    return value.casefold()


def _range(spec: OperatorSpec, pair: object, at: Path, report: Report) -> object:
    if not isinstance(pair, list) or len(pair) != 2:
        report(at, f"{spec.name}: each range must be a [low, high] pair of numbers, got {_show(pair)}")
        return _INVALID
    low, high = _decimal(pair[0]), _decimal(pair[1])
    if low is None or high is None:
        report(at, f"{spec.name}: each range must be a [low, high] pair of numbers, got {_show(pair)}")
        return _INVALID
    if low > high:
        report(at, f"{spec.name}: range [{low}, {high}] has low above high and can never match")
        return _INVALID
    return (low, high)


def _decimal(value: object) -> Decimal | None:
    if type(value) is bool:
        return None
    if isinstance(value, int | Decimal):
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(repr(value))
    else:
        return None
    try:
        return number if number.is_finite() else None
    except InvalidOperation:  # pragma: no cover - is_finite does not raise
        return None


def _value_count(item: object) -> int:
    if not isinstance(item, dict):
        return 0
    values = item.get("values")
    if isinstance(values, list):
        return len(values)
    return 1 if item.get("value") is not None else 0


def _optional_bool(raw: Mapping[str, object], name: str, at: Path, report: Report, default: bool) -> bool:
    value = raw.get(name)
    if value is None:
        return default
    if type(value) is not bool:
        report((*at, name), f"{name!r} must be true or false, got {_show(value)}")
        return default
    return value


def _check_keys(raw: Mapping[str, object], known: Sequence[str], at: Path, report: Report, *, what: str) -> None:
    for key in raw:
        if key not in known:
            report((*at, key), f"unknown {what} field {key!r}{_did_you_mean(str(key), known)}")


def _did_you_mean(word: str, choices: Sequence[str] | Mapping[str, object]) -> str:
    names = list(choices)
    folded = {n.casefold(): n for n in names}
    if word.casefold() in folded:
        return f" (did you mean {folded[word.casefold()]!r}? names are case-sensitive)"
    close = difflib.get_close_matches(word, names, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _where(at: Path, leaf: str | None) -> str:
    """A readable location inside a rule, such as ``any[1].advancedFilters[0]``."""
    steps = at[at.index("filter") + 1 :] if "filter" in at else at
    parts: list[str] = []
    for step in steps:
        if isinstance(step, int):
            if parts:
                parts[-1] += f"[{step}]"
        else:
            parts.append(step)
    if leaf:
        parts.append(leaf)
    return ".".join(parts)


def _show_operand(value: object) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_show_operand(v) for v in value) + "]"
    if isinstance(value, Decimal):
        return str(value)
    return repr(value) if isinstance(value, str) else str(value).lower() if type(value) is bool else str(value)


def _type_name(value: object) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {_show(value)}"
