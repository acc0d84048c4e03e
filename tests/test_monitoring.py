"""deploy/monitoring: the alerting rules checked and unit-tested by promtool, alert by alert; the
PrometheusRule and the dashboard as scripts/monitoring.py writes them; every query parsed by
promtool; and every metric they name in a running worker's /metrics."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
import pytest
import yaml

from scripts import dashboard_picture, monitoring
from tests.live import RULES, events, live_settings, local_hub, send, wait_for
from tests.servers import Azurite, free_port
from worker.config import RunSettings
from worker.live.run import run_worker

PROMTOOL: Final = shutil.which("promtool")
_NO_PROMTOOL: Final = pytest.mark.skipif(
    PROMTOOL is None, reason="no promtool on this machine (Debian's package: prometheus; .ci/run installs it)"
)


def needs_promtool(test: Callable[..., None]) -> Callable[..., None]:
    """A test that runs promtool: I/O, and skipped where it is not installed."""
    marked: Callable[..., None] = pytest.mark.integration(_NO_PROMTOOL(test))
    return marked


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=60, check=False)


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(monitoring.RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_the_generated_files_are_up_to_date() -> None:
    for path, text in monitoring.rendered().items():
        assert path.read_text() == text, f"{path.name} is out of date: run `python -m scripts.monitoring`"


def test_the_prometheus_rule_holds_the_rules_file_s_groups() -> None:
    resource = yaml.safe_load(monitoring.PROMETHEUS_RULE.read_text())
    assert (resource["apiVersion"], resource["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert resource["spec"]["groups"] == yaml.safe_load(monitoring.RULES.read_text())["groups"]


def test_each_alert_says_what_to_look_at_and_which_command_helps() -> None:
    for rule in rules():
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook"}, rule["alert"]
        helpers = ("azml-worker ", "azml_worker_", "log lines")  # a command, a metric, what the logs say
        assert any(helper in annotations["description"] for helper in helpers), rule["alert"]
        assert "{{" not in annotations["description"], f"{rule['alert']}: the templated values go in the summary"
        anchor = annotations["runbook"].removeprefix("docs/monitoring.md#")
        assert anchor == rule["alert"].lower()
        assert f"### {rule['alert']}" in (monitoring.ROOT / "docs" / "monitoring.md").read_text()
        assert rule["labels"]["severity"] in {"warning", "critical"}


@needs_promtool
def test_promtool_checks_the_rules_file_and_the_prometheus_rule(tmp_path: Path) -> None:
    spec = tmp_path / "spec.rules.yaml"
    spec.write_text(yaml.safe_dump(yaml.safe_load(monitoring.PROMETHEUS_RULE.read_text())["spec"]))
    for path in (monitoring.RULES, spec):
        checked = promtool("check", "rules", path)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert f"SUCCESS: {len(rules())} rules found" in checked.stdout


# --- every alert, unit-tested -------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One alert's test: series (one sample a minute), and at each time, what fires (its labels and
    summary; no labels: nothing fires)."""

    alert: str
    series: dict[str, str]
    expected: list[tuple[str, dict[str, str], str | None]] = field(default_factory=list)


W = 'job="w", instance="a:8080"'
CASES: Final = [
    Case(
        "AzmlWorkerLagGrowing",
        {
            f'azml_worker_partition_lag{{{W}, partition="0"}}': "15000+200x60",
            'azml_worker_partition_lag{job="flat", instance="a:8080", partition="0"}': "30000x60",
        },
        [
            ("30m", {}, None),  # above 20,000 since 25m: pending
            ("50m", {"job": "w"}, "w: the consumer group falls behind (25k events of lag, growing)"),
        ],
    ),
    Case(
        "AzmlWorkerCheckpointStuck",
        {
            f'azml_worker_checkpoint_age_seconds{{{W}, partition="3"}}': "0+60x40",
            f'azml_worker_open_messages{{{W}, partition="3"}}': "5x40",
            f'azml_worker_checkpoint_age_seconds{{{W}, partition="4"}}': "0+60x40",  # nothing to checkpoint
            f'azml_worker_open_messages{{{W}, partition="4"}}': "0x40",
            f'azml_worker_partition_lag{{{W}, partition="4"}}': "0x40",
            f'azml_worker_checkpoint_age_seconds{{{W}, partition="5"}}': "0+60x40",  # lag, nothing read yet
            f'azml_worker_open_messages{{{W}, partition="5"}}': "0x40",
            f'azml_worker_partition_lag{{{W}, partition="5"}}': "7x40",
        },
        [
            ("18m", {}, None),
            (
                "30m",
                {"job": "w", "instance": "a:8080", "partition": "3"},
                "w: the checkpoint of partition 3 on a:8080 has not moved for 30m 0s",
            ),
            (
                "30m",
                {"job": "w", "instance": "a:8080", "partition": "5"},
                "w: the checkpoint of partition 5 on a:8080 has not moved for 30m 0s",
            ),
        ],
    ),
    Case(
        "AzmlWorkerDeadLetters",
        {
            f'azml_worker_actions_total{{{W}, rule="tell", action_type="webhook", fate="dead_lettered"}}': "0x12 1x20",
            f'azml_worker_actions_total{{{W}, rule="tell", action_type="webhook", fate="done"}}': "0+5x32",
        },
        [
            (
                "20m",
                {"job": "w", "rule": "tell", "action_type": "webhook"},
                "w: 1 webhook actions of rule tell dead-lettered in 10 minutes",
            ),
            ("30m", {}, None),  # none in the last 10 minutes
        ],
    ),
    Case(
        "AzmlWorkerDeadLettersUnwritten",
        {f'azml_worker_dead_letter_failures_total{{{W}, action_type="webhook"}}': "0x12 3x20"},
        [
            ("20m", {"job": "w", "action_type": "webhook"}, "w: dead letters of webhook actions cannot be written"),
            ("30m", {}, None),
        ],
    ),
    Case(
        "AzmlWorkerCircuitOpen",
        {
            f'azml_worker_action_attempts_total{{{W}, action_type="teams", result="circuit_open"}}': "0+1x40",
            f'azml_worker_action_attempts_total{{{W}, action_type="slack", result="circuit_open"}}': "0+1x3 3x40",
        },
        [
            ("3m", {}, None),  # refusing for less than 5 minutes
            ("20m", {"job": "w", "action_type": "teams"}, "w: the circuit of a teams target is open"),
        ],
    ),
    Case(
        "AzmlWorkerNotReady",
        {
            'azml_worker_ready{job="w", instance="a:8080"}': "0x20",
            'azml_worker_ready{job="w", instance="b:8080"}': "0 0 1x20",  # ready after 2 minutes
        },
        [
            ("3m", {}, None),
            ("8m", {"job": "w", "instance": "a:8080"}, "w: a:8080 is not ready"),
        ],
    ),
    Case(
        "AzmlWorkerPartitionUnowned",
        {
            'azml_worker_hub_partitions{job="w", instance="a:8080"}': "8x20",
            'azml_worker_hub_partitions{job="w", instance="b:8080"}': "8x20",
            'azml_worker_partitions_owned{job="w", instance="a:8080"}': "4x20",
            'azml_worker_partitions_owned{job="w", instance="b:8080"}': "3 3 3 3 3 3 3 3 3 3 4x10",
            'azml_worker_hub_partitions{job="v", instance="c:8080"}': "4x20",  # another group, balanced
            'azml_worker_partitions_owned{job="v", instance="c:8080"}': "4x20",
        },
        [
            ("2m", {}, None),
            ("5m", {"job": "w"}, "w: 1 partitions are owned by no worker"),
            ("15m", {}, None),  # owned again at 10m
        ],
    ),
]


def unit_tests(rules_file: Path) -> dict[str, Any]:
    """promtool's unit tests of the cases: each expected alert with its labels and every annotation."""
    by_name = {rule["alert"]: rule for rule in rules()}
    tests = []
    for case in CASES:
        rule = by_name[case.alert]
        checks: dict[str, list[dict[str, Any]]] = {}
        for at, labels, summary in case.expected:
            alerts = checks.setdefault(at, [])
            if labels:
                annotations = dict(rule["annotations"], summary=summary)
                alerts.append({"exp_labels": dict(labels, **rule["labels"]), "exp_annotations": annotations})
        tests.append(
            {
                "name": case.alert,
                "interval": "1m",
                "input_series": [{"series": series, "values": values} for series, values in case.series.items()],
                "alert_rule_test": [
                    {"eval_time": at, "alertname": case.alert, "exp_alerts": alerts} for at, alerts in checks.items()
                ],
            }
        )
    return {"rule_files": [str(rules_file)], "evaluation_interval": "1m", "tests": tests}


def test_every_alert_has_a_unit_test_where_it_fires_and_one_where_it_does_not() -> None:
    assert [case.alert for case in CASES] == [rule["alert"] for rule in rules()]
    for case in CASES:
        assert any(labels for _, labels, _ in case.expected), case.alert
        assert any(not labels for _, labels, _ in case.expected), case.alert


@needs_promtool
def test_promtool_unit_tests_every_alert(tmp_path: Path) -> None:
    tests = tmp_path / "alerts.test.yaml"
    tests.write_text(yaml.safe_dump(unit_tests(monitoring.RULES), sort_keys=False))
    tested = promtool("test", "rules", tests)
    assert tested.returncode == 0, tested.stdout + tested.stderr


@needs_promtool
def test_the_unit_tests_fail_when_an_alert_fires_otherwise(tmp_path: Path) -> None:
    """The tests can fail: with a threshold moved, promtool reports the alert it expected and missed."""
    changed = tmp_path / "changed.rules.yaml"
    changed.write_text(monitoring.RULES.read_text().replace("> 900", "> 3600"))
    tests = tmp_path / "alerts.test.yaml"
    tests.write_text(yaml.safe_dump(unit_tests(changed), sort_keys=False))
    tested = promtool("test", "rules", tests)
    assert tested.returncode == 1
    assert "alertname: AzmlWorkerCheckpointStuck, time: 30m" in tested.stdout + tested.stderr


# --- the dashboard ------------------------------------------------------------------------------


def test_the_dashboard_is_a_grafana_dashboard_of_panels_that_query_the_chosen_workers() -> None:
    board = json.loads(monitoring.DASHBOARD.read_text())
    panels = board["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    assert [v["name"] for v in board["templating"]["list"]] == ["datasource", "job"]
    for panel in panels:
        position = panel["gridPos"]
        assert position["x"] >= 0, panel["title"]
        assert position["x"] + position["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["description"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert 'job=~"$job"' in target["expr"], (panel["title"], target["expr"])
    titles = [panel["title"] for panel in panels]
    for shown in ("Lag per partition", "Events by outcome", "Actions by type and fate", "CPU", "Memory"):
        assert shown in titles


def concrete(expression: str) -> str:
    """A dashboard query as Grafana sends it: its variables replaced."""
    out = expression.replace('"$job"', '".+"').replace("$__rate_interval", "2m")
    assert "$" not in out, out
    return out


@needs_promtool
def test_promtool_parses_every_query_of_the_dashboard(tmp_path: Path) -> None:
    recorded = [
        {"record": f"dashboard:query_{n}", "expr": concrete(expression)}
        for n, expression in enumerate(monitoring.expressions())
    ]
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recorded}]}))
    checked = promtool("check", "rules", path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    broken = tmp_path / "broken.rules.yaml"
    broken.write_text(path.read_text().replace("sum by (outcome)", "sum by outcome", 1))
    assert promtool("check", "rules", broken).returncode == 1


# --- the metrics they name, in a running worker's /metrics ---------------------------------------

NAMED: Final = re.compile(r"\b(?:azml_worker|process)_[a-z0-9_]+\b")


def named_metrics() -> set[str]:
    expressions = [*monitoring.expressions(), *(rule["expr"] for rule in rules())]
    return {name for expression in expressions for name in NAMED.findall(expression)}


def exposed(text: str) -> set[str]:
    """The sample names a /metrics page can hold, from its TYPE lines (a family with no sample yet too)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


@pytest.mark.integration
@pytest.mark.usefixtures("sdk_garbage")
async def test_every_metric_the_dashboard_and_the_alerts_name_is_in_a_running_worker_s_metrics(
    tmp_path: Path, azurite: Azurite, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rules.yaml").write_text(RULES)
    port = free_port()
    async with local_hub("monitored") as hub:
        await send(hub, events(20, seed=5, duplicates=0))
        values = live_settings(
            hub.connection_string(), azurite, f"monitored-{uuid.uuid4().hex[:12]}", tmp_path / "rules.yaml"
        )
        values.update(http_port=port, http_host="127.0.0.1", idle_exit=0, pipeline_process=True)
        stop = asyncio.Event()
        running = asyncio.create_task(run_worker(RunSettings.explicit(**values), stop))
        try:
            async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
                page: list[str] = []

                async def acted_on_all() -> bool:
                    try:
                        async with http.get("/metrics") as response:
                            page[:] = [await response.text()]
                    except aiohttp.ClientConnectionError:
                        return False
                    return 'azml_worker_rule_matches_total{rule="every-event"} 20.0' in page[0]

                await wait_for(acted_on_all, 60, "the worker to act on the 20 events")
        finally:
            stop.set()
            await running
    missing = named_metrics() - exposed(page[0])
    assert not missing, f"named by deploy/monitoring, not in /metrics: {sorted(missing)}"
    assert len(named_metrics()) > 15


# --- the operator's resources -------------------------------------------------------------------

VALIDATE: Final = monitoring.ROOT / "tests" / "validate-operator.mjs"


def operator_errors(document: dict[str, Any], tmp_path: Path) -> str | None:
    """What the Prometheus operator's CRD schema finds wrong with ``document`` (None: valid)."""
    path = tmp_path / f"{uuid.uuid4().hex}.json"
    path.write_text(json.dumps(document))
    node = shutil.which("node")
    assert node is not None, "Node.js runs the test bed's Azurite: it is installed with it"
    checked = subprocess.run(
        [node, str(VALIDATE), document["kind"], str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert "Cannot find module" not in checked.stderr, "run `make setup` (or `npm ci`): " + checked.stderr
    return None if checked.returncode == 0 else checked.stdout + checked.stderr


@pytest.mark.integration
def test_the_prometheus_rule_and_the_pod_monitor_are_valid_for_the_operator(tmp_path: Path) -> None:
    rule = yaml.safe_load(monitoring.PROMETHEUS_RULE.read_text())
    monitor = yaml.safe_load((monitoring.MONITORING / "podmonitor.yaml").read_text())
    assert operator_errors(rule, tmp_path) is None
    assert operator_errors(monitor, tmp_path) is None
    monitor["spec"]["podMetricsEndpoints"][0]["interval"] = 30  # a number where a duration goes
    assert "interval must be string" in (operator_errors(monitor, tmp_path) or "")
    deployment = yaml.safe_load((monitoring.ROOT / "deploy" / "deployment.yaml").read_text())
    ports = {p["name"] for c in deployment["spec"]["template"]["spec"]["containers"] for p in c.get("ports", ())}
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] in ports
    assert monitor["spec"]["selector"]["matchLabels"] == deployment["spec"]["template"]["metadata"]["labels"]


def test_the_picture_draws_every_panel_where_the_grid_puts_it() -> None:
    """scripts/dashboard_picture.py's page, from series as Prometheus answers a range query."""
    board = json.loads(monitoring.DASHBOARD.read_text())
    series = {
        expression: [("a", [[100.0, "1"], [160.0, "3"]]), ("b", [[100.0, "2"], [160.0, "NaN"]])]
        for expression in monitoring.expressions()
    }
    page = dashboard_picture.page(series, 100.0, 160.0)
    for panel in board["panels"]:
        assert f">{panel['title']}<" in page.replace("&#x27;", "'"), panel["title"]
    charts = [p for p in board["panels"] if p["type"] == "timeseries"]
    assert page.count("<polyline") == sum(2 * len(p["targets"]) for p in charts)
    assert dashboard_picture.height(board) > 38 * 20
