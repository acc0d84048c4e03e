"""Prometheus metrics of the live worker, read from its partitions when scraped.

The hot path keeps plain counters (the partitions' :class:`~worker.core.accounting.Tally`); this
collector turns them into metric families at scrape time, so that counting costs nothing extra.
Action attempts and their latency are observed as they happen, by :class:`ActionMetrics`.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import accumulate
from typing import Protocol

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from worker.core.accounting import Tally
from worker.live.handoff import ActionCounts, PartitionStatus
from worker.masking import MASKER

PREFIX = "azml_worker"


@dataclass(frozen=True, slots=True)
class PartitionGauges:
    """What one owned partition reports at a scrape: its pipeline's status, and its receiver's lag and
    messages received since the partition was claimed."""

    status: PartitionStatus
    lag: int | None
    received: int = 0
    #: Claimed and not yet acting on what it reads (see :mod:`worker.live.claims`).
    settling: bool = False


class WorkerView(Protocol):
    """What the collector reads from the worker."""

    #: The event hub's partitions (0 until the hub has answered).
    partition_count: int

    def tally(self) -> Tally:
        """The counts of every partition, owned now or before."""
        ...

    def partitions(self) -> Iterable[PartitionGauges]: ...


class WorkerCollector(Collector):
    def __init__(self, view: WorkerView) -> None:
        self._view = view

    def collect(self) -> Iterator[Metric]:
        tally = self._view.tally()
        events = CounterMetricFamily(
            f"{PREFIX}_events", "Events read, by outcome and event type", labels=["outcome", "event_type"]
        )
        by_type: Counter[tuple[str, str]] = Counter()
        for (_, event_type, fate), n in tally.counts.items():
            by_type[fate.value, event_type] += n
        for (outcome, event_type), n in sorted(by_type.items()):
            events.add_metric(_labels((outcome, event_type)), n)
        yield events
        yield _counter("events_read", "Events read", [], [((), tally.read)])
        yield _counter(
            "events_skipped",
            "Skipped events, by reason",
            ["reason"],
            [((r.value,), n) for r, n in tally.skipped.items()],
        )
        yield _counter(
            "events_invalid", "Invalid events, by reason", ["reason"], [((r,), n) for r, n in tally.invalid.items()]
        )
        yield _counter(
            "rule_matches", "Events each rule matched", ["rule"], [((r,), n) for r, n in tally.rule_matches.items()]
        )
        yield _counter(
            "rule_stale",
            "Events each rule matched but did not act on, being older than its max_age",
            ["rule"],
            [((r,), n) for r, n in tally.rule_stale.items()],
        )
        yield from _remembering(tally)
        yield _counter(
            "actions",
            "Actions finished, by rule, action type and fate (done, dead_lettered, or planned in a dry run)",
            ["rule", "action_type", "fate"],
            [((rule, kind, fate.value), n) for (rule, kind, fate), n in tally.actions.items()],
        )
        yield _counter(
            "evictions",
            "Memory caps reached: events released early and subjects or ids forgotten",
            ["cap"],
            [((cap,), n) for cap, n in tally.evictions.items()],
        )
        partitions = sorted(self._view.partitions(), key=lambda p: p.status.partition_id)
        yield _gauge("partitions_owned", "Partitions this worker owns", [], [((), len(partitions))])
        yield _gauge(
            "hub_partitions",
            "The event hub's partitions, which the workers of the consumer group share (0 until it answers)",
            [],
            [((), self._view.partition_count)],
        )
        yield _gauge(
            "partitions_settling",
            "Partitions claimed here and holding what they read until a steal by a peer is no longer expected",
            [],
            [((), sum(p.settling for p in partitions))],
        )
        yield _gauge(
            "reorder_buffered",
            "Events held in the reorder buffer",
            ["partition"],
            [((p.status.partition_id,), p.status.buffered) for p in partitions],
        )
        yield _gauge(
            "open_messages",
            "Messages read and not yet behind the checkpoint",
            ["partition"],
            [((p.status.partition_id,), p.status.open_messages) for p in partitions],
        )
        yield _gauge(
            "checkpoint_age_seconds",
            "Seconds since the partition's checkpoint was last written",
            ["partition"],
            [((p.status.partition_id,), p.status.checkpoint_age) for p in partitions],
        )
        yield _counter(
            "checkpoint_writes",
            "Checkpoints written",
            ["partition"],
            [((p.status.partition_id,), p.status.checkpoint_writes) for p in partitions],
        )
        yield _counter(
            "checkpoint_failures",
            "Checkpoint writes that failed (retried at the next interval)",
            ["partition"],
            [((p.status.partition_id,), p.status.checkpoint_failures) for p in partitions],
        )
        yield _counter(
            "messages_received",
            "Messages received from the hub and handed to the pipeline since the partition was claimed",
            ["partition"],
            [((p.status.partition_id,), p.received) for p in partitions],
        )
        yield _gauge(
            "partition_lag",
            "Events enqueued after the last one delivered, from the hub's partition properties "
            "(read at least every 30 s)",
            ["partition"],
            [((p.status.partition_id,), p.lag) for p in partitions if p.lag is not None],
        )


def _remembering(tally: Tally) -> Iterator[Metric]:
    """The families of rules that remember (``expect``, ``group``): what their memory took in, let
    go and acted on, per rule, and what it holds now."""

    def per_rule(counts: Counter[str]) -> list[tuple[tuple[str, ...], float]]:
        return [((rule,), n) for rule, n in counts.items()]

    yield _counter(
        "expectations_started",
        "Expectations each rule started: a matched event, with none pending for its key",
        ["rule"],
        per_rule(tally.expect_started),
    )
    yield _counter(
        "expectations_fulfilled",
        "Expectations each rule saw fulfilled: the expected event came in time",
        ["rule"],
        per_rule(tally.expect_fulfilled),
    )
    yield _counter(
        "expectations_expired",
        "Expectations each rule saw expire, its actions running: the expected event did not come in time",
        ["rule"],
        per_rule(tally.expect_expired),
    )
    yield _counter("group_events", "Events that joined each rule's groups", ["rule"], per_rule(tally.group_joined))
    yield _counter(
        "group_notifications",
        "Group notifications of each rule: its actions ran once for the events that joined a group",
        ["rule"],
        per_rule(tally.group_notified),
    )
    yield _counter(
        "rule_key_failures",
        "Events whose key (expect.key, group.by) did not render, by rule: they neither started, "
        "fulfilled nor joined anything",
        ["rule"],
        per_rule(tally.key_failed),
    )
    # A rule that remembered something here shows 0 when nothing is left, rather than no sample.
    pending: Counter[tuple[str, str]] = Counter({(rule, "expect"): 0 for rule in tally.expect_started})
    pending.update({(rule, "group"): 0 for rule in tally.group_joined})
    pending.update(tally.pending)
    yield _gauge(
        "pending",
        "Expectations waiting (kind expect) and groups holding events not yet notified (kind group), by rule",
        ["rule", "kind"],
        pending.items(),
    )


def _labels(values: Iterable[str]) -> list[str]:
    """Label values as shown: masked (an event type or a rule name comes from outside)."""
    return [MASKER.mask(value) for value in values]


def _counter(name: str, doc: str, labels: list[str], samples: Iterable[tuple[tuple[str, ...], float]]) -> Metric:
    family = CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)
    for values, n in sorted(samples):
        family.add_metric(_labels(values), n)
    return family


def _gauge(name: str, doc: str, labels: list[str], samples: Iterable[tuple[tuple[str, ...], float]]) -> Metric:
    family = GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)
    for values, n in sorted(samples):
        family.add_metric(_labels(values), n)
    return family


#: Upper bounds of the action latency histogram's buckets, in seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ActionMetrics(Collector):
    """Action attempts as they happen: count, failures and latency by action type.

    Plain counts on the hot path, turned into metric families when scraped; a worker whose pipeline
    runs in a child process shows the child's counts, taken with :meth:`counts` and :meth:`load`.
    """

    def __init__(self) -> None:
        self._attempts: Counter[tuple[str, str]] = Counter()
        self._latency: dict[str, list[float]] = {}
        self._dead_letter_failures: Counter[str] = Counter()
        #: When each attempt under way started, by action type (``time.monotonic()``).
        self._running: dict[str, list[float]] = {}
        #: Shown instead, when the actions run in another process: its attempts under way.
        self._reported: dict[str, tuple[int, float]] | None = None

    def observe(self, action_type: str, seconds: float | None, result: str) -> None:
        """``result``: ok, transient, permanent or circuit_open (no request made, no latency)."""
        self._attempts[action_type, result] += 1
        if seconds is not None:
            row = self._latency.get(action_type)
            if row is None:
                row = self._latency[action_type] = [0.0] * (len(LATENCY_BUCKETS) + 2)
            row[bisect_left(LATENCY_BUCKETS, seconds)] += 1
            row[-1] += seconds

    def dead_letter_failed(self, action_type: str) -> None:
        self._dead_letter_failures[action_type] += 1

    def attempting(self, action_type: str, started: float) -> None:
        self._running.setdefault(action_type, []).append(started)

    def attempted(self, action_type: str, started: float) -> None:
        running = self._running.get(action_type)
        if running is not None:
            running.remove(started)

    def running(self) -> dict[str, tuple[int, float]]:
        """Attempts under way by action type: how many, and when the oldest started."""
        if self._reported is not None:
            return self._reported
        return {kind: (len(starts), min(starts)) for kind, starts in self._running.items() if starts}

    def counts(self) -> ActionCounts:
        return ActionCounts(
            dict(self._attempts),
            {kind: list(row) for kind, row in self._latency.items()},
            dict(self._dead_letter_failures),
            self.running(),
        )

    def load(self, counts: ActionCounts) -> None:
        """Show ``counts`` from now on (those of the process that runs the actions)."""
        self._attempts = Counter(counts.attempts)
        self._latency = counts.latency
        self._dead_letter_failures = Counter(counts.dead_letter_failures)
        self._reported = counts.running

    def collect(self) -> Iterator[Metric]:
        yield _counter(
            "action_attempts",
            "Action attempts, by action type and result",
            ["action_type", "result"],
            self._attempts.items(),
        )
        yield _counter(
            "dead_letter_failures",
            "Dead letters that could not be written (each is tried again; its event stays unfinished)",
            ["action_type"],
            [((kind,), n) for kind, n in self._dead_letter_failures.items()],
        )
        running = self.running()
        now = time.monotonic()
        yield _gauge(
            "actions_running",
            "Action attempts under way, by action type (a deployment's lasts until it is done)",
            ["action_type"],
            [((kind,), float(count)) for kind, (count, _) in sorted(running.items())],
        )
        yield _gauge(
            "action_running_seconds",
            "Seconds the oldest attempt under way has lasted, by action type: its subject's later work waits, "
            "and the partition's checkpoint cannot pass its event",
            ["action_type"],
            [((kind,), max(0.0, now - oldest)) for kind, (_, oldest) in sorted(running.items())],
        )
        latency = HistogramMetricFamily(
            f"{PREFIX}_action_seconds", "Seconds per action attempt, by action type", labels=["action_type"]
        )
        bounds = [*(f"{bound:g}" for bound in LATENCY_BUCKETS), "+Inf"]
        for kind, row in sorted(self._latency.items()):
            latency.add_metric([kind], list(zip(bounds, accumulate(row[:-1]), strict=True)), row[-1])
        yield latency


def new_registry(
    view: WorkerView,
    actions: ActionMetrics,
    *,
    readiness: Callable[[], str | None] | None = None,
    pipeline_pid: Callable[[], int] | None = None,
) -> CollectorRegistry:
    """A registry of the worker's own metrics (not the process-wide default one): the worker's, its
    readiness (``azml_worker_ready``, from what ``/readyz`` answers), and the CPU and memory of its
    process (``process_*``) and of its pipeline process (``azml_worker_pipeline_process_*``)."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(WorkerCollector(view))
    registry.register(actions)
    if readiness is not None:
        registry.register(_Readiness(readiness))
    ProcessCollector(registry=registry)
    if pipeline_pid is not None:
        ProcessCollector(namespace=f"{PREFIX}_pipeline", pid=pipeline_pid, registry=registry)
    return registry


class _Readiness(Collector):
    def __init__(self, readiness: Callable[[], str | None]) -> None:
        self._readiness = readiness

    def collect(self) -> Iterator[Metric]:
        ready = self._readiness() is None
        yield _gauge("ready", "1 while the worker is ready (/readyz answers 200), 0 otherwise", [], [((), ready)])
