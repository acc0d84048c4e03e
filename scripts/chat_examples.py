"""Example notifications of every kind, as the ``teams`` and ``slack`` actions would post them.

One per Azure ML event type (a failed run, a monitor's breach, a completed run, a model registered,
a model deployed, data drift), a group's digest and an expiry, from one workspace. The tests render
each with Microsoft's Adaptive Cards renderer, and ``python -m scripts.card_pictures`` draws them for
the docs.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from worker.actions import ActionSpec, PlannedAction, action_types
from worker.core.decoding import decode_body
from worker.core.memos import Expiry, Notification
from worker.events import Event
from worker.settings import AZURE_CLOUDS

TOPIC: Final = (
    "/subscriptions/6f1c2a8e-0b7d-4c1e-9a55-3f2b8d0c7e41/resourceGroups/ml-rg"
    "/providers/Microsoft.MachineLearningServices/workspaces/ml-prod"
)
STUDIO: Final = AZURE_CLOUDS["AzureCloud"].studio
_PREFIX: Final = "Microsoft.MachineLearningServices."
_HOOK: Final = {"HOOK": "https://example.invalid/workflows/hook"}


def _event(kind: str, subject: str, data: dict[str, object], event_id: str = "e-1", time: str = "14:03:12") -> Event:
    envelope = {
        "id": event_id,
        "topic": TOPIC,
        "subject": subject,
        "eventType": _PREFIX + kind,
        "eventTime": f"2026-12-07T{time}.512Z",
        "data": data,
        "dataVersion": "2",
    }
    [event] = decode_body(orjson.dumps([envelope]))
    assert isinstance(event, Event)  # noqa: S101 - written above
    return event


def _run(run: str, status: str, tags: dict[str, str] | None = None, time: str = "14:03:12") -> Event:
    return _event(
        "RunStatusChanged",
        f"experiments/3d5b2f0e/runs/{run}",
        {
            "experimentId": "3d5b2f0e",
            "experimentName": "fraud-detection",
            "runId": run,
            "runType": "azureml.PipelineRun",
            "runStatus": status,
            "runTags": tags or {"team": "risk"},
        },
        event_id=f"e-{run}",
        time=time,
    )


def _planned(kind: str, event: Event, memo: Any = None) -> PlannedAction:
    params = action_types()[kind].params.model_validate({"url": "${env:HOOK}"}, context={"env": _HOOK})
    return PlannedAction("tell-the-team", ActionSpec(kind, 0, params), event, memo=memo)


def examples(kind: str = "teams") -> dict[str, PlannedAction]:
    """The example notifications, by name, for the ``teams`` or ``slack`` action."""
    failed = [_run(f"fraud_detection_{9011 + n}", "Failed", time=f"14:{3 + n * 4:02d}:12") for n in range(14)]
    registered = _event(
        "ModelRegistered",
        "models/fraud-scorer:12",
        {
            "modelName": "fraud-scorer",
            "modelVersion": "12",
            "modelTags": {"stage": "production", "team": "risk"},
            "modelProperties": {"auc": "0.947"},
        },
    )
    return {
        "run-failed": _planned(kind, failed[0]),
        "monitor-breach": _planned(
            kind,
            _run(
                "fraud_monitor_signal_20261207",
                "Failed",
                {
                    "azureml_modelmonitor_threshold_breached": "Model monitor fraud-scorer-monitor has failed due "
                    "to one or more features violating metric thresholds",
                    "azureml_modelmonitor_name": "fraud-scorer-monitor",
                },
            ),
        ),
        "run-completed": _planned(
            kind,
            _event(
                "RunCompleted",
                "experiments/7a9e41c2/runs/churn_training_4471",
                {
                    "experimentId": "7a9e41c2",
                    "experimentName": "churn-training",
                    "runId": "churn_training_4471",
                    "runType": "azureml.scriptrun",
                    "runTags": {"team": "growth"},
                },
            ),
        ),
        "model-registered": _planned(kind, registered),
        "model-deployed": _planned(
            kind,
            _event(
                "ModelDeployed",
                "endpoints/fraud-scorer-online",
                {
                    "serviceName": "fraud-scorer-online",
                    "serviceComputeType": "Managed",
                    "modelIds": "fraud-scorer:12",
                    "serviceTags": {"stage": "production"},
                },
            ),
        ),
        "data-drift": _planned(
            kind,
            _event(
                "DatasetDriftDetected",
                "datadrift/01d29aa4/run/01d29aa4_1765100000",
                {
                    "dataDriftId": "01d29aa4",
                    "dataDriftName": "transactions-drift",
                    "runId": "01d29aa4_1765100000",
                    "baseDatasetId": "transactions-2026-11",
                    "targetDatasetId": "transactions-2026-12",
                    "driftCoefficient": 0.734,
                    "startTime": "2026-12-06T00:00:00Z",
                    "endTime": "2026-12-07T00:00:00Z",
                },
            ),
        ),
        "digest": _planned(
            kind,
            failed[0],
            Notification("tell-the-team", "fraud-detection", tuple(failed), 14, 1_796_652_192.0, 1_796_655_312.0),
        ),
        "expiry": _planned(
            kind, registered, Expiry("tell-the-team", "fraud-scorer:12", 1_796_738_400.0, "1d", registered)
        ),
    }


def card_of(planned: PlannedAction) -> dict[str, Any]:
    """The Adaptive Card a ``teams`` action posts for ``planned`` (the card, out of its envelope)."""
    body = planned.spec.params.body(planned, STUDIO)  # type: ignore[attr-defined]
    card: dict[str, Any] = orjson.loads(body)["attachments"][0]["content"]
    return card


#: The ``teams`` examples, drawn for the docs.
EXAMPLES: Final = examples("teams")
