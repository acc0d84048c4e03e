"""The metrics of rules that remember: a real partition core's counts, as a scrape shows them."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path

import orjson
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import START, TOPIC
from worker.core.accounting import Tally
from worker.core.partition import PartitionCore
from worker.events import Message, Position
from worker.live.metrics import ActionMetrics, PartitionGauges, WorkerView, new_registry
from worker.rulefiles.loading import load_rules

ML = "Microsoft.MachineLearningServices."
RULES = f"""
rules:
  - name: run-stuck
    filter:
      includedEventTypes: [{ML}RunStatusChanged]
      advancedFilters: [{{operatorType: StringIn, key: data.runStatus, values: [Running]}}]
    expect:
      within: 1h
      filter: {{includedEventTypes: [{ML}RunCompleted]}}
    actions: [{{type: log, level: debug}}]
  - name: failed-runs
    filter:
      includedEventTypes: [{ML}RunStatusChanged]
      advancedFilters: [{{operatorType: StringIn, key: data.runStatus, values: [Failed]}}]
    group: {{by: "{{{{ data.experimentName }}}}", wait: 2m, interval: 30m}}
    actions: [{{type: log, level: debug}}]
"""


class CoreView:
    """The collector's view of a worker owning one partition: its core's counts, as the live worker reads them."""

    partition_count = 1

    def __init__(self, core: PartitionCore) -> None:
        self.core = core

    def tally(self) -> Tally:
        return self.core.counts()

    def partitions(self) -> Iterable[PartitionGauges]:
        return ()


class Partition:
    """A partition core fed event by event at minutes past START, every work finished at once."""

    def __init__(self, tmp_path: Path) -> None:
        path = tmp_path / "rules.yaml"
        path.write_text(RULES)
        self.core = PartitionCore("0", load_rules([path]))
        self.sequence = 0

    def send(self, minute: float, subject: str, event_type: str, **data: object) -> None:
        at = START + timedelta(minutes=minute)
        self.sequence += 1
        body = {
            "id": f"ev-{self.sequence}",
            "topic": TOPIC,
            "subject": subject,
            "eventType": ML + event_type,
            "eventTime": at.isoformat(),
            "data": data,
            "dataVersion": "2",
        }
        position = Position("0", str(self.sequence * 100), self.sequence, at)
        for work in self.core.receive(Message(orjson.dumps([body]), position)) + self.core.release_all():
            self.core.finish(work)


def scrape(view: WorkerView) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(new_registry(view, ActionMetrics())).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return out


def rule(name: str) -> tuple[tuple[str, str], ...]:
    return (("rule", name),)


def test_expectations_groups_and_what_is_pending_are_scraped_per_rule(tmp_path: Path) -> None:
    partition = Partition(tmp_path)
    view = CoreView(partition.core)
    partition.send(0, "runs/a", "RunStatusChanged", runStatus="Running")
    partition.send(1, "runs/b", "RunStatusChanged", runStatus="Running")
    partition.send(3, "runs/x1", "RunStatusChanged", runStatus="Failed", experimentName="x")
    partition.send(4, "runs/x2", "RunStatusChanged", runStatus="Failed", experimentName="x")
    partition.send(10, "runs/a", "RunCompleted")  # fulfils a; x is notified on the way (due at 5)
    partition.send(11, "runs/y1", "RunStatusChanged", runStatus="Failed", experimentName="y")
    partition.send(12, "runs/nameless", "RunStatusChanged", runStatus="Failed")  # no experimentName: no key

    got = scrape(view)
    assert got["azml_worker_expectations_started_total", rule("run-stuck")] == 2
    assert got["azml_worker_expectations_fulfilled_total", rule("run-stuck")] == 1
    assert ("azml_worker_expectations_expired_total", rule("run-stuck")) not in got
    assert got["azml_worker_group_events_total", rule("failed-runs")] == 3
    assert got["azml_worker_group_notifications_total", rule("failed-runs")] == 1
    assert got["azml_worker_rule_key_failures_total", rule("failed-runs")] == 1
    assert got["azml_worker_pending", (("kind", "expect"), ("rule", "run-stuck"))] == 1  # b
    assert (
        got["azml_worker_pending", (("kind", "group"), ("rule", "failed-runs"))] == 1
    )  # y (x was notified, and holds nothing)

    partition.send(70, "runs/c", "RunStatusChanged", runStatus="Running")  # y notified at 13; b expired at 61

    got = scrape(view)
    assert got["azml_worker_expectations_started_total", rule("run-stuck")] == 3
    assert got["azml_worker_expectations_expired_total", rule("run-stuck")] == 1
    assert got["azml_worker_group_notifications_total", rule("failed-runs")] == 2
    assert got["azml_worker_pending", (("kind", "expect"), ("rule", "run-stuck"))] == 1  # c
    # Nothing left for a rule that grouped before: shown as 0, not left out.
    assert got["azml_worker_pending", (("kind", "group"), ("rule", "failed-runs"))] == 0
    assert ("azml_worker_pending", (("kind", "group"), ("rule", "run-stuck"))) not in got


class TallyView:
    def __init__(self, tally: Tally) -> None:
        self.counts = tally

    partition_count = 0

    def tally(self) -> Tally:
        return self.counts

    def partitions(self) -> Iterable[PartitionGauges]:
        return ()


def test_rule_names_in_the_new_families_are_masked() -> None:
    """A rule name comes from a rules file; a credential pasted into one never reaches the metrics."""
    pasted = "Bearer abcdefghijklmnopqrstuvwxyz"
    tally = Tally()
    tally.expect_started[pasted] = 1
    tally.group_notified[pasted] = 1
    tally.pending[pasted, "group"] = 2
    text = generate_latest(new_registry(TallyView(tally), ActionMetrics())).decode()
    assert "abcdefghijklmnopqrstuvwxyz" not in text
    got = scrape(TallyView(tally))
    assert got["azml_worker_expectations_started_total", rule("Bearer ***")] == 1
    assert got["azml_worker_group_notifications_total", rule("Bearer ***")] == 1
    assert got["azml_worker_pending", (("kind", "group"), ("rule", "Bearer ***"))] == 2
