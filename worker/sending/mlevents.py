"""Realistic Azure ML events, generated deterministically from a seed.

Used by the demo, the benchmarks and the tests. Shapes follow what real workspaces publish: Event
Grid schema (or CloudEvents 1.0), camelCase ``data`` keys (or the docs' PascalCase), subjects
``experiments/{id}/runs/{run}``, ``models/{name}:{version}``, ``endpoints/{name}`` and
``datadrift/{id}/run/{run}``. Each body is what Event Grid puts in one Event Hubs message: a JSON
array holding one event.
"""

from __future__ import annotations

import heapq
import random
import uuid
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import chain
from typing import Final, Literal

import orjson

PREFIX: Final = "Microsoft.MachineLearningServices."
RUN_COMPLETED: Final = PREFIX + "RunCompleted"
RUN_STATUS_CHANGED: Final = PREFIX + "RunStatusChanged"
MODEL_REGISTERED: Final = PREFIX + "ModelRegistered"
MODEL_DEPLOYED: Final = PREFIX + "ModelDeployed"
DATASET_DRIFT_DETECTED: Final = PREFIX + "DatasetDriftDetected"
EVENT_TYPES: Final = (RUN_COMPLETED, RUN_STATUS_CHANGED, MODEL_REGISTERED, MODEL_DEPLOYED, DATASET_DRIFT_DETECTED)

DEFAULT_TOPIC: Final = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/ml-rg"
    "/providers/Microsoft.MachineLearningServices/workspaces/ml-prod"
)

_EXPERIMENTS: Final = ("churn-training", "fraud-detection", "demand-forecast", "automl-regression")
_MODELS: Final = ("churn-classifier", "fraud-scorer", "demand-forecaster", "sklearn_regression_model")
_STAGES: Final = ("production", "staging", "development")
_TEAMS: Final = ("risk", "growth", "supply")


@dataclass(frozen=True, slots=True)
class Options:
    seed: int = 7
    topic: str = DEFAULT_TOPIC
    schema: Literal["eventgrid", "cloudevents"] = "eventgrid"
    pascal_case: bool = False
    start: datetime = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    #: Pad ``data`` with run properties to reach roughly this many bytes per body (0: no padding).
    body_size: int = 0


def generate(count: int, options: Options | None = None) -> Iterator[dict[str, object]]:
    """``count`` events, in publication order, as Event Grid (or CloudEvents) JSON objects."""
    opts = options or Options()
    rng = random.Random(opts.seed)  # noqa: S311 - test data, not security
    moment = opts.start
    runs: deque[tuple[str, str]] = deque(maxlen=8)  # recent runs: a run's events share its subject
    for _ in range(count):
        moment += timedelta(milliseconds=rng.randint(5, 2_000))
        kind = rng.choices(EVENT_TYPES, weights=(30, 20, 20, 15, 15))[0]
        subject, data = _payload(kind, rng, opts, runs)
        yield _envelope(kind, subject, data, moment, rng, opts)


def bodies(count: int, options: Options | None = None) -> Iterator[bytes]:
    """Event Hubs message bodies: a JSON array holding one event, as Event Grid delivers them."""
    for event in generate(count, options):
        yield orjson.dumps([event])


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message as Event Grid hands it to Event Hubs: the body and its application properties."""

    body: bytes
    properties: Mapping[str, object]
    #: The event's own time, for tools that stamp enqueued times.
    event_time: datetime


def deliveries(
    events: Iterable[dict[str, object]], *, shuffle: int = 0, duplicates: float = 0.0, seed: int = 0
) -> Iterator[Delivery]:
    """The events as Event Grid delivers them: at least once, in no guaranteed order.

    ``shuffle`` lets an event be overtaken by up to that many later ones; ``duplicates`` is the
    chance that an event is delivered again a little later, with ``aeg-delivery-count`` raised.
    """
    rng = random.Random(seed)  # noqa: S311 - test data, not security
    # Each delivery gets a due position: its own, plus up to ``shuffle``; a second delivery comes
    # after the first one's, up to ``shuffle`` later again. Deliveries leave in due order.
    due: list[tuple[float, int, int, dict[str, object]]] = []
    serial = 0
    for position, event in enumerate(events):
        first = position + rng.uniform(0, shuffle)
        heapq.heappush(due, (first, serial := serial + 1, 0, event))
        if rng.random() < duplicates:
            heapq.heappush(due, (first + shuffle + rng.uniform(0, shuffle), serial := serial + 1, 1, event))
        while due and due[0][0] <= position:
            _, _, retries, ready = heapq.heappop(due)
            yield _delivery(ready, retries)
    while due:
        _, _, retries, ready = heapq.heappop(due)
        yield _delivery(ready, retries)


def sample_deliveries(count: int, seed: int) -> list[Delivery]:
    """The samples' messages (the bundled capture, the demo): ``count`` events of the default
    workspace, 8 of another one and 8 in the CloudEvents schema, in time order, then delivered as
    Event Grid does (out of order, about 5% twice)."""
    sandbox = DEFAULT_TOPIC.replace("ml-prod", "ml-sandbox")
    events = chain(
        generate(count, Options(seed=seed)),
        generate(8, Options(seed=seed + 1, topic=sandbox)),
        generate(8, Options(seed=seed + 2, schema="cloudevents")),
    )
    ordered = sorted(events, key=lambda e: str(e.get("eventTime") or e.get("time")))
    return list(deliveries(ordered, shuffle=6, duplicates=0.05, seed=seed))


def _delivery(event: dict[str, object], retries: int) -> Delivery:
    moment = event.get("eventTime") or event.get("time")
    assert isinstance(moment, str)  # noqa: S101 - generated above
    properties: dict[str, object] = {
        "aeg-subscription-name": "ML-EVENTS-TO-HUB",
        "aeg-delivery-count": str(retries),
        "aeg-event-type": "Notification",
        "aeg-metadata-version": "1",
        "aeg-data-version": str(event.get("dataVersion", "")),
        "aeg-output-event-id": str(event["id"]),
    }
    # Event Grid wraps its own schema in a one-element array; CloudEvents go out as one object.
    body = orjson.dumps(event if "specversion" in event else [event])
    return Delivery(body, properties, datetime.fromisoformat(moment))


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _payload(
    kind: str, rng: random.Random, opts: Options, runs: deque[tuple[str, str]]
) -> tuple[str, dict[str, object]]:
    data: dict[str, object]
    if kind in (RUN_COMPLETED, RUN_STATUS_CHANGED):
        if runs and rng.random() < 0.4:
            experiment, run_id = rng.choice(runs)
        else:
            experiment = rng.choice(_EXPERIMENTS)
            run_id = f"{experiment.replace('-', '_')}_{rng.randint(1_000, 9_999)}"
            runs.append((experiment, run_id))
        experiment_id = str(uuid.uuid5(uuid.NAMESPACE_URL, experiment))
        subject = f"experiments/{experiment_id}/runs/{run_id}"
        data = {
            "experimentId": experiment_id,
            "experimentName": experiment,
            "runId": run_id,
            "runType": rng.choice(("azureml.scriptrun", "automl", "azureml.PipelineRun")),
            "runTags": {"team": rng.choice(_TEAMS)},
            "runProperties": {"target": rng.choice(("cpu-cluster", "gpu-cluster", "local"))},
        }
        if kind == RUN_STATUS_CHANGED:
            data["runStatus"] = rng.choices(("Failed", "Running", "Canceled"), weights=(6, 3, 1))[0]
        _tag(kind, data)
    elif kind == MODEL_REGISTERED:
        name = rng.choice(_MODELS)
        version = rng.randint(1, 40)
        subject = f"models/{name}:{version}"
        data = {
            "modelName": name,
            "modelVersion": str(version),
            "modelTags": {
                "stage": rng.choice(_STAGES),
                "team": rng.choice(_TEAMS),
                "deploy": rng.choice(("true", "false")),
            },
            "modelProperties": {"accuracy": str(round(rng.uniform(0.7, 0.99), 3))},
        }
    elif kind == MODEL_DEPLOYED:
        service = f"{rng.choice(_MODELS).replace('_', '-')}-{rng.choice(('aci', 'aks'))}"
        subject = f"endpoints/{service}"
        data = {
            "serviceName": service,
            "serviceComputeType": "ACI" if service.endswith("aci") else "AKS",
            "modelIds": f"{rng.choice(_MODELS)}:{rng.randint(1, 40)}",
            "serviceTags": {"stage": rng.choice(_STAGES)},
            "serviceProperties": {},
        }
    else:
        drift_id = _uuid(rng)
        run_id = f"{drift_id}_{rng.randint(10**12, 10**13)}"
        subject = f"datadrift/{drift_id}/run/{run_id}"
        data = {
            "dataDriftId": drift_id,
            "dataDriftName": f"{rng.choice(_EXPERIMENTS)}-monitor",
            "runId": run_id,
            "baseDatasetId": _uuid(rng),
            "targetDatasetId": _uuid(rng),
            "driftCoefficient": round(rng.uniform(0.05, 0.95), 6),
            "startTime": "2026-10-31T00:00:00+00:00",
            "endTime": "2026-11-01T00:00:00+00:00",
        }
    if opts.body_size:
        data.setdefault("runProperties", {})
        padding = max(0, opts.body_size - 700)
        data["runProperties"] = {**data.get("runProperties", {}), "notes": "x" * padding}  # type: ignore[dict-item]
    if opts.pascal_case:
        data = {key[:1].upper() + key[1:]: value for key, value in data.items()}
    return subject, data


#: What Azure ML's model monitoring tags a monitoring run with when a signal breaches its threshold.
BREACH_TAG: Final = "azureml_modelmonitor_threshold_breached"
BREACH: Final = "has failed due to one or more features violating metric thresholds"


def _tag(kind: str, data: dict[str, object]) -> None:
    """Tags of a run, as monitoring and training set them (drawing nothing from the generator, so the
    stream is the same as before they existed): the fraud model's failed pipeline runs are its monitor's
    breaches; churn training's script runs ask for an evaluation."""
    tags = data["runTags"]
    assert isinstance(tags, dict)  # noqa: S101 - made above
    if data["runType"] == "azureml.PipelineRun" and data["experimentName"] == "fraud-detection":
        if kind == RUN_STATUS_CHANGED and data.get("runStatus") == "Failed":
            tags[BREACH_TAG] = f"Model monitor fraud-scorer-monitor {BREACH}"
            tags["azureml_modelmonitor_name"] = "fraud-scorer-monitor"
    elif data["runType"] == "azureml.scriptrun" and data["experimentName"] == "churn-training":
        tags["evaluate"] = "true"


def _envelope(
    kind: str, subject: str, data: dict[str, object], moment: datetime, rng: random.Random, opts: Options
) -> dict[str, object]:
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + f"{rng.randint(0, 9)}Z"
    if opts.schema == "cloudevents":
        return {
            "id": _uuid(rng),
            "source": opts.topic,
            "specversion": "1.0",
            "type": kind,
            "subject": subject,
            "time": stamp,
            "data": data,
        }
    return {
        "id": _uuid(rng),
        "topic": opts.topic,
        "subject": subject,
        "eventType": kind,
        "eventTime": stamp,
        "data": data,
        "dataVersion": "2",
        "metadataVersion": "1",
    }
