"""What a chat notification says, for any Azure ML event. Pure.

A title that says what happened, the facts that matter for its type, the workspace, the time and a
link to Azure ML studio.

One event gives one :class:`Notice`; a group's notification (``group``) a digest of its events, the
first ``listed`` of them as items and the rest counted; an expiry (``expect``) what did not happen,
and by when. The cards and blocks lay a notice out; a rule's ``title``, ``text`` and ``facts``
replace those parts of it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from worker.actions.base import PlannedAction
from worker.actions.chat.studio import Link, studio_link, workspace_of
from worker.keys import MISSING, member

_PREFIX: Final = "Microsoft.MachineLearningServices."
#: The run tag Azure ML's model monitoring sets when a signal breaches its threshold, and the monitor's name.
BREACH_TAG: Final = "azureml_modelmonitor_threshold_breached"
MONITOR_TAG: Final = "azureml_modelmonitor_name"
#: Tags and properties shown, at most, in one fact.
_MAPPING_ITEMS: Final = 8


class Tone(enum.StrEnum):
    """How a notice should strike the reader: its accent colour."""

    ATTENTION = "attention"  # failed, breached
    WARNING = "warning"  # canceled, drifted, did not happen
    GOOD = "good"  # completed, registered, deployed
    ACCENT = "accent"  # anything else


@dataclass(frozen=True, slots=True)
class Fact:
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class Item:
    """One event listed in a digest."""

    title: str
    time: str | None
    link: Link | None


@dataclass(frozen=True, slots=True)
class Notice:
    title: str
    tone: Tone
    facts: tuple[Fact, ...]
    #: The workspace's name and resource group; None for a topic that is no Azure ML workspace.
    workspace: str | None
    #: When it happened, as shown (``2026-12-07 14:03:12 UTC``).
    time: str | None
    link: Link | None
    #: A line under the title.
    text: str | None = None
    #: A digest's events, and how many more it had.
    items: tuple[Item, ...] = ()
    more: int = 0


@dataclass(frozen=True, slots=True)
class _Seen:
    """An event as its envelope has it, in either schema."""

    id: str
    type: str
    subject: str | None
    topic: str | None
    time: str | None
    data: Mapping[str, object]

    @classmethod
    def of(cls, envelope: Mapping[str, object]) -> _Seen:
        def text(*names: str) -> str | None:
            for name in names:
                value = envelope.get(name)
                if isinstance(value, str):
                    return value
            return None

        data = envelope.get("data")
        return cls(
            text("id") or "",
            text("eventType", "type") or "",
            text("subject"),
            text("topic", "source"),
            shown_time(text("eventTime", "time")),
            data if isinstance(data, Mapping) else {},
        )

    def get(self, name: str) -> str | None:
        """A member of ``data`` as text (found as filter keys find it, ignoring case); None when absent."""
        value = member(self.data, name)
        if value is MISSING or value is None or isinstance(value, Mapping | list):
            return None
        return str(value)

    def mapping(self, name: str) -> str | None:
        """A member of ``data`` that is an object (tags, properties), as ``key=value, ...``."""
        value = member(self.data, name)
        if not isinstance(value, Mapping) or not value:
            return None
        shown = [f"{key}={item}" for key, item in list(value.items())[:_MAPPING_ITEMS]]
        more = len(value) - _MAPPING_ITEMS
        return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def notice(action: PlannedAction, studio: str, *, listed: int = 10) -> Notice:
    """The notice for a planned action: its event's, a group's digest, or an expiry's. ``studio``: the
    Azure ML studio host links go to."""
    memo = action.memo
    if memo is None:
        return event_notice(action.event.envelope, studio)
    context = memo.template_context()
    events = [_Seen.of(e) for e in _envelopes(context.get("events"))]
    if memo.kind == "group":
        return _digest(events, _mapping(context.get("group")), studio, listed)
    return _expiry(
        action.rule,
        events[0] if events else _Seen.of(action.event.envelope),
        _mapping(context.get("expectation")),
        studio,
    )


def event_notice(envelope: Mapping[str, object], studio: str) -> Notice:
    """The notice for one event."""
    seen = _Seen.of(envelope)
    title, tone, facts = _about(seen)
    return Notice(title, tone, facts, _workspace(seen.topic), seen.time, studio_link(studio, seen.topic, seen.subject))


def _about(seen: _Seen) -> tuple[str, Tone, tuple[Fact, ...]]:
    """The title, tone and facts of one event, by its type."""
    kind = seen.type.removeprefix(_PREFIX)
    if kind in ("RunCompleted", "RunStatusChanged"):
        return _run(seen, kind)
    if kind == "ModelRegistered":
        name, version = seen.get("modelName") or "?", seen.get("modelVersion") or "?"
        facts = _facts(
            ("Model", name),
            ("Version", version),
            ("Tags", seen.mapping("modelTags")),
            ("Properties", seen.mapping("modelProperties")),
        )
        return f"Model {name} version {version} registered", Tone.GOOD, facts
    if kind == "ModelDeployed":
        service, models = seen.get("serviceName") or _last(seen.subject), seen.get("modelIds")
        facts = _facts(
            ("Endpoint", service),
            ("Compute", seen.get("serviceComputeType")),
            ("Models", models),
            ("Tags", seen.mapping("serviceTags")),
        )
        return f"{models or 'A model'} deployed to {service}", Tone.GOOD, facts
    if kind == "DatasetDriftDetected":
        monitor = seen.get("dataDriftName") or seen.get("dataDriftId") or "a monitor"
        start, end = seen.get("startTime"), seen.get("endTime")
        facts = _facts(
            ("Monitor", monitor),
            ("Drift coefficient", seen.get("driftCoefficient")),
            ("Window", f"{shown_time(start)} to {shown_time(end)}" if start and end else None),
            ("Baseline dataset", seen.get("baseDatasetId")),
            ("Target dataset", seen.get("targetDatasetId")),
        )
        return f"Data drift detected by {monitor}", Tone.WARNING, facts
    return (
        f"{kind or 'Event'}: {seen.subject or seen.id}",
        Tone.ACCENT,
        _facts(("Event type", seen.type), ("Subject", seen.subject)),
    )


def _run(seen: _Seen, kind: str) -> tuple[str, Tone, tuple[Fact, ...]]:
    run = seen.get("runId") or _last(seen.subject)
    status = "Completed" if kind == "RunCompleted" else (seen.get("runStatus") or "changed")
    tags = member(seen.data, "runTags")
    breach = member(tags, BREACH_TAG) if isinstance(tags, Mapping) else MISSING
    experiment = seen.get("experimentName")
    if breach is not MISSING:
        monitor = member(tags, MONITOR_TAG) if isinstance(tags, Mapping) else MISSING
        name = str(monitor) if monitor is not MISSING else experiment or run
        facts = _facts(("Monitor", name), ("Signal", str(breach)), ("Run", run), ("Experiment", experiment))
        return f"Monitor {name} breached its threshold", Tone.ATTENTION, facts
    title, tone = {
        "Failed": (f"Run {run} failed", Tone.ATTENTION),
        "Canceled": (f"Run {run} was canceled", Tone.WARNING),
        "Completed": (f"Run {run} completed", Tone.GOOD),
    }.get(status, (f"Run {run} is {status}", Tone.ACCENT))
    facts = _facts(
        ("Experiment", experiment),
        ("Run", run),
        ("Status", status),
        ("Run type", seen.get("runType")),
        ("Tags", seen.mapping("runTags")),
    )
    return title, tone, facts


def _plural(seen: _Seen, title: str) -> str:
    """What a digest of events of this one's kind (its title: ``title``) counts (``12 runs failed``)."""
    kind = seen.type.removeprefix(_PREFIX)
    if title.startswith("Monitor "):
        return "monitor breaches"
    if kind in ("RunCompleted", "RunStatusChanged"):
        status = "Completed" if kind == "RunCompleted" else (seen.get("runStatus") or "changed")
        return {"Failed": "runs failed", "Canceled": "runs canceled", "Completed": "runs completed"}.get(
            status, "run status changes"
        )
    return {
        "ModelRegistered": "models registered",
        "ModelDeployed": "models deployed",
        "DatasetDriftDetected": "data drift alerts",
    }.get(kind, "events")


def _digest(events: Sequence[_Seen], group: Mapping[str, object], studio: str, listed: int) -> Notice:
    count = group.get("count")
    total = count if isinstance(count, int) else len(events)
    about = [_about(seen) for seen in events]
    kinds = {_plural(seen, heading) for seen, (heading, _, _) in zip(events, about, strict=True)}
    title = f"{total} {kinds.pop() if len(kinds) == 1 else 'events'}"
    items = tuple(
        Item(heading, seen.time, studio_link(studio, seen.topic, seen.subject))
        for seen, (heading, _, _) in zip(events[: max(listed, 0)], about, strict=False)
    )
    tones = {tone for _, tone, _ in about}
    tone = next((t for t in (Tone.ATTENTION, Tone.WARNING, Tone.GOOD) if t in tones), Tone.ACCENT)
    first, last = shown_time(_text(group.get("first"))), shown_time(_text(group.get("last")))
    topics = {seen.topic for seen in events}
    topic = topics.pop() if len(topics) == 1 else None
    facts = _facts(("Group", _text(group.get("key"))), ("Events", str(total)), ("First", first), ("Last", last))
    link = studio_link(studio, topic, None) if topic else None
    return Notice(title, tone, facts, _workspace(topic), last, link, items=items, more=max(total - len(items), 0))


def _expiry(rule: str, started: _Seen, expectation: Mapping[str, object], studio: str) -> Notice:
    key, within = _text(expectation.get("key")) or "?", _text(expectation.get("within")) or "?"
    deadline = shown_time(_text(expectation.get("deadline")))
    cause = _about(started)[0]
    facts = _facts(("Rule", rule), ("Waiting for", key), ("Deadline", deadline), ("Started by", cause))
    text = f"Rule {rule} expected an event for {key} within {within} of: {cause}. None came by {deadline}."
    return Notice(
        f"Nothing came for {key} within {within}",
        Tone.WARNING,
        facts,
        _workspace(started.topic),
        None,  # the deadline is its time: a fact already
        studio_link(studio, started.topic, started.subject),
        text=text,
    )


def shown_time(text: str | None) -> str | None:
    """An ISO 8601 time as a notification shows it (``2026-12-07 14:03:12 UTC``); text that is not one, as it is."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _workspace(topic: str | None) -> str | None:
    workspace = workspace_of(topic)
    return None if workspace is None else f"{workspace.name} (resource group {workspace.resource_group})"


def _facts(*pairs: tuple[str, str | None]) -> tuple[Fact, ...]:
    return tuple(Fact(name, value) for name, value in pairs if value)


def _last(subject: str | None) -> str:
    return (subject or "?").rstrip("/").rpartition("/")[2]


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _mapping(value: object) -> Mapping[str, object]:
    return value if isinstance(value, Mapping) else {}


def _envelopes(value: object) -> list[Mapping[str, object]]:
    return [e for e in value if isinstance(e, Mapping)] if isinstance(value, list) else []
