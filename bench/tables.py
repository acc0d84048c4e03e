"""The rules tables the benchmarks evaluate: ten rules like the examples, and rules by subject prefix."""

from __future__ import annotations

from decimal import Decimal

import yaml

from worker.sending.mlevents import DATASET_DRIFT_DETECTED, EVENT_TYPES, MODEL_REGISTERED, RUN_STATUS_CHANGED

Filter = dict[str, object]


def base_filters() -> list[tuple[str, Filter]]:
    """Ten rules like the examples: by type, with advanced filters on data."""
    af = "advancedFilters"
    return [
        ("failed", {"includedEventTypes": [RUN_STATUS_CHANGED], af: [leaf("StringIn", "data.runStatus", ["Failed"])]}),
        ("registered", {"includedEventTypes": [MODEL_REGISTERED]}),
        (
            "drift",
            {
                "includedEventTypes": [DATASET_DRIFT_DETECTED],
                af: [leaf("NumberGreaterThan", "data.DriftCoefficient", 0.5)],
            },
        ),
        (
            "deploy-tags",
            {
                "includedEventTypes": [MODEL_REGISTERED],
                "subjectBeginsWith": "models/",
                af: [
                    leaf("StringIn", "data.ModelTags.stage", ["production"]),
                    leaf("StringIn", "data.ModelTags.deploy", ["true"]),
                ],
            },
        ),
        (
            "team-risk",
            {"includedEventTypes": list(EVENT_TYPES[:2]), af: [leaf("StringIn", "data.runTags.team", ["risk"])]},
        ),
        (
            "gpu",
            {
                "includedEventTypes": list(EVENT_TYPES[:2]),
                af: [leaf("StringContains", "data.runProperties.target", ["gpu"])],
            },
        ),
        ("aks", {"includedEventTypes": [EVENT_TYPES[3]], "subjectEndsWith": "-aks"}),
        (
            "churn",
            {"subjectBeginsWith": "experiments/", af: [leaf("StringBeginsWith", "data.experimentName", ["churn"])]},
        ),
        (
            "staging",
            {
                "any": [
                    leaf("StringIn", "data.modelTags.stage", ["staging"]),
                    leaf("StringIn", "data.serviceTags.stage", ["staging"]),
                ]
            },
        ),
        ("not-automl", {"includedEventTypes": [EVENT_TYPES[0]], "not": leaf("StringIn", "data.runType", ["automl"])}),
    ]


def leaf(op: str, key: str, value: object) -> dict[str, object]:
    field = "values" if isinstance(value, list) else "value"
    return {"operatorType": op, "key": key, field: value}


def prefixed_filters(count: int) -> list[tuple[str, Filter]]:
    """Rules for specific models, endpoints and experiments, the way large tables grow."""
    out = []
    for i in range(count):
        kind = EVENT_TYPES[i % len(EVENT_TYPES)]
        prefix = {
            0: f"experiments/{i:08x}-0000-0000-0000-000000000000/",
            1: f"experiments/{i:08x}-0000-0000-0000-000000000000/runs/",
            2: f"models/model-{i}:",
            3: f"endpoints/service-{i}",
            4: f"datadrift/{i:08x}-",
        }[i % 5]
        raw: dict[str, object] = {"includedEventTypes": [kind], "subjectBeginsWith": prefix}
        if i % 3 == 0:
            raw["advancedFilters"] = [leaf("NumberGreaterThan", "data.DriftCoefficient", Decimal("0.25"))]
        out.append((f"r{i}", raw))
    return out


def rules_yaml(filters: list[tuple[str, Filter]]) -> str:
    """A rules file holding the filters, each with a ``log`` action at debug level."""
    rules = [
        {"name": name, "filter": _plain(raw), "actions": [{"type": "log", "level": "debug"}]} for name, raw in filters
    ]
    return yaml.safe_dump({"rules": rules}, sort_keys=False)


def _plain(value: object) -> object:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
