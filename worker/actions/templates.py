"""Templates in action parameters: Jinja, sandboxed, checked when the rules load.

A template sees the event and the rule (:data:`CONTEXT_NAMES`): ``id``, ``type``, ``subject``,
``topic``, ``time`` (ISO 8601), ``data_version``, ``data``, ``event`` (the event's JSON object as
received), ``rule``, ``action_index`` and ``idempotency_key``; for a rule that remembers (see
:mod:`worker.core.memos`), ``expectation`` (an expiry's ``key``, ``deadline`` and ``within``) or ``group``
(a notification's ``key``, ``count``, ``first`` and ``last``), and ``events`` (a notification's
events, in order; otherwise the one event). Members of JSON objects are looked up
as filter keys are: exact name first, then ignoring case (``data.ModelName`` finds ``modelName``).

Templates run in Jinja's sandbox (no access to Python internals) with no loader (no ``include``,
``import`` or ``extends``: no file access), and see exactly the context: none of Jinja's globals
(``range``, ``dict``, ``lipsum``, ``cycler``, ``joiner``, ``namespace``), only the filters of
:data:`FILTERS` and the tests of :data:`TESTS`. At load time a template that does not parse, uses
those tags, or names anything else is an error of the rules file; validation and rendering use the
same environment, so what passes one cannot surprise the other. What is inside ``data``
cannot be known then: a template that reaches for a member the event lacks fails that action
permanently (it is dead-lettered with the reason) unless it says what to do, such as
``{{ data.runId | default('') }}`` or ``{% if data.runId is defined %}``.

A JSON template (a request body, parameter assignments) is any YAML value: strings in it are
templates, and a string that is exactly one ``{{ expression }}`` keeps the expression's JSON type
(``"{{ data }}"`` is an object, ``"{{ data.modelVersion }}"`` a number).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar, Final

import jinja2
from jinja2 import StrictUndefined, meta, nodes
from jinja2.sandbox import SandboxedEnvironment
from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from worker.actions.base import PlannedAction
from worker.errors import RenderError
from worker.events import Event
from worker.keys import MISSING, member

CONTEXT_NAMES: Final = (
    "id",
    "type",
    "subject",
    "topic",
    "time",
    "data_version",
    "data",
    "event",
    "rule",
    "action_index",
    "idempotency_key",
    "expectation",
    "group",
    "events",
)
_KNOWN: Final = frozenset(CONTEXT_NAMES)
#: The filters templates may use: Jinja's own, of these names.
FILTERS: Final = (
    "abs",
    "capitalize",
    "count",
    "d",
    "default",
    "e",
    "escape",
    "first",
    "float",
    "int",
    "join",
    "last",
    "length",
    "lower",
    "replace",
    "round",
    "safe",
    "string",
    "title",
    "tojson",
    "trim",
    "truncate",
    "upper",
    "urlencode",
)
#: The tests templates may use (``x is defined``): Jinja's own, of these names.
TESTS: Final = (
    "!=",
    "<",
    "<=",
    "==",
    ">",
    ">=",
    "boolean",
    "defined",
    "divisibleby",
    "eq",
    "even",
    "false",
    "float",
    "ge",
    "gt",
    "in",
    "integer",
    "le",
    "lower",
    "lt",
    "mapping",
    "ne",
    "none",
    "number",
    "odd",
    "sequence",
    "string",
    "true",
    "undefined",
    "upper",
)
_FORBIDDEN: Final = (nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)
#: A template that is one expression and nothing else (Jinja's whitespace control, ``{{-``, ``{{+`` and
#: ``-}}``, is not part of the expression).
_ONE_EXPRESSION: Final = re.compile(r"\s*\{\{[-+]?(?P<expression>(?:(?!\{\{|\}\}).)*?)-?\}\}\s*", re.DOTALL)
#: A template that is one name or member path and nothing else (``{{ data.experimentName }}``).
_ONE_PATH: Final = re.compile(r"\{\{-?\s*(?P<path>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\s*-?\}\}")
#: What evaluating a template may raise: Jinja's errors, and Python's on wrong types or values.
_RENDER_ERRORS: Final = (jinja2.TemplateError, ArithmeticError, LookupError, TypeError, ValueError, AttributeError)

Context = Mapping[str, object]


class _Environment(SandboxedEnvironment):
    """The sandbox, with members of JSON objects looked up as filter keys are (and never dict methods),
    no globals, and only the filters and tests named in :data:`FILTERS` and :data:`TESTS`."""

    def __init__(self, *, autoescape: bool) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=autoescape, keep_trailing_newline=True)
        self.globals.clear()
        self.filters = {name: self.filters[name] for name in FILTERS}
        self.tests = {name: self.tests[name] for name in TESTS}

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict:
            return self._member(obj, attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if type(obj) is dict and isinstance(argument, str):
            return self._member(obj, argument)
        return super().getitem(obj, argument)

    def _member(self, obj: dict[str, object], name: str) -> Any:
        value = member(obj, name)
        return self.undefined(obj=obj, name=name) if value is MISSING else value


_TEXT: Final = _Environment(autoescape=False)
_HTML: Final = _Environment(autoescape=True)


#: What a template sees of one event, by name, for reading one of them (:func:`path_value`); the same
#: as :func:`event_context`, which a test checks.
_EVENT_VALUES: Final[dict[str, Callable[[Event], object]]] = {
    "id": lambda event: event.id,
    "type": lambda event: event.type,
    "subject": lambda event: event.subject,
    "topic": lambda event: event.topic,
    "time": lambda event: event.time.isoformat() if event.time else None,
    "data_version": lambda event: event.data_version,
    "data": lambda event: event.data,
    "event": lambda event: event.envelope,
}


def event_context(event: Event) -> dict[str, object]:
    """What a template sees of one event: a group's ``by`` and an expectation's ``key`` see only this.
    The names and values of :data:`_EVENT_VALUES`, written out: this runs for every action rendered."""
    return {
        "id": event.id,
        "type": event.type,
        "subject": event.subject,
        "topic": event.topic,
        "time": event.time.isoformat() if event.time else None,
        "data_version": event.data_version,
        "data": event.data,
        "event": event.envelope,
    }


def path_value(event: Event, path: tuple[str, ...]) -> object:
    """What a template of one member path (:attr:`Template.path`) reads of an event, as rendering
    would find it, without rendering; :data:`~worker.keys.MISSING` where rendering would fail."""
    head = _EVENT_VALUES.get(path[0])
    if head is None:
        return MISSING
    value = head(event)
    for name in path[1:]:
        if type(value) is not dict:
            return MISSING
        value = member(value, name)
    return value


def context_of(action: PlannedAction) -> dict[str, object]:
    """What templates see for one planned action."""
    event, memo = action.event, action.memo
    return {
        **event_context(event),
        "rule": action.rule,
        "action_index": action.spec.index,
        "idempotency_key": action.idempotency_key,
        "expectation": None,
        "group": None,
        "events": [event.envelope],
        **(memo.template_context() if memo is not None else {}),
    }


def _parse(environment: _Environment, source: str) -> nodes.Template:
    """Parse and check a template; raises ValueError naming what is wrong."""
    try:
        tree = environment.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(f"template {source!r}: syntax error on its line {exc.lineno}: {exc.message}") from None
    for node in tree.find_all(_FORBIDDEN):
        tag = type(node).__name__.lower()
        raise ValueError(f"template {source!r}: {tag!r} is not available (templates have no file access)")
    for filter_node in tree.find_all(nodes.Filter):
        if filter_node.name not in environment.filters:
            raise ValueError(
                f"template {source!r}: unknown filter {_suggest(filter_node.name, FILTERS)}; templates "
                f"have {', '.join(FILTERS)}"
            )
    for test_node in tree.find_all(nodes.Test):
        if test_node.name not in environment.tests:
            raise ValueError(
                f"template {source!r}: unknown test {_suggest(test_node.name, TESTS)}; templates have "
                f"{', '.join(name for name in TESTS if name.isalpha())}"
            )
    # After the filters and tests: finding the names compiles the template, which refuses unknown ones.
    unknown = sorted(meta.find_undeclared_variables(tree) - _KNOWN)
    if any(node.name == "self" for node in tree.find_all(nodes.Name)):
        unknown.insert(0, "self")  # Jinja's reference to the template itself, never looked up in the context
    if unknown:
        raise ValueError(
            f"template {source!r}: unknown name {_suggest(unknown[0], CONTEXT_NAMES)}; templates see "
            f"{', '.join(CONTEXT_NAMES)}"
        )
    return tree


def _suggest(name: str, names: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, names, n=1)
    return f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")


@dataclass(frozen=True, slots=True)
class Template:
    """A text template, compiled when the rules load."""

    source: str
    compiled: jinja2.Template = field(repr=False, compare=False)
    #: For a template that is one name or member path (``{{ data.experimentName }}``): its parts.
    path: tuple[str, ...] | None = field(default=None, repr=False, compare=False)

    #: The environment templates of this class compile in.
    ENVIRONMENT: ClassVar[_Environment] = _TEXT

    @classmethod
    def compile(cls, source: str) -> Template:
        environment = cls.ENVIRONMENT
        found = _ONE_PATH.fullmatch(source)
        path = tuple(found["path"].split(".")) if found else None
        return cls(source, environment.from_string(_parse(environment, source)), path)

    def render(self, context: Context) -> str:
        try:
            return self.compiled.render(context)
        except _RENDER_ERRORS as exc:
            raise RenderError(f"template {self.source!r}: {exc}") from exc

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(cls._validate)

    @classmethod
    def _validate(cls, raw: object) -> Template:
        if isinstance(raw, cls):
            return raw
        if not isinstance(raw, str):
            raise ValueError(f"expected a string (a template), got {type(raw).__name__}")  # noqa: TRY004 - pydantic reports ValueError
        return cls.compile(raw)


def constant(template: Template) -> str | None:
    """What ``template`` renders for every event when it has no expression, tag or comment; else None."""
    source = template.source
    return None if any(mark in source for mark in ("{{", "{%", "{#")) else source


@dataclass(frozen=True, slots=True)
class HtmlTemplate(Template):
    """A template whose output is HTML: values are escaped unless marked safe."""

    ENVIRONMENT: ClassVar[_Environment] = _HTML


#: A compiled JSON template: renders to a JSON-ready value.
_Render = Callable[[Context], object]


@dataclass(frozen=True, slots=True)
class JsonTemplate:
    """A JSON value whose strings are templates (see the module's docstring)."""

    source: object
    render_value: _Render = field(repr=False, compare=False)

    @classmethod
    def compile(cls, source: object) -> JsonTemplate:
        return cls(source, _compile_json(source))

    def render(self, context: Context) -> object:
        return self.render_value(context)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(cls._validate)

    @classmethod
    def _validate(cls, raw: object) -> JsonTemplate:
        return raw if isinstance(raw, cls) else cls.compile(raw)


def _compile_json(value: object) -> _Render:
    if isinstance(value, str):
        return _compile_string(value)
    if isinstance(value, dict):
        items = [(str(key), _compile_json(item)) for key, item in value.items()]
        return lambda context: {key: render(context) for key, render in items}
    if isinstance(value, list):
        renders = [_compile_json(item) for item in value]
        return lambda context: [render(context) for render in renders]
    if isinstance(value, Decimal):  # YAML floats load as exact decimals
        number: object = int(value) if value == value.to_integral_value() and "." not in str(value) else float(value)
        return lambda context: number
    if value is None or isinstance(value, bool | int | float):
        return lambda context: value
    raise ValueError(f"a JSON template holds strings, numbers, booleans, null, lists and mappings, not {value!r}")


def _compile_string(source: str) -> _Render:
    whole = _ONE_EXPRESSION.fullmatch(source)
    if whole is None:
        template = Template.compile(source)
        return template.render
    _parse(_TEXT, source)
    try:
        expression = _TEXT.compile_expression(whole.group("expression"), undefined_to_none=False)
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(f"template {source!r}: syntax error: {exc.message}") from None

    def render(context: Context) -> object:
        try:
            value = expression(**context)
        except _RENDER_ERRORS as exc:
            raise RenderError(f"template {source!r}: {exc}") from exc
        if isinstance(value, jinja2.Undefined):
            try:
                str(value)  # StrictUndefined raises, saying what is missing
            except jinja2.UndefinedError as exc:
                raise RenderError(f"template {source!r}: {exc}") from exc
        return value

    return render
