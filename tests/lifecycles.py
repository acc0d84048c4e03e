"""Generated lifecycles of Azure ML runs and models, written as Event Hubs Capture files, and an oracle.

A scenario (:func:`generate`, seeded) holds what a workspace publishes over a day: runs that start
and then complete in time, complete late or never end (some report ``Running`` twice); models
registered and then deployed in time, late or never; bursts of failed runs across experiments; and
background events (runs queued) that move every partition's clock. Events land on 2 to 4 partitions
by a stable hash of their subject, at enqueued times equal to their event times, some delivered
twice. :func:`write_capture` writes one Capture file per partition and hour; :func:`write_rules`
the rules that remember what the scenario exercises (:data:`RULES`).

:func:`oracle` computes from the scenario alone, following the semantics of rules that remember as
written (not the worker's code), what a replay must do: every expiry and group notification per
partition, the counts, and what is still pending at the end. It also names the events that come
within :data:`MARGIN` of a deadline or due time they could decide, and those whose deadline or due
time comes within it of their partition's end: the generator drops them until there are none, so a
scenario's outcome never depends on the reorder window or on how a clock lags behind it.
"""

from __future__ import annotations

import random
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import groupby
from pathlib import Path
from typing import Any, Literal, NamedTuple

import orjson

from worker.events import Message, Position
from worker.replay.capture import write_capture as write_capture_file
from worker.sending.mlevents import (
    DEFAULT_TOPIC,
    MODEL_DEPLOYED,
    MODEL_REGISTERED,
    RUN_COMPLETED,
    RUN_STATUS_CHANGED,
)

#: Seconds: no event decides an expectation or a group this close to its deadline or due time, and
#: no partition ends this close to one.
MARGIN = 120.0
#: When generated scenarios start.
START = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)
#: Minutes: how long a generated scenario's busy part lasts; each partition ends a little after.
LENGTH = 14 * 60

RUN_STUCK = "run-stuck"
MODEL_NOT_DEPLOYED = "model-not-deployed"
FAILED_RUNS = "failed-runs"
#: The rules' durations, as written and in seconds.
RUN_WITHIN = ("3h", 3 * 3600.0)
MODEL_WITHIN = ("1h", 3600.0)
GROUP_WAIT = ("10m", 600.0)
GROUP_INTERVAL = ("30m", 1800.0)
#: The default cap of events listed in one notification (the ``max_group_events`` setting).
MAX_GROUP_EVENTS = 100

#: The key of the model rule, one template for both events: a registration carries the model's name
#: and version, a deployment ``modelIds`` (``name:version``).
MODEL_KEY = (
    "{% if data.modelIds is defined %}{{ data.modelIds }}"
    "{% else %}{{ data.modelName }}:{{ data.modelVersion }}{% endif %}"
)

#: The rules file; ACTIONS is replaced by the path of the file the ``file`` actions append to.
RULES = f"""\
rules:
  - name: {RUN_STUCK}
    description: A run that started and did not finish in time.
    filter:
      includedEventTypes: [{RUN_STATUS_CHANGED}]
      advancedFilters: [{{operatorType: StringIn, key: data.runStatus, values: [Running]}}]
    expect:
      within: {RUN_WITHIN[0]}
      filter:
        any:
          - includedEventTypes: [{RUN_COMPLETED}]
          - includedEventTypes: [{RUN_STATUS_CHANGED}]
            advancedFilters:
              - {{operatorType: StringIn, key: data.runStatus, values: [Completed, Failed, Canceled]}}
    actions:
      - {{type: file, path: ACTIONS}}
  - name: {MODEL_NOT_DEPLOYED}
    description: A registered model that no deployment used in time.
    filter: {{includedEventTypes: [{MODEL_REGISTERED}]}}
    expect:
      within: {MODEL_WITHIN[0]}
      key: "{MODEL_KEY}"
      filter: {{includedEventTypes: [{MODEL_DEPLOYED}]}}
    actions:
      - {{type: log, level: debug}}
      - {{type: file, path: ACTIONS}}
  - name: {FAILED_RUNS}
    description: Failed runs, one notification per experiment and interval.
    filter:
      includedEventTypes: [{RUN_STATUS_CHANGED}]
      advancedFilters: [{{operatorType: StringIn, key: data.runStatus, values: [Failed]}}]
    group: {{by: "{{{{ data.experimentName }}}}", wait: {GROUP_WAIT[0]}, interval: {GROUP_INTERVAL[0]}}}
    actions:
      - {{type: file, path: ACTIONS}}
"""

_EXPERIMENTS = ("churn-training", "fraud-detection", "demand-forecast", "automl-regression")
_BURSTING = ("image-segmentation", "fraud-detection", "pricing-elasticity")
#: The experiment of each partition's last failure, which leaves a group pending at its end.
_NIGHTLY = "nightly-evaluation"
_MODELS = ("churn-classifier", "fraud-scorer", "demand-forecaster", "sklearn-regression-model")
_RUN_TYPES = ("azureml.scriptrun", "automl", "azureml.PipelineRun")
_TARGETS = ("cpu-cluster", "gpu-cluster", "spark-pool")
_COMPUTE = ("aks", "aci", "managed")

Kind = Literal["expiry", "group"]
#: The statuses a run ends with.
_ENDED = ("Completed", "Failed", "Canceled")


# -- scenarios --------------------------------------------------------------------------------------


class Sent(NamedTuple):
    """One message of a partition: an event as Event Grid delivered it, at its enqueued time."""

    at: datetime
    event: dict[str, Any]
    #: Event Grid's ``aeg-delivery-count``: 0 on the first delivery, 1 on a re-delivery.
    delivery: int = 0

    @property
    def id(self) -> str:
        return str(self.event["id"])

    @property
    def time(self) -> datetime:
        """The event's own time (``eventTime``, to the microsecond)."""
        return datetime.fromisoformat(str(self.event["eventTime"])[:26]).replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Scenario:
    """Each partition's messages, in enqueued order (the order a replay reads them in)."""

    partitions: dict[str, tuple[Sent, ...]]

    def events(self) -> dict[str, Sent]:
        """Every event by id, at its first delivery."""
        found: dict[str, Sent] = {}
        for messages in self.partitions.values():
            for sent in messages:
                found.setdefault(sent.id, sent)
        return found


class Run(NamedTuple):
    experiment: str
    run_id: str

    @property
    def subject(self) -> str:
        return f"ExperimentRun/dcid.{self.run_id}"


def partition_of(subject: str, partitions: int) -> str:
    """The partition a subject's events land on: a stable hash of the subject."""
    return str(zlib.crc32(subject.encode()) % partitions)


def moment(minutes: float) -> datetime:
    """``minutes`` after :data:`START`, to the millisecond (what a Capture file keeps)."""
    return START + timedelta(milliseconds=round(minutes * 60_000))


class Builder:
    """Events placed on partitions by subject, each at its time; the scenario they make."""

    def __init__(self, partitions: int, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.partition_ids = tuple(str(i) for i in range(partitions))
        self._sent: list[tuple[str, Sent]] = []
        self._dropped: set[str] = set()

    def partition(self, subject: str) -> str:
        return partition_of(subject, len(self.partition_ids))

    def _id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def send(self, event: dict[str, Any], at: datetime, *, delivery: int = 0) -> dict[str, Any]:
        """Deliver ``event`` at ``at`` (its enqueued time) on its subject's partition."""
        self._sent.append((self.partition(str(event["subject"])), Sent(at, event, delivery)))
        return event

    def redeliver(self, event: dict[str, Any], at: datetime) -> None:
        """Deliver ``event`` again (the same id) at ``at``, as Event Grid does after a lost acknowledgement."""
        self.send(event, at, delivery=1)

    def sent(self) -> list[Sent]:
        """Every delivery so far, in the order they were made."""
        return [sent for _, sent in self._sent]

    def drop(self, event_id: str) -> None:
        """Leave the event out, every delivery of it."""
        self._dropped.add(event_id)

    def envelope(self, kind: str, subject: str, data: dict[str, Any], at: datetime) -> dict[str, Any]:
        return {
            "id": self._id(),
            "topic": DEFAULT_TOPIC,
            "subject": subject,
            "eventType": kind,
            "eventTime": at.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z",
            "data": data,
            "dataVersion": "2",
            "metadataVersion": "1",
        }

    def run(self, experiment: str, partition: str | None = None) -> Run:
        """A new run of ``experiment`` (on ``partition``, when given)."""
        while True:
            stamp = 1_790_000_000 + self.rng.randrange(10_000_000)
            run = Run(experiment, f"{experiment.replace('-', '_')}_{stamp}_{self.rng.getrandbits(32):08x}")
            if partition is None or self.partition(run.subject) == partition:
                return run

    def _run_data(self, run: Run) -> dict[str, Any]:
        experiment_id = str(uuid.uuid5(uuid.NAMESPACE_URL, run.experiment))
        return {
            "experimentId": experiment_id,
            "experimentName": run.experiment,
            "runId": run.run_id,
            "runType": _RUN_TYPES[zlib.crc32(run.run_id.encode()) % len(_RUN_TYPES)],
            "runTags": {"team": "ml-platform"},
            "runProperties": {"target": _TARGETS[zlib.crc32(run.subject.encode()) % len(_TARGETS)]},
        }

    def run_status(self, run: Run, status: str, at: datetime, *, enqueued: datetime | None = None) -> dict[str, Any]:
        """A run's status changed at ``at``; Event Hubs enqueued the event then, or at ``enqueued``."""
        data = {**self._run_data(run), "runStatus": status}
        return self.send(self.envelope(RUN_STATUS_CHANGED, run.subject, data, at), enqueued or at)

    def run_completed(self, run: Run, at: datetime) -> dict[str, Any]:
        return self.send(self.envelope(RUN_COMPLETED, run.subject, self._run_data(run), at), at)

    def model_registered(self, name: str, version: int, at: datetime) -> dict[str, Any]:
        data = {
            "modelName": name,
            "modelVersion": str(version),
            "modelTags": {"stage": "staging"},
            "modelProperties": {"accuracy": "0.91"},
        }
        return self.send(self.envelope(MODEL_REGISTERED, f"models/{name}:{version}", data, at), at)

    def service(self, name: str, partition: str | None = None) -> str:
        """An endpoint serving model ``name`` (whose events land on ``partition``, when given)."""
        while True:
            service = f"{name}-{self.rng.choice(_COMPUTE)}-{self.rng.randrange(100)}"
            if partition is None or self.partition(f"endpoints/{service}") == partition:
                return service

    def model_deployed(self, service: str, model_ids: str, at: datetime) -> dict[str, Any]:
        data = {
            "serviceName": service,
            "serviceComputeType": "AKS",
            "modelIds": model_ids,
            "serviceTags": {"stage": "staging"},
            "serviceProperties": {},
        }
        return self.send(self.envelope(MODEL_DEPLOYED, f"endpoints/{service}", data, at), at)

    def scenario(self) -> Scenario:
        partitions: dict[str, list[tuple[datetime, int, Sent]]] = {p: [] for p in self.partition_ids}
        for serial, (partition, sent) in enumerate(self._sent):
            if sent.id not in self._dropped:
                partitions[partition].append((sent.at, serial, sent))
        return Scenario({p: tuple(sent for _, _, sent in sorted(items)) for p, items in partitions.items()})


def generate(seed: int) -> Scenario:
    """The scenario of ``seed``: the same for the same seed, on every machine."""
    rng = random.Random(seed)
    builder = Builder(rng.choice((2, 3, 4)), seed)
    run_within, model_within = RUN_WITHIN[1] / 60, MODEL_WITHIN[1] / 60
    last = LENGTH - 5  # no busy event after this many minutes: each partition's end follows

    # Background: on every partition, runs are queued all day long (no rule acts on them).
    for partition in builder.partition_ids:
        minute = rng.uniform(0, 10)
        while minute < LENGTH:
            builder.run_status(builder.run(rng.choice(_EXPERIMENTS), partition), "Queued", moment(minute))
            minute += rng.uniform(4, 25)

    # Runs: started, then completed in time, late or never; some say Running twice.
    for _ in range(rng.randint(30, 45)):
        run = builder.run(rng.choice(_EXPERIMENTS))
        start = rng.uniform(10, last - 20)
        builder.run_status(run, "Queued", moment(start - rng.uniform(0.5, 6)))
        builder.run_status(run, "Running", moment(start))
        fate = rng.choices(("in time", "late", "never"), weights=(5, 2, 3))[0]
        end: float | None = None
        if fate == "in time":
            end = start + rng.uniform(3, run_within - 15)
        elif fate == "late":
            end = start + run_within + rng.uniform(10, 150)
        if end is not None and end > last:
            end = None
        if rng.random() < 0.2:
            before = min(end if end is not None else last, start + run_within) - 10
            if before > start + 2:
                builder.run_status(run, "Running", moment(rng.uniform(start + 1, before)))
        if end is not None:
            _finish(builder, rng, run, end)

    # Models: registered, then deployed in time, late or never; a deployment is mostly on the
    # registration's partition (elsewhere it fulfils nothing: expectations are per partition).
    versions: Counter[str] = Counter({name: rng.randint(10, 30) for name in _MODELS})
    for _ in range(rng.randint(10, 16)):
        name = rng.choice(_MODELS)
        versions[name] += 1
        start = rng.uniform(10, last - 20)
        registered = builder.model_registered(name, versions[name], moment(start))
        fate = rng.choices(("in time", "late", "never"), weights=(5, 2, 3))[0]
        if fate != "never":
            at = start + (rng.uniform(2, model_within - 10) if fate == "in time" else model_within + rng.uniform(5, 90))
            if at < last:
                home = builder.partition(str(registered["subject"]))
                service = builder.service(name, home if rng.random() < 0.8 else None)
                builder.model_deployed(service, f"{name}:{versions[name]}", moment(at))
    for _ in range(rng.randint(2, 5)):  # models registered before the day began
        name = rng.choice(_MODELS)
        builder.model_deployed(builder.service(name), f"{name}:{rng.randint(1, 9)}", moment(rng.uniform(5, last)))

    # Bursts of failures: runs of an experiment failing a few minutes apart, for an hour or two.
    for experiment in rng.sample(_BURSTING, k=rng.randint(2, 3)):
        for _ in range(rng.randint(1, 2)):
            minute = rng.uniform(45, last - 200)
            stop = minute + rng.uniform(40, 150)
            while minute < stop:
                run = builder.run(experiment)
                builder.run_status(run, "Running", moment(minute - rng.uniform(2, 40)))
                builder.run_status(run, "Failed", moment(minute))
                minute += rng.uniform(1, 12)

    # Each partition's end: a run still running, a failure not yet notified, then the last event.
    for partition in builder.partition_ids:
        builder.run_status(
            builder.run(rng.choice(_EXPERIMENTS), partition), "Running", moment(last - rng.uniform(20, 150))
        )
        run = builder.run(_NIGHTLY, partition)
        builder.run_status(run, "Running", moment(last - rng.uniform(20, 60)))
        builder.run_status(run, "Failed", moment(last - rng.uniform(0, 1)))
        builder.run_status(
            builder.run(rng.choice(_EXPERIMENTS), partition), "Queued", moment(LENGTH + rng.uniform(0, 1))
        )

    # Re-deliveries: Event Grid delivers about 4% of the events twice, seconds apart.
    for sent in builder.sent():
        if rng.random() < 0.04:
            builder.redeliver(sent.event, sent.at + timedelta(milliseconds=rng.randint(500, 20_000)))

    return settle(builder)


def _finish(builder: Builder, rng: random.Random, run: Run, minute: float) -> None:
    """The events that end a run, as Azure ML publishes them."""
    ending = rng.choice(("completed", "both", "failed", "canceled"))
    at = moment(minute)
    if ending == "completed":
        builder.run_completed(run, at)
    elif ending == "both":
        builder.run_status(run, "Completed", at)
        builder.run_completed(run, at + timedelta(seconds=rng.uniform(0.2, 3)))
    else:
        builder.run_status(run, ending.capitalize(), at)


def settle(builder: Builder, *, tries: int = 200) -> Scenario:
    """The builder's scenario with nothing within :data:`MARGIN` of a time it could decide: the events
    too close to one are dropped, and so are the events whose deadline or due time is too close to
    their partition's end."""
    for _ in range(tries):
        scenario = builder.scenario()
        tight = oracle(scenario).tight
        if not tight:
            return scenario
        for _, event_id in tight:
            builder.drop(event_id)
    raise AssertionError(f"the scenario does not settle in {tries} tries")


# -- writing ----------------------------------------------------------------------------------------


def write_capture(scenario: Scenario, root: Path) -> list[Path]:
    """One Capture file per partition and hour under ``root`` (``ns/hub/{partition}/Y/m/d/H/M/S.avro``),
    sequence numbers and offsets running on across a partition's files; the files, in order."""
    paths: list[Path] = []
    for partition, messages in scenario.partitions.items():
        sequence = offset = 0
        for hour, sent in groupby(messages, key=lambda s: s.at.replace(minute=0, second=0, microsecond=0)):
            path = root / "ns" / "hub" / partition / hour.strftime("%Y/%m/%d/%H/%M/%S.avro")
            path.parent.mkdir(parents=True, exist_ok=True)
            records: list[Message] = []
            for item in sent:
                body = orjson.dumps([item.event])
                records.append(Message(body, Position(partition, str(offset), sequence, item.at), _properties(item)))
                sequence += 1
                offset += len(body) + 100
            with path.open("wb") as stream:
                write_capture_file(stream, records)
            paths.append(path)
    return paths


def _properties(sent: Sent) -> dict[str, object]:
    return {
        "aeg-subscription-name": "ML-EVENTS-TO-HUB",
        "aeg-delivery-count": str(sent.delivery),
        "aeg-event-type": "Notification",
        "aeg-metadata-version": "1",
        "aeg-data-version": "2",
        "aeg-output-event-id": sent.id,
    }


def write_rules(path: Path, actions: Path) -> Path:
    """:data:`RULES` at ``path``, its ``file`` actions appending to ``actions``."""
    path.write_text(RULES.replace("ACTIONS", str(actions)))
    return path


# -- the oracle -------------------------------------------------------------------------------------

Predicate = Callable[[Mapping[str, Any]], bool]
KeyOf = Callable[[Mapping[str, Any]], str]


class ExpectRule(NamedTuple):
    name: str
    within: float
    starts: Predicate
    fulfils: Predicate
    key: KeyOf
    #: The index of the rule's ``file`` action.
    action_index: int


class GroupRule(NamedTuple):
    name: str
    wait: float
    interval: float
    joins: Predicate
    key: KeyOf
    action_index: int


def _is(event: Mapping[str, Any], kind: str) -> bool:
    return str(event.get("eventType", "")).casefold() == kind.casefold()


def _status(event: Mapping[str, Any], *statuses: str) -> bool:
    data = event.get("data")
    status = data.get("runStatus") if isinstance(data, Mapping) else None
    return isinstance(status, str) and status.casefold() in {s.casefold() for s in statuses}


def _model_key(event: Mapping[str, Any]) -> str:
    data = event["data"]
    return str(data["modelIds"]) if "modelIds" in data else f"{data['modelName']}:{data['modelVersion']}"


#: :data:`RULES`, read by hand: what each rule starts, fulfils, joins, and its keys.
EXPECT_RULES = (
    ExpectRule(
        RUN_STUCK,
        RUN_WITHIN[1],
        lambda e: _is(e, RUN_STATUS_CHANGED) and _status(e, "Running"),
        lambda e: _is(e, RUN_COMPLETED) or (_is(e, RUN_STATUS_CHANGED) and _status(e, *_ENDED)),
        lambda e: str(e["subject"]),
        0,
    ),
    ExpectRule(
        MODEL_NOT_DEPLOYED,
        MODEL_WITHIN[1],
        lambda e: _is(e, MODEL_REGISTERED),
        lambda e: _is(e, MODEL_DEPLOYED),
        _model_key,
        1,
    ),
)
GROUP_RULES = (
    GroupRule(
        FAILED_RUNS,
        GROUP_WAIT[1],
        GROUP_INTERVAL[1],
        lambda e: _is(e, RUN_STATUS_CHANGED) and _status(e, "Failed"),
        lambda e: str(e["data"]["experimentName"]),
        0,
    ),
)


class Fired(NamedTuple):
    """One expiry or group notification: what its ``file`` action line says."""

    partition: str
    rule: str
    kind: Kind
    key: str
    #: The expectation's starting event, or the notification's first event.
    event_id: str
    #: A notification's listed events, in order (an expiry: none).
    event_ids: tuple[str, ...] = ()
    #: A notification's events, the unlisted ones too (an expiry: 0).
    total: int = 0


class Tight(NamedTuple):
    """An event within :data:`MARGIN` of a time it decides, or that set a time within it of its
    partition's end."""

    partition: str
    event_id: str


@dataclass
class Outcome:
    """What a replay of a scenario must come to."""

    #: In firing order, partition by partition.
    fired: list[Fired] = field(default_factory=list)
    #: Due times of what fired, by (partition, rule, key, event id).
    due: dict[tuple[str, str, str, str], float] = field(default_factory=dict)
    #: (rule, kind) -> expectations or groups left at the end.
    pending: Counter[tuple[str, str]] = field(default_factory=Counter)
    pending_by_partition: Counter[str] = field(default_factory=Counter)
    #: Groups that notified and wait for their next due time with no event yet (not pending: they
    #: have nothing to notify).
    idle_groups: Counter[str] = field(default_factory=Counter)
    started: Counter[str] = field(default_factory=Counter)
    fulfilled: Counter[str] = field(default_factory=Counter)
    #: Starting events that came while their key's expectation was pending (no second one, same deadline).
    restarts: Counter[str] = field(default_factory=Counter)
    expired: Counter[str] = field(default_factory=Counter)
    joined: Counter[str] = field(default_factory=Counter)
    notified: Counter[str] = field(default_factory=Counter)
    #: Events counted in notifications but not listed (past the cap).
    unlisted: int = 0
    duplicates: int = 0
    #: Expectations fulfilled by an event of a later hour (a later Capture file) than their start.
    fulfilled_across_files: int = 0
    tight: list[Tight] = field(default_factory=list)


@dataclass
class _Group:
    due: float
    #: The group's first event, whose time its due times follow from.
    origin: Sent
    events: list[Sent] = field(default_factory=list)
    count: int = 0


def oracle(
    scenario: Scenario,
    *,
    expects: tuple[ExpectRule, ...] = EXPECT_RULES,
    groups: tuple[GroupRule, ...] = GROUP_RULES,
    cap: int = MAX_GROUP_EVENTS,
) -> Outcome:
    """What a replay of ``scenario`` must do, partition by partition, by the semantics alone.

    A partition's clock is the latest enqueued time of its events so far (a re-delivery of an id
    already seen is a duplicate: skipped, not counted). Before an event at time t is processed,
    everything due at or before t fires, in due order: an expectation whose deadline came (an
    expiry), a group whose due time came (a notification of the events that joined since the
    previous one, or the group's end when none did). Then the event fulfils the expectations whose
    key it carries, starts one unless one is pending for its key, and joins its group (a new group
    is due ``wait`` after its first event, the next notification ``interval`` after the previous).
    At the end, what is not due yet is pending.
    """
    out = Outcome()
    for partition, messages in scenario.partitions.items():
        _partition(partition, messages, expects, groups, cap, out)
    return out


def _partition(
    partition: str,
    messages: tuple[Sent, ...],
    expects: tuple[ExpectRule, ...],
    groups: tuple[GroupRule, ...],
    cap: int,
    out: Outcome,
) -> None:
    seen: set[str] = set()
    waiting: dict[tuple[str, str], tuple[float, Sent]] = {}  # (rule, key) -> (deadline, starting event)
    open_groups: dict[tuple[str, str], _Group] = {}
    # (rule, key) -> the latest deadline or due time passed, and the event that set it
    passed: dict[tuple[str, str], tuple[float, Sent]] = {}
    clock = float("-inf")

    def next_due() -> tuple[float, int, str, str] | None:
        times = [(deadline, 0, rule, key) for (rule, key), (deadline, _) in waiting.items()]
        times += [(group.due, 1, rule, key) for (rule, key), group in open_groups.items()]
        return min(times, default=None)

    def fire_until(now: float) -> None:
        while (due := next_due()) is not None and due[0] <= now:
            at, kind, rule, key = due
            if kind == 0:
                _, start = waiting.pop((rule, key))
                passed[rule, key] = (at, start)
                out.fired.append(Fired(partition, rule, "expiry", key, start.id))
                out.due[partition, rule, key, start.id] = at
                out.expired[rule] += 1
                continue
            group = open_groups[rule, key]
            passed[rule, key] = (at, group.origin)
            if not group.events:
                del open_groups[rule, key]  # nothing joined since the last notification: the group ends
                continue
            listed = tuple(sent.id for sent in group.events)
            out.fired.append(Fired(partition, rule, "group", key, listed[0], listed, group.count))
            out.due[partition, rule, key, listed[0]] = at
            out.notified[rule] += 1
            out.unlisted += group.count - len(listed)
            group.due, group.events, group.count = at + _interval(groups, rule), [], 0

    def near(rule: str, key: str, now: float, ahead: float | None) -> bool:
        behind = passed.get((rule, key))
        return (behind is not None and now - behind[0] < MARGIN) or (ahead is not None and ahead - now < MARGIN)

    for sent in messages:
        if sent.id in seen:
            out.duplicates += 1
            continue
        seen.add(sent.id)
        now = sent.at.timestamp()
        fire_until(now)
        clock = max(clock, now)
        event = sent.event
        tight = False
        for rule in expects:
            fulfils, starts = rule.fulfils(event), rule.starts(event)
            if not (fulfils or starts):
                continue
            key = rule.key(event)
            pending = waiting.get((rule.name, key))
            tight |= near(rule.name, key, now, None if pending is None else pending[0])
            if fulfils and pending is not None:
                del waiting[rule.name, key]
                out.fulfilled[rule.name] += 1
                if pending[1].at.replace(minute=0, second=0, microsecond=0) != sent.at.replace(
                    minute=0, second=0, microsecond=0
                ):
                    out.fulfilled_across_files += 1
            if starts and (rule.name, key) in waiting:
                out.restarts[rule.name] += 1
            elif starts:
                out.started[rule.name] += 1
                waiting[rule.name, key] = (now + rule.within, sent)
        for group_rule in groups:
            if not group_rule.joins(event):
                continue
            key = group_rule.key(event)
            group = open_groups.get((group_rule.name, key))
            tight |= near(group_rule.name, key, now, None if group is None else group.due)
            if group is None:
                group = open_groups[group_rule.name, key] = _Group(now + group_rule.wait, sent)
            if len(group.events) < cap:
                group.events.append(sent)
            group.count += 1
            out.joined[group_rule.name] += 1
        if tight:
            out.tight.append(Tight(partition, sent.id))

    # The end: the partition's clock stays where its last event put it.
    ends = [*waiting.values(), *((group.due, group.origin) for group in open_groups.values()), *passed.values()]
    out.tight += [Tight(partition, origin.id) for at, origin in ends if abs(at - clock) < MARGIN]
    for name, _ in waiting:
        out.pending[name, "expiry"] += 1
        out.pending_by_partition[partition] += 1
    for (name, _), group in open_groups.items():
        if group.events:
            out.pending[name, "group"] += 1
            out.pending_by_partition[partition] += 1
        else:
            out.idle_groups[name] += 1


def _interval(groups: tuple[GroupRule, ...], name: str) -> float:
    return next(rule.interval for rule in groups if rule.name == name)


def fired_of_lines(lines: list[dict[str, Any]]) -> Iterator[Fired]:
    """The expiries and notifications that ``file`` action lines report."""
    for line in lines:
        partition, rule, event_id = str(line["partition_id"]), str(line["rule"]), str(line["event_id"])
        if line.get("expired") is True:
            yield Fired(partition, rule, "expiry", str(line["expectation_key"]), event_id)
        elif "group" in line:
            ids = tuple(str(i) for i in line["event_ids"])
            yield Fired(partition, rule, "group", str(line["group"]), event_id, ids, int(line["count"]))
        else:
            raise AssertionError(f"a line that is neither an expiry nor a notification: {line}")
