"""Decoding Event Hubs message bodies into events: real Azure ML samples, body shapes, every way
a body can be unusable, and property-based checks that decoding never raises."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import TEST_DATA
from worker.core.decoding import decode, decode_body
from worker.errors import BadField, DecodeError, MissingField, NotAnEvent, NotJson, NotUtf8
from worker.events import Event, InvalidEvent, Message, Position, Schema

ML_EVENTS = TEST_DATA / "ml-events.json"
SAMPLE_KINDS = ("eventgrid_schema_doc_sample", "cloudevents_schema_doc_sample", "eventgrid_schema_sdk_fixture")
ML_TYPES = {
    "Microsoft.MachineLearningServices.RunCompleted",
    "Microsoft.MachineLearningServices.RunStatusChanged",
    "Microsoft.MachineLearningServices.ModelRegistered",
    "Microsoft.MachineLearningServices.ModelDeployed",
    "Microsoft.MachineLearningServices.DatasetDriftDetected",
}

TOPIC = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws"


def eventgrid(**overrides: object) -> dict[str, object]:
    """A valid Event Grid schema event; ``None`` as an override removes the field."""
    event: dict[str, object] = {
        "id": "e-1",
        "topic": TOPIC,
        "subject": "models/churn:3",
        "eventType": "Microsoft.MachineLearningServices.ModelRegistered",
        "eventTime": "2026-11-01T09:00:00.1234567Z",
        "data": {"modelName": "churn", "modelVersion": "3"},
        "dataVersion": "2",
        "metadataVersion": "1",
    }
    event.update(overrides)
    return {k: v for k, v in event.items() if v is not None}


def cloudevent(**overrides: object) -> dict[str, object]:
    """A valid CloudEvents 1.0 event; ``None`` as an override removes the field."""
    event: dict[str, object] = {
        "specversion": "1.0",
        "id": "c-1",
        "source": TOPIC,
        "subject": "endpoints/scorer",
        "type": "Microsoft.MachineLearningServices.ModelDeployed",
        "time": "2026-11-01T09:00:01Z",
        "data": {"serviceName": "scorer"},
    }
    event.update(overrides)
    return {k: v for k, v in event.items() if v is not None}


def body(value: object) -> bytes:
    return json.dumps(value).encode()


def only_event(decoded: tuple[Event | InvalidEvent, ...]) -> Event:
    assert len(decoded) == 1
    (item,) = decoded
    assert isinstance(item, Event), item
    return item


def only_invalid(decoded: tuple[Event | InvalidEvent, ...]) -> InvalidEvent:
    assert len(decoded) == 1
    (item,) = decoded
    assert isinstance(item, InvalidEvent), item
    return item


_ISO = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)")


def expected_time(text: str) -> datetime:
    """An independent reading of the timestamps in the samples: fractions truncated to microseconds."""
    match = _ISO.fullmatch(text)
    assert match, text
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micros = int((fraction or "0")[:6].ljust(6, "0"))
    if zone == "Z":
        tz = UTC
    else:
        sign = 1 if zone[0] == "+" else -1
        tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    return datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micros, tzinfo=tz)


# --- real samples -------------------------------------------------------------------------------


def _samples() -> list[tuple[str, str, list[dict[str, object]]]]:
    if not ML_EVENTS.is_file():
        return []
    document = json.loads(ML_EVENTS.read_text(encoding="utf-8"))
    return [
        (event_type, kind, spec[kind])
        for event_type, spec in document["events"].items()
        for kind in SAMPLE_KINDS
        if kind in spec
    ]


@pytest.fixture(scope="module")
def samples() -> list[tuple[str, str, list[dict[str, object]]]]:
    found = _samples()
    if not found:
        pytest.skip(f"the Azure ML event samples are not at {ML_EVENTS}")
    return found


def test_the_samples_cover_every_ml_event_type_in_both_schemas(samples):
    assert {event_type for event_type, _, _ in samples} == ML_TYPES
    assert len(samples) == len(ML_TYPES) * len(SAMPLE_KINDS)


@pytest.mark.parametrize(
    ("event_type", "kind", "events"),
    [pytest.param(*sample, id=f"{sample[0].rsplit('.', 1)[1]}-{sample[1]}") for sample in _samples()]
    or [pytest.param(None, None, None, marks=pytest.mark.skip(reason=f"no Azure ML event samples at {ML_EVENTS}"))],
)
def test_every_sample_decodes_to_its_fields(event_type, kind, events):
    raw = orjson.dumps(events)
    position = Position("3", "4096", 17)
    decoded = decode(Message(raw, position, {"aeg-delivery-count": 0}))
    assert len(decoded) == len(events) == 1
    for index, (item, source) in enumerate(zip(decoded, events, strict=True)):
        assert isinstance(item, Event), item
        cloud = kind.startswith("cloudevents")
        assert item.schema is (Schema.CLOUD_EVENTS if cloud else Schema.EVENT_GRID)
        assert item.id == source["id"]
        assert item.type == event_type == source["type" if cloud else "eventType"]
        assert item.subject == source["subject"]
        assert item.topic == source["source" if cloud else "topic"]
        assert item.topic is not None
        assert "/workspaces/" in item.topic
        assert item.time is not None
        assert item.time.tzinfo is not None
        assert item.time.utcoffset() == timedelta(0)
        assert item.time == expected_time(str(source["time" if cloud else "eventTime"]))
        assert item.data_version == (None if cloud else source["dataVersion"])
        assert item.data == source["data"]
        assert item.envelope == source
        assert item.body_index == index
        assert item.position == position
        assert item.message.properties == {"aeg-delivery-count": 0}


def test_a_doc_sample_reads_exactly(samples):
    events = next(e for t, k, e in samples if t.endswith("ModelRegistered") and k == "eventgrid_schema_doc_sample")
    event = only_event(decode_body(orjson.dumps(events)))
    assert event.id == "831e1650-001e-001b-66ab-eeb76e069631"
    assert event.subject == "models/sklearn_regression_model:20"
    # Seven fraction digits (.9584103): the tick beyond microseconds is dropped.
    assert event.time == datetime(2017, 6, 26, 18, 41, 0, 958410, tzinfo=UTC)
    assert event.data_version == ""
    assert isinstance(event.data, dict)
    assert event.data["ModelVersion"] == 20


def test_an_sdk_fixture_reads_exactly(samples):
    events = next(e for t, k, e in samples if t.endswith("RunCompleted") and k == "eventgrid_schema_sdk_fixture")
    event = only_event(decode_body(orjson.dumps(events)))
    assert event.id == "044ac44d-462c-4043-99eb-d9e01dc760ab"
    assert event.time == datetime(2019, 10, 18, 19, 29, 55, 885603, tzinfo=UTC)
    assert event.data_version == "2"
    assert event.topic is not None
    assert event.topic.endswith("/workspaces/jenns-canary")


# --- body shapes --------------------------------------------------------------------------------


def test_a_single_object():
    event = only_event(decode_body(body(eventgrid())))
    assert event.id == "e-1"
    assert event.type == "Microsoft.MachineLearningServices.ModelRegistered"
    assert event.subject == "models/churn:3"
    assert event.topic == TOPIC
    assert event.time == datetime(2026, 11, 1, 9, 0, 0, 123456, tzinfo=UTC)
    assert event.data_version == "2"
    assert event.data == {"modelName": "churn", "modelVersion": "3"}
    assert event.schema is Schema.EVENT_GRID
    assert event.body_index == 0


def test_a_one_element_array():
    event = only_event(decode_body(body([cloudevent()])))
    assert event.id == "c-1"
    assert event.type == "Microsoft.MachineLearningServices.ModelDeployed"
    assert event.topic == TOPIC
    assert event.subject == "endpoints/scorer"
    assert event.time == datetime(2026, 11, 1, 9, 0, 1, tzinfo=UTC)
    assert event.data_version is None
    assert event.schema is Schema.CLOUD_EVENTS
    assert event.body_index == 0


def test_a_multi_element_array_keeps_order_and_indices():
    events = [eventgrid(id=f"e-{i}") if i % 2 else cloudevent(id=f"e-{i}") for i in range(5)]
    decoded = decode_body(body(events))
    assert [type(item) for item in decoded] == [Event] * 5
    assert [(item.id, item.body_index) for item in decoded if isinstance(item, Event)] == [
        (f"e-{i}", i) for i in range(5)
    ]
    assert [item.schema for item in decoded if isinstance(item, Event)] == [
        Schema.CLOUD_EVENTS,
        Schema.EVENT_GRID,
        Schema.CLOUD_EVENTS,
        Schema.EVENT_GRID,
        Schema.CLOUD_EVENTS,
    ]


def test_str_and_bytes_bodies_decode_alike():
    text = json.dumps([eventgrid(subject="models/modèle-ü:1")], ensure_ascii=False)
    from_str = only_event(decode_body(text))
    from_bytes = only_event(decode_body(text.encode()))
    assert from_str.subject == from_bytes.subject == "models/modèle-ü:1"
    assert from_str.envelope == from_bytes.envelope
    assert from_str.message.body == from_bytes.message.body == text.encode()


def test_a_utf8_bom_is_skipped():
    event = only_event(decode_body(b"\xef\xbb\xbf" + body([eventgrid()])))
    assert event.id == "e-1"
    invalid = only_invalid(decode_body(b"\xef\xbb\xbf"))
    assert isinstance(invalid.error, NotJson)


def test_unknown_fields_are_ignored_but_kept_in_the_envelope():
    event = only_event(decode_body(body(eventgrid(somethingNew={"x": 1}, traceparent="00-abc"))))
    assert event.id == "e-1"
    assert event.envelope["somethingNew"] == {"x": 1}
    assert event.envelope["traceparent"] == "00-abc"
    cloud = only_event(decode_body(body(cloudevent(partitionkey="models/x", dataschema="urn:x"))))
    assert cloud.id == "c-1"
    assert cloud.envelope["partitionkey"] == "models/x"


def test_optional_fields_may_be_absent_or_null():
    event = only_event(decode_body(body(eventgrid(topic=None, dataVersion=None, data=None))))
    assert event.topic is None
    assert event.data_version is None
    assert event.data is None
    cloud = only_event(decode_body(body(cloudevent(subject=None, time=None, data=None))))
    assert cloud.subject is None
    assert cloud.time is None
    assert cloud.data is None
    with_nulls = only_event(decode_body(body({**eventgrid(), "topic": None, "dataVersion": None})))
    assert with_nulls.topic is None
    assert with_nulls.data_version is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-01T09:00:00Z", datetime(2026, 11, 1, 9, 0, tzinfo=UTC)),
        ("2026-11-01T09:00:00.5+00:00", datetime(2026, 11, 1, 9, 0, 0, 500000, tzinfo=UTC)),
        ("2026-11-01T09:00:00.9999999Z", datetime(2026, 11, 1, 9, 0, 0, 999999, tzinfo=UTC)),
        # No zone: read as UTC.
        ("2026-11-01T09:00:00", datetime(2026, 11, 1, 9, 0, tzinfo=UTC)),
        # Another zone: the same instant.
        ("2026-11-01T11:00:00+02:00", datetime(2026, 11, 1, 9, 0, tzinfo=UTC)),
    ],
)
def test_event_times(text, expected):
    event = only_event(decode_body(body(eventgrid(eventTime=text))))
    assert event.time == expected
    assert event.time is not None
    assert event.time.tzinfo is not None


def test_message_properties_and_position_are_carried_through():
    enqueued = datetime(2026, 11, 1, 9, 0, 5, tzinfo=UTC)
    position = Position("7", "123456", 9_000_000_001, enqueued)
    properties = {
        "aeg-subscription-name": "ML-TO-HUB",
        "aeg-delivery-count": 2,
        "aeg-event-type": "Notification",
        "aeg-metadata-version": "1",
        "aeg-data-version": "2",
        "aeg-output-event-id": "e-1",
    }
    message = Message(body([eventgrid(), eventgrid(id="e-2")]), position, properties)
    decoded = decode(message)
    assert len(decoded) == 2
    for item in decoded:
        assert isinstance(item, Event)
        assert item.message is message
        assert item.position is position
        assert item.position.partition_id == "7"
        assert item.position.offset == "123456"
        assert item.position.sequence_number == 9_000_000_001
        assert item.position.enqueued_time == enqueued
        assert item.message.properties["aeg-delivery-count"] == 2
        assert item.message.properties["aeg-subscription-name"] == "ML-TO-HUB"
    invalid = only_invalid(decode(Message(b"\xff", position, properties)))
    assert invalid.message.properties is properties
    assert invalid.position is position


def test_decode_body_defaults_to_partition_0_and_no_properties():
    event = only_event(decode_body(body(eventgrid())))
    assert event.position == Position("0")
    assert event.position.sequence_number is None
    assert event.message.properties == {}


@pytest.mark.parametrize(
    "number",
    [2**64, 2**70 + 1, -(2**63) - 1, -(2**80), 10**40 + 7],
    ids=["2^64", "2^70+1", "-2^63-1", "-2^80", "41-digits"],
)
def test_integers_beyond_64_bits_decode_as_the_nearest_double(number):
    raw = body([eventgrid(data={"modelVersion": number, "nested": [1, {"n": number}], "fine": 3})])
    event = only_event(decode_body(raw))
    assert event.data == {"modelVersion": float(number), "nested": [1, {"n": float(number)}], "fine": 3}
    assert isinstance(event.data, dict)
    assert type(event.data["modelVersion"]) is float


def test_an_integer_beyond_the_range_of_a_double_decodes_exactly():
    number = 10**400 + 1
    event = only_event(decode_body(body([eventgrid(data={"n": number, "fine": 3})])))
    assert event.data == {"n": number, "fine": 3}


def test_64_bit_integers_decode_exactly():
    event = only_event(decode_body(body([eventgrid(data={"max": 2**63 - 1, "min": -(2**63), "u": 2**64 - 1})])))
    assert event.data == {"max": 2**63 - 1, "min": -(2**63), "u": 2**64 - 1}


def test_a_long_digit_run_inside_a_string_decodes_alike():
    digits = "12345678901234567890123"
    event = only_event(decode_body(body([eventgrid(id=digits, data={"runId": f"run_{digits}", "n": 2**63 - 1})])))
    assert event.id == digits
    assert event.data == {"runId": f"run_{digits}", "n": 2**63 - 1}


def test_a_surrogate_pair_escape_decodes():
    event = only_event(
        decode_body(
            b'[{"id": "e-\\ud83d\\ude00", "eventType": "t", "subject": "s", "eventTime": "2026-11-01T09:00:00Z"}]'
        )
    )
    assert event.id == "e-\U0001f600"


@pytest.mark.parametrize(
    "raw",
    [
        b'[{"id": "e-\\ud800", "eventType": "t", "subject": "s", "eventTime": "2026-11-01T09:00:00Z"}]',
        # A long number sends the body down the exact path, which must refuse the surrogate too.
        b'[{"id": "e-\\udfff", "eventType": "t", "subject": "s", "eventTime": "2026-11-01T09:00:00Z", "n": 1e400}]',
        b'[{"id": "e", "eventType": "t", "subject": "s", "eventTime": "2026-11-01T09:00:00Z", '
        b'"data": {"\\ud800": 18446744073709551616}}]',
    ],
    ids=["in-id", "with-huge-float", "in-a-key-with-a-long-integer"],
)
def test_an_escaped_lone_surrogate_is_not_json(raw):
    invalid = only_invalid(decode_body(raw))
    assert type(invalid.error) is NotJson
    assert invalid.body_index is None


def test_floats_keep_their_value():
    event = only_event(decode_body(body([eventgrid(data={"driftCoefficient": 0.8350349068479208})])))
    assert event.data == {"driftCoefficient": 0.8350349068479208}


# --- invalid bodies -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "error", "index", "fragment"),
    [
        pytest.param(b"\xff\xfe[]", NotUtf8, None, "not UTF-8", id="not-utf8"),
        pytest.param(b'[{"id": "\xe9"}]', NotUtf8, None, "(byte 9: b'\\xe9')", id="latin-1"),
        pytest.param("\ud800", NotUtf8, None, "not UTF-8", id="lone-surrogate-str"),
        pytest.param(b"not json", NotJson, None, "not JSON", id="not-json"),
        pytest.param(b"", NotJson, None, "not JSON", id="empty-body"),
        pytest.param(b'[{"id": "a"}', NotJson, None, "not JSON", id="truncated"),
        pytest.param(b"[NaN]", NotJson, None, "NaN", id="nan"),
        pytest.param(b'{"a": Infinity}', NotJson, None, "Infinity", id="infinity"),
        pytest.param(b"42", NotAnEvent, 0, "JSON number, not an object", id="scalar-number"),
        pytest.param(b'"hello"', NotAnEvent, 0, "JSON string, not an object", id="scalar-string"),
        pytest.param(b"null", NotAnEvent, 0, "JSON null, not an object", id="null"),
        pytest.param(b"true", NotAnEvent, 0, "JSON boolean, not an object", id="boolean"),
        pytest.param(b"[]", NotAnEvent, None, "empty JSON array", id="empty-array"),
        pytest.param(b"[[]]", NotAnEvent, 0, "JSON array, not an object", id="array-in-array"),
        pytest.param(b"{}", NotAnEvent, 0, "neither Event Grid schema", id="empty-object"),
        pytest.param(
            body({"id": "x", "type": "t", "source": "s"}),
            NotAnEvent,
            0,
            "(no 'specversion'); its keys: id, source, type",
            id="no-eventType-nor-specversion",
        ),
        pytest.param(body(eventgrid(id=None)), MissingField, 0, "has no 'id'", id="eg-missing-id"),
        pytest.param(body(eventgrid(id="")), BadField, 0, "'id' must be a non-empty string", id="eg-empty-id"),
        pytest.param(body({**eventgrid(), "id": None}), MissingField, 0, "has no 'id'", id="eg-null-id"),
        pytest.param(body(eventgrid(subject=None)), MissingField, 0, "has no 'subject'", id="eg-missing-subject"),
        pytest.param(body(eventgrid(eventTime=None)), MissingField, 0, "has no 'eventTime'", id="eg-missing-time"),
        pytest.param(body({**eventgrid(), "eventType": None}), MissingField, 0, "'eventType'", id="eg-null-type"),
        pytest.param(body(eventgrid(id=7)), BadField, 0, "'id' must be a non-empty string, got 7", id="eg-id-number"),
        pytest.param(body(eventgrid(eventType=["x"])), BadField, 0, "'eventType' must be", id="eg-type-list"),
        pytest.param(body(eventgrid(subject={})), BadField, 0, "'subject' must be", id="eg-subject-object"),
        pytest.param(body(eventgrid(topic=5)), BadField, 0, "'topic' must be a string, got 5", id="eg-topic-number"),
        pytest.param(body(eventgrid(dataVersion=2)), BadField, 0, "'dataVersion' must be a string", id="eg-dataver"),
        pytest.param(
            body(eventgrid(eventTime="yesterday")),
            BadField,
            0,
            "'eventTime' is not an ISO 8601 time: 'yesterday'",
            id="eg-bad-time",
        ),
        pytest.param(body(eventgrid(eventTime="2026-13-01T00:00:00Z")), BadField, 0, "ISO 8601", id="eg-month-13"),
        pytest.param(body(eventgrid(eventTime=1700000000)), BadField, 0, "'eventTime' must be", id="eg-time-number"),
        pytest.param(body(cloudevent(id=None)), MissingField, 0, "has no 'id'", id="ce-missing-id"),
        pytest.param(body(cloudevent(type=None)), MissingField, 0, "has no 'type'", id="ce-missing-type"),
        pytest.param(body(cloudevent(source=None)), MissingField, 0, "has no 'source'", id="ce-missing-source"),
        pytest.param(body(cloudevent(id=1)), BadField, 0, "'id' must be a non-empty string, got 1", id="ce-id-number"),
        pytest.param(body(cloudevent(time="soon")), BadField, 0, "'time' is not an ISO 8601 time", id="ce-bad-time"),
        pytest.param(body(cloudevent(subject=3)), BadField, 0, "'subject' must be a string", id="ce-subject-number"),
        pytest.param(
            body(cloudevent(specversion="0.3")),
            BadField,
            0,
            "specversion '0.3' is not supported (expected '1.0')",
            id="ce-specversion-0.3",
        ),
        pytest.param(body(cloudevent(specversion=1.0)), BadField, 0, "specversion 1.0 is not", id="ce-spec-number"),
        pytest.param(body([eventgrid(), 5]), NotAnEvent, 1, "event #1 is a JSON number", id="second-not-object"),
    ],
)
def test_invalid_bodies(raw, error, index, fragment):
    decoded = decode_body(raw)
    invalid = decoded[-1]
    assert isinstance(invalid, InvalidEvent), invalid
    assert type(invalid.error) is error
    assert isinstance(invalid.error, DecodeError)
    assert invalid.body_index == index
    assert fragment in str(invalid.error)
    assert invalid.error.reason == error.reason != DecodeError.reason
    if index is not None:
        assert f"event #{index}" in str(invalid.error)


def test_an_array_of_non_objects_gives_one_invalid_event_per_element():
    decoded = decode_body(b'[1, "two", null]')
    assert [type(item) for item in decoded] == [InvalidEvent] * 3
    assert [item.body_index for item in decoded if isinstance(item, InvalidEvent)] == [0, 1, 2]
    assert all(isinstance(item, InvalidEvent) and type(item.error) is NotAnEvent for item in decoded)


def test_a_good_and_a_bad_element():
    position = Position("1", "10", 5)
    decoded = decode(Message(body([eventgrid(id="good"), eventgrid(id=None), cloudevent(id="also-good")]), position))
    assert len(decoded) == 3
    good, bad, also_good = decoded
    assert isinstance(good, Event)
    assert good.id == "good"
    assert good.body_index == 0
    assert isinstance(bad, InvalidEvent)
    assert bad.body_index == 1
    assert type(bad.error) is MissingField
    assert "event #1 has no 'id'" in str(bad.error)
    assert bad.position is position
    assert isinstance(also_good, Event)
    assert also_good.body_index == 2


def test_a_whole_body_failure_has_no_index():
    invalid = only_invalid(decode_body(b"{not json"))
    assert invalid.body_index is None
    assert "starts with '{not json'" in str(invalid.error)


def test_deeply_nested_json_is_refused_not_raised():
    invalid = only_invalid(decode_body(b"[" * 100_000 + b"]" * 100_000))
    assert type(invalid.error) is NotJson


# --- property-based -----------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["1.0", "0.3", "2026-11-01T09:00:00Z", "2026-11-01T09:00:00.1234567+00:00", "", "not a time"])
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
ENVELOPE_KEYS = (
    *("id", "eventType", "subject", "eventTime", "topic", "dataVersion", "data"),
    *("specversion", "type", "source", "time", "dataversion"),
)
event_like = st.dictionaries(st.sampled_from(ENVELOPE_KEYS), json_values, max_size=len(ENVELOPE_KEYS))
bodies = json_values | event_like | st.lists(json_values | event_like, max_size=4)


def check_decoded(decoded: object) -> None:
    assert isinstance(decoded, tuple)
    assert decoded
    for item in decoded:
        assert isinstance(item, Event | InvalidEvent)
        if isinstance(item, Event):
            assert isinstance(item.id, str)
            assert item.id
            assert isinstance(item.type, str)
            assert item.time is None or item.time.tzinfo is not None
        else:
            assert isinstance(item.error, DecodeError)
            assert str(item.error)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise(raw):
    check_decoded(decode_body(raw))


@settings(max_examples=300, deadline=None)
@given(bodies, st.booleans())
def test_arbitrary_json_never_raises(value, as_list):
    raw = json.dumps([value] if as_list else value)
    decoded = decode_body(raw)
    check_decoded(decoded)
    if isinstance(value, list) and value and not as_list:
        assert len(decoded) == len(value)
        assert [item.body_index for item in decoded] == list(range(len(value)))
