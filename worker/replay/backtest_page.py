"""The backtest report: one self-contained HTML page of what a dry run would have done, rule by rule.

:func:`render_html` turns a :class:`~worker.replay.backtest.Backtest` and the run's
:class:`~worker.core.accounting.Tally` into a page a person reads in a browser, offline: a summary (events
read, their outcomes, skip and invalid reasons, actions planned per rule), then a section per rule:
a chart of when it acted (inline SVG bars, every rule on the same time axis), what it acted on (the
events it matched, its expired expectations, its group notifications) with the actions it would have
run and their rendered parameters, and what was still pending at the end of the replay.

The page has no script and loads nothing (inline CSS and SVG only). Event content is untrusted:
every value is escaped (Jinja's autoescape) and masked (:data:`~worker.masking.MASKER`: the secrets
the process knows, and credentials by their shape) as it is written, and the finished page is
masked once more. Pure: no I/O.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import jinja2
from markupsafe import Markup

from worker.actions.base import ActionFate
from worker.actions.chat.html import STYLE as CHAT_STYLE
from worker.actions.chat.html import preview
from worker.core.accounting import Fate, Skip, Tally
from worker.core.memos import iso
from worker.core.rules import RulesTable
from worker.jsontext import dumps
from worker.masking import MASKER
from worker.replay.backtest import WIDTHS, Backtest, Histogram, Occurrence, RuleRecord, display_width

#: The colour of the chart's bars.
BAR_COLOUR: Final = "#2b6cb0"
#: Characters of one parameter shown; the rest is cut (a body may hold a whole event).
MAX_TEXT: Final = 20_000
#: Longer parameters (or JSON values written on one line) are shown as blocks.
_INLINE: Final = 100
#: The chart's size and margins, in pixels.
_WIDTH, _HEIGHT = 760, 190
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 40, 14, 46
_BARS: Final = 60
#: The words for what a rule acts on, by the kind of its occurrences.
_NOUNS: Final = {"event": "events matched", "expiry": "expectations expired", "group": "group notifications"}
#: The words for what was pending at the end of the replay, by kind.
_PENDING: Final = {"expiry": "expectations", "expect": "expectations", "group": "groups"}


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    #: What a tooltip says: the bucket's time and count.
    label: str


@dataclass(frozen=True, slots=True)
class Tick:
    at: float
    text: str


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    left: int
    top: int
    plot_width: int
    plot_height: int
    bars: tuple[Bar, ...]
    x_ticks: tuple[Tick, ...]
    y_ticks: tuple[Tick, ...]
    #: The axis titles.
    x_title: str
    y_title: str
    untimed: int


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    text: str
    #: Shown as a block (multi-line text, JSON) rather than inline.
    block: bool
    #: The template failed on this event: the text is the error.
    error: bool


@dataclass(frozen=True, slots=True)
class ActionView:
    action_type: str
    action_index: int
    idempotency_key: str
    params: tuple[Param, ...]
    #: A chat message drawn as it would look (see :mod:`worker.actions.chat.html`).
    preview: Markup | None = None


@dataclass(frozen=True, slots=True)
class RowView:
    kind: str
    when: str
    subject: str
    event_id: str
    event_type: str
    event_time: str
    where: str
    late: bool
    #: An expiry's or a notification's particulars, as (label, text).
    details: tuple[tuple[str, str], ...]
    actions: tuple[ActionView, ...]


@dataclass(frozen=True, slots=True)
class RuleView:
    anchor: str
    name: str
    description: str
    source: str
    matched: int
    stale: int
    #: Actions by type and fate, as text (``email: planned 45``).
    actions: tuple[str, ...]
    #: Its expiries and notifications, as text (``3 expectations expired``).
    occurrences: tuple[str, ...]
    memory: tuple[str, ...]
    pending: tuple[str, ...]
    noun: str
    chart: Chart | None
    rows: tuple[RowView, ...]
    unlisted: int


def render_html(backtest: Backtest, tally: Tally, *, title: str, rules: RulesTable | None) -> str:
    """The report page: HTML text, self-contained, escaped and masked."""
    names = _rule_names(backtest, tally, rules)
    described = {rule.name: rule for rule in rules.rules} if rules is not None else {}
    span = backtest.span()
    width = display_width(span, backtest.widest(), _BARS) if span is not None else WIDTHS[0]
    views = []
    for number, name in enumerate(names, 1):
        rule = described.get(name)
        record = backtest.rules.get(name)
        views.append(
            _rule_view(
                f"rule-{number}",
                name,
                rule.description if rule is not None else "",
                rule.source if rule is not None else "",
                record,
                tally,
                span,
                width,
            )
        )
    fates = tally.fates
    page = _TEMPLATE.render(
        title=title,
        generated=_when(datetime.now(UTC)),
        span=f"{_when_posix(span[0])} to {_when_posix(span[1])}" if span is not None else "",
        events=tally.read,
        outcomes=[(fate.value, fates[fate]) for fate in Fate],
        skipped=[(reason.value, tally.skipped[reason]) for reason in Skip if tally.skipped[reason]],
        invalid=sorted(tally.invalid.items()),
        late_processed=tally.late_processed,
        evictions=sorted((name, n) for name, n in tally.evictions.items() if n),
        planned=backtest.total,
        rules=views,
        colour=BAR_COLOUR,
    )
    return MASKER.mask(page)


def _rule_names(backtest: Backtest, tally: Tally, rules: RulesTable | None) -> list[str]:
    """Every rule: the table's in its order, then any other that matched or acted, sorted."""
    names = [rule.name for rule in rules.rules] if rules is not None else []
    seen = set(names)
    others = {*backtest.rules, *tally.rule_matches, *tally.rule_stale, *(rule for rule, _, _ in tally.actions)}
    return names + sorted(others - seen)


def _rule_view(
    anchor: str,
    name: str,
    description: str,
    source: str,
    record: RuleRecord | None,
    tally: Tally,
    span: tuple[int, int] | None,
    width: int,
) -> RuleView:
    actions: Counter[tuple[str, ActionFate]] = Counter()
    for (rule, action_type, fate), n in tally.actions.items():
        if rule == name:
            actions[action_type, fate] += n
    kinds = record.occurrences if record is not None else Counter[str]()
    kind = max(kinds, key=lambda k: kinds[k]) if kinds else "event"
    noun = _NOUNS.get(kind, kind)
    memory = tuple(f"{label} {counts[name]}" for counts, label in _memory(tally) if counts[name])
    pending = tuple(
        f"{n} {_PENDING.get(what, what)}" for (rule, what), n in sorted(tally.pending.items()) if rule == name and n
    )
    chart = None
    if record is not None and span is not None:
        chart = _chart(record.times, span, width, noun)
    return RuleView(
        anchor=anchor,
        name=name,
        description=description,
        source=source,
        matched=tally.rule_matches[name],
        stale=tally.rule_stale[name],
        actions=tuple(f"{t}: {fate.value} {n}" for (t, fate), n in sorted(actions.items())),
        occurrences=tuple(f"{kinds[k]} {_NOUNS[k]}" for k in _NOUNS if kinds[k] and k != "event"),
        memory=memory,
        pending=pending,
        noun=noun,
        chart=chart,
        rows=tuple(_row(occurrence) for occurrence in record.rows) if record is not None else (),
        unlisted=record.unlisted if record is not None else 0,
    )


def _memory(tally: Tally) -> tuple[tuple[Counter[str], str], ...]:
    """The tally's per-rule counters of rules that remember, each with what the page calls it."""
    return (
        (tally.expect_started, "expectations started"),
        (tally.expect_fulfilled, "fulfilled"),
        (tally.expect_expired, "expired"),
        (tally.group_joined, "events grouped"),
        (tally.group_notified, "notifications"),
        (tally.key_failed, "keys that did not render"),
    )


def _chart(times: Histogram, span: tuple[int, int], width: int, noun: str) -> Chart:
    start, end = span
    bars = times.bars(start, end, width)
    plot_width, plot_height = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM
    top = _nice(max((n for _, n in bars), default=0))
    step = plot_width / max(len(bars), 1)
    gap = 1.0 if step > 3 else 0.0
    drawn = tuple(
        Bar(
            x=round(_LEFT + i * step + gap / 2, 2),
            y=round(_TOP + plot_height - n / top * plot_height, 2),
            width=round(step - gap, 2),
            height=round(n / top * plot_height, 2),
            label=f"{_when_posix(moment)}: {n}",
        )
        for i, (moment, n) in enumerate(bars)
        if n
    )
    marks = _x_marks(len(bars))
    first = bars[0][0] if bars else start
    daily = width >= 86_400
    x_ticks = tuple(
        Tick(
            round(_LEFT + i * step, 2),
            _tick_text(first + i * width, daily=daily, dated=i == 0 or _day(first + i * width) != _day(first)),
        )
        for i in marks
    )
    y_ticks = tuple(
        Tick(round(_TOP + plot_height - value / top * plot_height, 2), str(value)) for value in (0, top // 2, top)
    )
    return Chart(
        width=_WIDTH,
        height=_HEIGHT,
        left=_LEFT,
        top=_TOP,
        plot_width=plot_width,
        plot_height=plot_height,
        bars=drawn,
        x_ticks=x_ticks,
        y_ticks=y_ticks,
        x_title=f"time (UTC), one bar per {_duration(width)}",
        y_title=noun,
        untimed=times.untimed,
    )


def _nice(value: int) -> int:
    """The least even number (1, 2, 5 times a power of ten, at least 2) not below ``value``: the
    chart's top."""
    magnitude = 1
    while True:
        for step in (2, 5, 10):
            if step * magnitude >= value:
                return step * magnitude
        magnitude *= 10


def _x_marks(count: int) -> list[int]:
    """The bars whose start is labelled: about six, evenly spread, the first and the end included."""
    if count <= 0:
        return [0]
    every = max(1, -(-count // 6))
    return [*range(0, count, every), count]


def _tick_text(moment: int, *, daily: bool, dated: bool) -> str:
    time = datetime.fromtimestamp(moment, UTC)
    if daily:
        return time.strftime("%Y-%m-%d")
    clock = "%H:%M:%S" if moment % 60 else "%H:%M"
    return time.strftime(f"%Y-%m-%d {clock}" if dated else clock)


def _day(moment: int) -> int:
    return moment // 86_400


def _duration(seconds: int) -> str:
    for unit, size in (("week", 604_800), ("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = seconds // size
            return unit if n == 1 else f"{n} {unit}s"
    return f"{seconds} seconds"


def _row(occurrence: Occurrence) -> RowView:
    details: list[tuple[str, str]] = []
    if occurrence.kind == "expiry":
        details += [
            ("expectation", occurrence.expectation_key or ""),
            ("deadline", iso(occurrence.deadline) if occurrence.deadline is not None else ""),
            ("within", occurrence.within or ""),
        ]
    elif occurrence.kind == "group":
        listed = len(occurrence.event_ids)
        count = occurrence.count if occurrence.count is not None else listed
        details += [
            ("group", occurrence.group_key or ""),
            ("events", str(count) + (f" ({listed} listed)" if listed != count else "")),
            ("event ids", ", ".join(occurrence.event_ids)),
        ]
    return RowView(
        kind=occurrence.kind,
        when=_when_posix(occurrence.moment) if occurrence.moment is not None else "",
        subject=occurrence.subject or "",
        event_id=occurrence.event_id,
        event_type=occurrence.event_type,
        event_time=_when(occurrence.event_time) if occurrence.event_time is not None else "",
        where=f"{occurrence.partition_id}"
        + (f" / {occurrence.sequence_number}" if occurrence.sequence_number is not None else ""),
        late=occurrence.late,
        details=tuple(details),
        actions=tuple(
            ActionView(
                action.action_type,
                action.action_index,
                action.idempotency_key,
                tuple(_param(name, value) for name, value in action.params.items()),
                _preview(action.action_type, action.params.get("message")),
            )
            for action in occurrence.actions
        ),
    )


def _param(name: str, value: object) -> Param:
    if isinstance(value, dict) and set(value) == {"error"}:
        return Param(name, _cut(str(value["error"])), block=True, error=True)
    if isinstance(value, str):
        return Param(name, _cut(value), block="\n" in value or len(value) > _INLINE, error=False)
    text = dumps(value).decode()
    if len(text) <= _INLINE:
        return Param(name, text, block=False, error=False)
    return Param(name, _cut(dumps(value, indent=True).decode()), block=True, error=False)


def _preview(action_type: str, message: object) -> Markup | None:
    drawn = preview(action_type, message)
    return None if drawn is None else Markup(drawn)  # noqa: S704 - every text in it escaped by worker.actions.chat.html


def _cut(text: str) -> str:
    if len(text) <= MAX_TEXT:
        return text
    return f"{text[:MAX_TEXT]}\n… ({len(text) - MAX_TEXT} more characters)"


def _when(time: datetime) -> str:
    return time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _when_posix(moment: float) -> str:
    return _when(datetime.fromtimestamp(moment, UTC))


def _mask(value: object) -> object:
    """Every value the template writes, masked before it is escaped (HTML made here is masked with the
    whole page)."""
    if isinstance(value, Markup):
        return value
    return MASKER.mask(value) if isinstance(value, str) else value


_ENVIRONMENT: Final = jinja2.Environment(
    autoescape=True,
    finalize=_mask,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

_TEMPLATE: Final = _ENVIRONMENT.from_string(
    (
        """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 1100px;
       padding: 1.5rem; color: #1a202c; background: #fff; line-height: 1.4; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; }
h2 { font-size: 1.25rem; margin: 0 0 .3rem; }
h3 { font-size: 1rem; margin: 1rem 0 .4rem; }
.muted { color: #5a6478; }
table { border-collapse: collapse; margin: .4rem 0 1rem; }
th, td { text-align: left; vertical-align: top; padding: .25rem .6rem; border-bottom: 1px solid #e2e8f0;
         overflow-wrap: anywhere; }
th { background: #f4f6fa; font-weight: 600; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
section.rule { border: 1px solid #d5dbe5; border-radius: 6px; padding: 1rem 1.2rem; margin: 1.2rem 0; }
.facts { margin: .3rem 0 .6rem; padding: 0; list-style: none; display: flex; flex-wrap: wrap; gap: .3rem 1.2rem; }
.tag { display: inline-block; font-size: .75rem; padding: 0 .4rem; border-radius: 3px; background: #edf2f7; }
.tag.late { background: #fefcbf; }
.tag.expiry { background: #fed7d7; }
.tag.group { background: #c6f6d5; }
code, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: .8rem; }
pre { background: #f7fafc; border: 1px solid #e2e8f0; padding: .4rem .6rem; margin: .2rem 0; white-space: pre-wrap;
      word-break: break-word; max-height: 24rem; overflow: auto; }
.error { color: #9b2c2c; }
pre.error { background: #fff5f5; border-color: #feb2b2; }
dl.params { margin: .2rem 0 .6rem; display: grid; grid-template-columns: max-content 1fr; gap: .15rem .8rem; }
dl.params dt { font-weight: 600; font-size: .85rem; }
dl.params dd { margin: 0; min-width: 0; }
details > summary { cursor: pointer; }
svg.chart text { font-size: 11px; fill: #4a5568; font-family: system-ui, sans-serif; }
svg.chart .axis { stroke: #718096; stroke-width: 1; }
svg.chart .grid { stroke: #e2e8f0; stroke-width: 1; }
nav ul { columns: 2; }
</style>
</head>
<body>
<header>
<h1>{{ title }}</h1>
<p class="muted">What a dry run would have done: nothing was executed. Written {{ generated }}.
{% if span %}Actions from {{ span }}.{% endif %}</p>
</header>

<section id="summary">
<h2>Summary</h2>
<table>
<tr><th>events read</th><td class="n">{{ events }}</td></tr>
{% for name, n in outcomes %}
<tr><th>{{ name }}</th><td class="n">{{ n }}</td></tr>
{% endfor %}
{% if late_processed %}<tr><th>late, processed</th><td class="n">{{ late_processed }}</td></tr>{% endif %}
<tr><th>actions planned</th><td class="n">{{ planned }}</td></tr>
</table>
{% if skipped %}
<h3>Skipped events, by reason</h3>
<table id="skipped">
{% for reason, n in skipped %}<tr><th>{{ reason }}</th><td class="n">{{ n }}</td></tr>
{% endfor %}
</table>
{% endif %}
{% if invalid %}
<h3>Invalid events, by reason</h3>
<table id="invalid">
{% for reason, n in invalid %}<tr><th>{{ reason }}</th><td class="n">{{ n }}</td></tr>
{% endfor %}
</table>
{% endif %}
{% if evictions %}
<h3>Memory caps reached</h3>
<table>
{% for cap, n in evictions %}<tr><th>{{ cap }}</th><td class="n">{{ n }}</td></tr>
{% endfor %}
</table>
{% endif %}
<h3>Rules</h3>
<table id="rules">
<tr><th>rule</th><th class="n">matched</th><th class="n">stale</th><th>actions</th><th>pending at the end</th></tr>
{% for rule in rules %}
<tr><td><a href="#{{ rule.anchor }}">{{ rule.name }}</a></td><td class="n">{{ rule.matched }}</td>
<td class="n">{{ rule.stale }}</td><td>{{ rule.actions | join("; ") }}</td><td>{{ rule.pending | join(", ") }}</td></tr>
{% endfor %}
</table>
</section>

{% for rule in rules %}
<section class="rule" id="{{ rule.anchor }}">
<h2>{{ rule.name }}</h2>
{% if rule.description %}<p>{{ rule.description }}</p>{% endif %}
<ul class="facts">
<li>matched <b>{{ rule.matched }}</b></li>
{% if rule.stale %}<li>stale {{ rule.stale }}</li>{% endif %}
{% for text in rule.occurrences %}<li>{{ text }}</li>{% endfor %}
{% for text in rule.actions %}<li>{{ text }}</li>{% endfor %}
{% for text in rule.memory %}<li>{{ text }}</li>{% endfor %}
{% if rule.pending %}<li class="pending">pending at the end: {{ rule.pending | join(", ") }}</li>{% endif %}
{% if rule.source %}<li class="muted">defined at {{ rule.source }}</li>{% endif %}
</ul>
{% set chart = rule.chart %}
{% if chart %}
<svg class="chart" role="img" width="{{ chart.width }}" height="{{ chart.height }}"
     viewBox="0 0 {{ chart.width }} {{ chart.height }}">
<title>{{ rule.name }}: {{ chart.y_title }} over time</title>
{% for tick in chart.y_ticks %}
<line class="grid" x1="{{ chart.left }}" x2="{{ chart.left + chart.plot_width }}" \
y1="{{ tick.at }}" y2="{{ tick.at }}"/>
<text x="{{ chart.left - 6 }}" y="{{ tick.at + 4 }}" text-anchor="end">{{ tick.text }}</text>
{% endfor %}
{% for bar in chart.bars %}
<rect class="bar" x="{{ bar.x }}" y="{{ bar.y }}" width="{{ bar.width }}" height="{{ bar.height }}" \
fill="{{ colour }}"><title>{{ bar.label }}</title></rect>
{% endfor %}
<line class="axis" x1="{{ chart.left }}" x2="{{ chart.left + chart.plot_width }}" \
y1="{{ chart.top + chart.plot_height }}" y2="{{ chart.top + chart.plot_height }}"/>
<line class="axis" x1="{{ chart.left }}" x2="{{ chart.left }}" y1="{{ chart.top }}" \
y2="{{ chart.top + chart.plot_height }}"/>
{% for tick in chart.x_ticks %}
<line class="axis" x1="{{ tick.at }}" x2="{{ tick.at }}" y1="{{ chart.top + chart.plot_height }}" \
y2="{{ chart.top + chart.plot_height + 4 }}"/>
<text x="{{ tick.at }}" y="{{ chart.top + chart.plot_height + 16 }}" text-anchor="middle">{{ tick.text }}</text>
{% endfor %}
<text x="{{ chart.left + chart.plot_width / 2 }}" y="{{ chart.height - 6 }}" text-anchor="middle">\
{{ chart.x_title }}</text>
<text x="12" y="{{ chart.top + chart.plot_height / 2 }}" text-anchor="middle" \
transform="rotate(-90 12 {{ chart.top + chart.plot_height / 2 }})">{{ chart.y_title }}</text>
</svg>
{% if chart.untimed %}<p class="muted">{{ chart.untimed }} without a time, not charted.</p>{% endif %}
{% endif %}
{% if rule.rows %}
<h3>{{ rule.noun | capitalize }}, with the actions it would have run</h3>
<table class="occurrences">
<tr><th>time</th><th>event</th><th>actions</th></tr>
{% for row in rule.rows %}
<tr class="occurrence {{ row.kind }}">
<td><code>{{ row.when }}</code>\
{% if row.kind != "event" %} <span class="tag {{ row.kind }}">{{ row.kind }}</span>{% endif %}
{% if row.late %} <span class="tag late">late</span>{% endif %}</td>
<td><div>{{ row.subject }}</div><div class="muted"><code>{{ row.event_id }}</code></div>
<div class="muted">{{ row.event_type }}</div>
<div class="muted">event time {{ row.event_time }}; partition / sequence {{ row.where }}</div>
{% for label, text in row.details %}<div><b>{{ label }}</b> {{ text }}</div>{% endfor %}</td>
<td>
{% for action in row.actions %}
<details{% if loop.first %} open{% endif %}>
<summary><b>{{ action.action_type }}</b> (action {{ action.action_index }}) <span class="muted">key \
<code>{{ action.idempotency_key }}</code></span></summary>
<dl class="params">
{% for param in action.params %}
<dt>{{ param.name }}</dt>
<dd>{% if param.block %}<pre{% if param.error %} class="error"{% endif %}>{{ param.text }}</pre>\
{% else %}<code{% if param.error %} class="error"{% endif %}>{{ param.text }}</code>{% endif %}</dd>
{% endfor %}
</dl>
{% if action.preview %}<div class="preview">{{ action.preview }}</div>{% endif %}
</details>
{% endfor %}
</td>
</tr>
{% endfor %}
</table>
{% if rule.unlisted %}<p class="muted">{{ rule.unlisted }} more, counted above, not listed.</p>{% endif %}
{% else %}
<p class="muted">It would have done nothing.</p>
{% endif %}
</section>
{% endfor %}
</body>
</html>
"""
    ).replace("</style>", CHAT_STYLE + "</style>", 1)
)
