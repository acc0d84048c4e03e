"""The health and metrics server, on a real port, read with a real HTTP client."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable

import aiohttp
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import free_port
from worker.actions.base import ActionFate
from worker.core.accounting import Fate, Skip, Tally
from worker.live.handoff import PartitionStatus
from worker.live.health import serve
from worker.live.metrics import ActionMetrics, PartitionGauges, new_registry
from worker.settings import OpsSettings


class View:
    """A worker as the collector sees it: counts, and the owned partitions' gauges."""

    def __init__(self) -> None:
        self.counts = Tally()
        self.owned: list[PartitionGauges] = []

    partition_count = 0

    def tally(self) -> Tally:
        return self.counts

    def partitions(self) -> Iterable[PartitionGauges]:
        return self.owned


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return out


@pytest.mark.integration
async def test_health_readiness_and_metrics() -> None:
    view = View()
    ready: dict[str, str | None] = {"reason": "the Event Hub has not answered"}
    actions = ActionMetrics()
    registry = new_registry(view, actions)
    port = free_port()
    async with (
        serve(OpsSettings("127.0.0.1", port), registry, lambda: ready["reason"]),
        aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http,
    ):
        async with http.get("/healthz") as response:
            assert response.status == 200
        async with http.get("/readyz") as response:
            assert response.status == 503
            assert (await response.json())["reason"] == "the Event Hub has not answered"
        ready["reason"] = None
        async with http.get("/readyz") as response:
            assert response.status == 200

        view.counts.read = 3
        view.counts.count("0", "Microsoft.MachineLearningServices.RunCompleted", Fate.MATCHED)
        view.counts.count_skip("1", "Microsoft.MachineLearningServices.RunCompleted", Skip.DUPLICATE)
        view.counts.count_invalid("1", "not_json")
        view.counts.rule_matches["mail-on-failure"] += 1
        view.counts.count_action("mail-on-failure", "email", ActionFate.DEAD_LETTERED)
        view.owned = [
            PartitionGauges(PartitionStatus("0", 4, 9, 2.5, 7, 1, pending_checkpoint=True, taken=20), 120, 20),
            PartitionGauges(PartitionStatus("1", 0, 0, 0.5, 3, 0, pending_checkpoint=False, taken=5), None),
        ]
        actions.observe("webhook", 0.02, "ok")
        actions.observe("webhook", 0.3, "transient")
        actions.observe("webhook", None, "circuit_open")
        async with http.get("/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            got = samples(await response.text())

    run_completed = "Microsoft.MachineLearningServices.RunCompleted"
    assert got["azml_worker_events_total", (("event_type", run_completed), ("outcome", "matched"))] == 1
    assert got["azml_worker_events_total", (("event_type", run_completed), ("outcome", "skipped"))] == 1
    assert got["azml_worker_events_read_total", ()] == 3
    assert got["azml_worker_events_skipped_total", (("reason", "duplicate"),)] == 1
    assert got["azml_worker_events_invalid_total", (("reason", "not_json"),)] == 1
    assert got["azml_worker_rule_matches_total", (("rule", "mail-on-failure"),)] == 1
    dead = (("action_type", "email"), ("fate", "dead_lettered"), ("rule", "mail-on-failure"))
    assert got["azml_worker_actions_total", dead] == 1
    assert got["azml_worker_partitions_owned", ()] == 2
    assert got["azml_worker_reorder_buffered", (("partition", "0"),)] == 4
    assert got["azml_worker_checkpoint_age_seconds", (("partition", "1"),)] == 0.5
    assert got["azml_worker_checkpoint_failures_total", (("partition", "0"),)] == 1
    assert got["azml_worker_partition_lag", (("partition", "0"),)] == 120
    assert ("azml_worker_partition_lag", (("partition", "1"),)) not in got  # unknown, not zero
    assert got["azml_worker_messages_received_total", (("partition", "0"),)] == 20
    assert got["azml_worker_messages_received_total", (("partition", "1"),)] == 0
    assert got["azml_worker_action_attempts_total", (("action_type", "webhook"), ("result", "transient"))] == 1
    assert got["azml_worker_action_attempts_total", (("action_type", "webhook"), ("result", "circuit_open"))] == 1
    assert got["azml_worker_action_seconds_count", (("action_type", "webhook"),)] == 2
    assert got["azml_worker_action_seconds_sum", (("action_type", "webhook"),)] == pytest.approx(0.32)
    buckets = {le: got["azml_worker_action_seconds_bucket", (("action_type", "webhook"), ("le", le))] for le in LE}
    assert buckets == {"0.01": 0, "0.025": 1, "0.25": 1, "0.5": 2, "+Inf": 2}  # cumulative, upper bounds included


LE = ("0.01", "0.025", "0.25", "0.5", "+Inf")


async def test_port_zero_turns_the_server_off() -> None:
    registry = new_registry(View(), ActionMetrics())
    async with serve(OpsSettings("127.0.0.1", 0), registry, lambda: None) as port:
        assert port is None


def test_label_values_from_outside_are_masked() -> None:
    """An event type is whatever a publisher sent; a credential in it never reaches the metrics."""
    view = View()
    view.counts.read = 1
    view.counts.count_skip("0", "Bearer abcdefghijklmnopqrstuvwxyz", Skip.UNHANDLED_TYPE)
    text = generate_latest(new_registry(view, ActionMetrics())).decode()
    assert "abcdefghijklmnopqrstuvwxyz" not in text
    assert samples(text)["azml_worker_events_total", (("event_type", "Bearer ***"), ("outcome", "skipped"))] == 1


def test_dead_letters_that_could_not_be_written_are_counted_and_carried_whole() -> None:
    metrics = ActionMetrics()
    metrics.dead_letter_failed("webhook")
    metrics.dead_letter_failed("webhook")
    shown = ActionMetrics()
    shown.load(metrics.counts())  # as the pipeline process reports them to the parent
    text = generate_latest(new_registry(View(), shown)).decode()
    assert samples(text)["azml_worker_dead_letter_failures_total", (("action_type", "webhook"),)] == 2


@pytest.mark.integration
def test_readiness_the_hub_s_partitions_and_both_processes_cpu_and_memory_are_scraped() -> None:
    """What the alerts and the dashboard of deploy/monitoring read beside the counts: whether the
    worker is ready, how many partitions its group shares, and what its two processes use."""
    view = View()
    view.partition_count = 8
    reason: list[str | None] = ["the Event Hub has not answered"]
    with subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE) as pipeline:
        registry = new_registry(view, ActionMetrics(), readiness=lambda: reason[0], pipeline_pid=lambda: pipeline.pid)
        before = samples(generate_latest(registry).decode())
        reason[0] = None
        after = samples(generate_latest(registry).decode())
        assert pipeline.stdin is not None
        pipeline.stdin.close()
    assert (before["azml_worker_ready", ()], after["azml_worker_ready", ()]) == (0, 1)
    assert after["azml_worker_hub_partitions", ()] == 8
    for process in ("process", "azml_worker_pipeline_process"):
        assert after[f"{process}_resident_memory_bytes", ()] > 1_000_000
        assert (f"{process}_cpu_seconds_total", ()) in after
    assert after["process_resident_memory_bytes", ()] != after["azml_worker_pipeline_process_resident_memory_bytes", ()]
