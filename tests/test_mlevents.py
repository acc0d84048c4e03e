"""The generator of realistic Azure ML events, and its model of Event Grid's delivery."""

from __future__ import annotations

from collections import Counter

import orjson
import pytest

from worker.core.decoding import decode_body
from worker.events import Event
from worker.sending import mlevents


def test_generated_events_decode_and_cover_every_type() -> None:
    events = [e for b in mlevents.bodies(200) for e in decode_body(b)]
    assert all(isinstance(e, Event) for e in events)
    assert {e.type for e in events if isinstance(e, Event)} == set(mlevents.EVENT_TYPES)


def test_runs_have_several_events_under_one_subject() -> None:
    subjects = Counter(
        str(e["subject"]) for e in mlevents.generate(300) if str(e["subject"]).startswith("experiments/")
    )
    assert max(subjects.values()) > 1


@pytest.mark.parametrize("schema", ["eventgrid", "cloudevents"])
def test_deliveries_hold_every_event_at_least_once_shuffled_within_bounds(schema: str) -> None:
    events = list(mlevents.generate(500, mlevents.Options(schema=schema)))  # type: ignore[arg-type]
    shuffle = 5
    delivered = list(mlevents.deliveries(events, shuffle=shuffle, duplicates=0.1, seed=1))
    ids = [
        str(orjson.loads(d.body)[0]["id"] if schema == "eventgrid" else orjson.loads(d.body)["id"]) for d in delivered
    ]
    order = {str(e["id"]): i for i, e in enumerate(events)}
    assert set(ids) == set(order)
    copies = Counter(ids)
    assert 20 < sum(n - 1 for n in copies.values()) < 100  # about 10% delivered twice
    first_seen = list(dict.fromkeys(ids))
    assert first_seen != list(order)  # shuffled...
    for position, event_id in enumerate(first_seen):
        assert abs(position - order[event_id]) <= 2 * shuffle + 2  # ...but only locally
    for delivery, event_id in zip(delivered, ids, strict=True):
        assert delivery.properties["aeg-output-event-id"] == event_id
    assert {d.properties["aeg-delivery-count"] for d in delivered} == {"0", "1"}


def test_deliveries_are_deterministic_for_a_seed() -> None:
    events = list(mlevents.generate(50))
    assert list(mlevents.deliveries(events, shuffle=3, duplicates=0.2, seed=9)) == list(
        mlevents.deliveries(events, shuffle=3, duplicates=0.2, seed=9)
    )
