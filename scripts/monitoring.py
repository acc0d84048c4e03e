"""Write deploy/monitoring's generated files: the Grafana dashboard and the PrometheusRule.

    python -m scripts.monitoring          # write them
    python -m scripts.monitoring --check  # exit 1 when they differ from what would be written

The alerting rules are written by hand in ``deploy/monitoring/alerts.rules.yaml`` (a plain rules file);
the PrometheusRule wraps the same groups for the Prometheus operator. The dashboard's panels are
listed here: each a title, a unit and its queries.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

ROOT: Final = Path(__file__).resolve().parent.parent
MONITORING: Final = ROOT / "deploy" / "monitoring"
RULES: Final = MONITORING / "alerts.rules.yaml"
PROMETHEUS_RULE: Final = MONITORING / "prometheusrule.yaml"
DASHBOARD: Final = MONITORING / "dashboard.json"

#: Every query selects the workers of the chosen scrape job (the dashboard's ``job`` variable).
JOB: Final = '{job=~"$job"}'
DATASOURCE: Final = {"type": "prometheus", "uid": "${datasource}"}


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    #: Each query and its legend.
    queries: tuple[tuple[str, str], ...]
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 12


def _q(expression: str) -> str:
    """An expression with ``{JOB}`` standing for the job selector (merged into a selector it opens)."""
    return expression.replace("{JOB,", '{job=~"$job",').replace("{JOB}", JOB)


ROWS: Final[tuple[tuple[str, tuple[Panel, ...]], ...]] = (
    (
        "The consumer group",
        (
            Panel(
                "Workers ready",
                "Workers whose /readyz answers 200 (the Event Hub has answered), of those scraped.",
                ((_q("sum(azml_worker_ready{JOB})"), "ready"), (_q("count(azml_worker_ready{JOB})"), "scraped")),
                kind="stat",
                width=6,
            ),
            Panel(
                "Partitions owned",
                "Partitions the workers own, of the hub's: fewer for minutes means partitions nobody reads.",
                (
                    (_q("sum(azml_worker_partitions_owned{JOB})"), "owned"),
                    (_q("max(azml_worker_hub_partitions{JOB})"), "of the hub's"),
                ),
                kind="stat",
                width=6,
            ),
            Panel(
                "Lag",
                "Events enqueued after the last one each partition delivered, summed.",
                ((_q("sum(azml_worker_partition_lag{JOB})"), "lag"),),
                kind="stat",
                width=6,
            ),
            Panel(
                "Dead letters (1 h)",
                "Actions given up in the last hour: `azml-worker dead-letters list LANE` shows them.",
                ((_q('sum(increase(azml_worker_actions_total{JOB,fate="dead_lettered"}[1h]))'), "dead letters"),),
                kind="stat",
                width=6,
            ),
            Panel(
                "Lag per partition",
                "Events enqueued after the last one delivered, per partition (read from the hub every 30 s).",
                ((_q("max by (partition) (azml_worker_partition_lag{JOB})"), "partition {{partition}}"),),
            ),
            Panel(
                "Checkpoint age per partition",
                "Seconds since each partition's checkpoint was written: it moves every "
                "WORKER_CHECKPOINT_INTERVAL while there is work, and stays behind an action still running.",
                ((_q("max by (partition) (azml_worker_checkpoint_age_seconds{JOB})"), "partition {{partition}}"),),
                unit="s",
            ),
            Panel(
                "Partitions per worker",
                "Partitions each worker owns, and those it holds until a steal by a peer is no longer "
                "expected (after a start or a scale-out).",
                (
                    (_q("sum by (instance) (azml_worker_partitions_owned{JOB})"), "{{instance}} owned"),
                    (_q("sum by (instance) (azml_worker_partitions_settling{JOB})"), "{{instance}} settling"),
                ),
            ),
            Panel(
                "Events read per second",
                "Events read from the hub, by every worker.",
                ((_q("sum(rate(azml_worker_events_read_total{JOB}[$__rate_interval]))"), "read"),),
                unit="ops",
            ),
        ),
    ),
    (
        "Events and actions",
        (
            Panel(
                "Events by outcome",
                "Each event read ends in one outcome: matched, unmatched, skipped, invalid or handed_over.",
                (
                    (
                        _q("sum by (outcome) (rate(azml_worker_events_total{JOB}[$__rate_interval]))"),
                        "{{outcome}}",
                    ),
                ),
                unit="ops",
            ),
            Panel(
                "Actions by type and fate",
                "Actions done or dead-lettered (planned: a dry run).",
                (
                    (
                        _q("sum by (action_type, fate) (rate(azml_worker_actions_total{JOB}[$__rate_interval]))"),
                        "{{action_type}} {{fate}}",
                    ),
                ),
                unit="ops",
            ),
            Panel(
                "Attempts by result",
                "Action attempts: ok, transient (retried), permanent (dead-lettered), circuit_open (refused "
                "without a request while a target's circuit is open).",
                (
                    (
                        _q(
                            "sum by (action_type, result) "
                            "(rate(azml_worker_action_attempts_total{JOB}[$__rate_interval]))"
                        ),
                        "{{action_type}} {{result}}",
                    ),
                ),
                unit="ops",
            ),
            Panel(
                "Retries, dead letters and open circuits",
                "Attempts that failed and will be tried again, actions given up, and attempts an open circuit refused.",
                (
                    (
                        _q(
                            'sum by (action_type) (rate(azml_worker_action_attempts_total{JOB,result="transient"}'
                            "[$__rate_interval]))"
                        ),
                        "{{action_type}} retried",
                    ),
                    (
                        _q(
                            'sum by (action_type) (rate(azml_worker_actions_total{JOB,fate="dead_lettered"}'
                            "[$__rate_interval]))"
                        ),
                        "{{action_type}} dead-lettered",
                    ),
                    (
                        _q(
                            'sum by (action_type) (rate(azml_worker_action_attempts_total{JOB,result="circuit_open"}'
                            "[$__rate_interval]))"
                        ),
                        "{{action_type}} circuit open",
                    ),
                ),
                unit="ops",
            ),
            Panel(
                "Attempt latency (95th percentile)",
                "How long an action attempt takes, by action type.",
                (
                    (
                        _q(
                            "histogram_quantile(0.95, sum by (le, action_type) "
                            "(rate(azml_worker_action_seconds_bucket{JOB}[$__rate_interval])))"
                        ),
                        "{{action_type}}",
                    ),
                ),
                unit="s",
            ),
            Panel(
                "Longest attempt under way",
                "How long the oldest attempt under way has lasted: its subject's later work waits behind "
                "it, and its partition's checkpoint cannot pass it.",
                ((_q("max by (action_type) (azml_worker_action_running_seconds{JOB})"), "{{action_type}}"),),
                unit="s",
            ),
        ),
    ),
    (
        "Resources",
        (
            Panel(
                "CPU",
                "Cores used by each worker's process (the receiver) and its pipeline process.",
                (
                    (_q("rate(process_cpu_seconds_total{JOB}[$__rate_interval])"), "{{instance}} worker"),
                    (
                        _q("rate(azml_worker_pipeline_process_cpu_seconds_total{JOB}[$__rate_interval])"),
                        "{{instance}} pipeline",
                    ),
                ),
                unit="percentunit",
            ),
            Panel(
                "Memory",
                "Resident memory of each worker's two processes.",
                (
                    (_q("process_resident_memory_bytes{JOB}"), "{{instance}} worker"),
                    (_q("azml_worker_pipeline_process_resident_memory_bytes{JOB}"), "{{instance}} pipeline"),
                ),
                unit="bytes",
            ),
        ),
    ),
)


def expressions() -> list[str]:
    """Every query of the dashboard, as written in it."""
    return [query for _, panels in ROWS for panel in panels for query, _ in panel.queries]


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y = 0
    for row, row_panels in ROWS:
        panels.append(
            {
                "type": "row",
                "title": row,
                "id": len(panels) + 1,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        y += 1
        x = line = 0
        for panel in row_panels:
            height = 4 if panel.kind == "stat" else 8
            if x + panel.width > 24:
                x, y, line = 0, y + line, 0
            panels.append(_panel(panel, len(panels) + 1, {"h": height, "w": panel.width, "x": x, "y": y}))
            x, line = x + panel.width, max(line, height)
        y += line
    return {
        "title": "Azure ML events worker",
        "uid": "azureml-events-worker",
        "description": "The workers of one consumer group: lag, events, actions, checkpoints, resources.",
        "tags": ["azureml", "event-hubs"],
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "timezone": "",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                {
                    "name": "job",
                    "label": "Workers (scrape job)",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "query": {"query": "label_values(azml_worker_ready, job)", "refId": "job"},
                    "definition": "label_values(azml_worker_ready, job)",
                    "refresh": 2,
                    "includeAll": True,
                    "multi": True,
                    "current": {},
                    "hide": 0,
                },
            ]
        },
        "annotations": {"list": []},
        "links": [],
        "panels": panels,
    }


def _panel(panel: Panel, number: int, position: dict[str, int]) -> dict[str, Any]:
    targets = [
        {"datasource": DATASOURCE, "expr": query, "legendFormat": legend, "refId": chr(ord("A") + n)}
        for n, (query, legend) in enumerate(panel.queries)
    ]
    out: dict[str, Any] = {
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "id": number,
        "datasource": DATASOURCE,
        "gridPos": position,
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
    }
    if panel.kind == "timeseries":
        out["options"] = {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}}
    else:
        out["options"] = {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"}
    return out


def prometheus_rule() -> dict[str, Any]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "azureml-events-worker", "labels": {"app": "azureml-events-worker"}},
        "spec": {"groups": groups},
    }


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the expressions, the descriptions) as blocks, as written by hand."""


def _block(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _block)


def rendered() -> dict[Path, str]:
    """What each generated file holds."""
    rule = (
        f"# Generated from {RULES.name} by `python -m scripts.monitoring`: edit that file, then run it.\n"
        "# The alerting rules for the Prometheus operator (docs/monitoring.md).\n"
        + yaml.dump(prometheus_rule(), Dumper=_Dumper, sort_keys=False, width=120, allow_unicode=True)
    )
    return {PROMETHEUS_RULE: rule, DASHBOARD: json.dumps(dashboard(), indent=2) + "\n"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a generated file is out of date")
    args = parser.parse_args()
    stale = []
    for path, text in rendered().items():
        if not path.exists() or path.read_text() != text:
            stale.append(path)
            if not args.check:
                path.write_text(text)
    if args.check and stale:
        print("out of date (run `python -m scripts.monitoring`): " + ", ".join(str(p) for p in stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
