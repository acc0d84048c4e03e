"""Helpers shared by the test modules: events, filters and capture files to test with."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from worker.core.decoding import decode_body
from worker.core.filters import CompiledFilter, compile_filter
from worker.events import Event, Position
from worker.replay.capture import Codec, number_messages, write_capture

AT = ("rules", 0, "filter")
TOPIC = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ml-prod"
ENQUEUED = datetime(2026, 11, 1, 9, 0, 2, tzinfo=UTC)
#: When the capture files written by :func:`capture` start.
START = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)

#: Optional test inputs from outside the project (Azure ML sample events, real capture files), from
#: WORKER_TEST_DATA or a ``shared/data`` folder beside the checkout. Tests using them skip when absent.
TEST_DATA = Path(os.environ.get("WORKER_TEST_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


def decode_one(document: object) -> Event:
    """The one valid event that ``document``, serialised as a message body, decodes to."""
    decoded = decode_body(json.dumps(document))
    assert len(decoded) == 1
    event = decoded[0]
    assert isinstance(event, Event), event
    return event


def compile_ok(raw: object) -> CompiledFilter:
    """A filter that must compile without any problem."""
    reports: list[tuple[tuple[str | int, ...], str]] = []
    compiled = compile_filter(raw, AT, lambda path, message: reports.append((path, message)))
    assert reports == []
    assert compiled is not None
    return compiled


def make_event(
    event_id: str = "ev-1", *, data: object = None, sequence_number: int = 41, partition: str = "3"
) -> Event:
    envelope = {
        "id": event_id,
        "topic": TOPIC,
        "subject": "models/churn:3",
        "eventType": "Microsoft.MachineLearningServices.ModelRegistered",
        "eventTime": "2026-11-01T09:00:00.1234567Z",
        "data": {"modelName": "churn", "modelTags": {"stage": "production"}} if data is None else data,
        "dataVersion": "2",
    }
    (event,) = decode_body(json.dumps([envelope]), Position(partition, "8192", sequence_number, ENQUEUED))
    assert isinstance(event, Event)
    return event


def capture(
    root: Path,
    partition: str,
    bodies: list[bytes],
    *,
    minute: int = 0,
    first: int = 0,
    codec: Codec = "null",
    step: timedelta = timedelta(seconds=1),
) -> Path:
    start = START + timedelta(minutes=minute)
    path = root / "ns" / "hub" / partition / start.strftime("%Y/%m/%d/%H/%M/%S.avro")
    path.parent.mkdir(parents=True, exist_ok=True)
    messages = number_messages(bodies, start=start, step=step, partition_id=partition, first_sequence_number=first)
    with path.open("wb") as stream:
        write_capture(stream, messages, codec=codec)
    return path
