"""Event Hubs Capture files: real ones written by Azure, round trips, the time format, bad files."""

from __future__ import annotations

import io
import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import fastavro
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import TEST_DATA
from worker.errors import CaptureError, WorkerError
from worker.events import Message, Position
from worker.replay.capture import (
    ENQUEUED_TIME_PROPERTY,
    SCHEMA,
    format_enqueued_time,
    number_messages,
    parse_enqueued_time,
    partition_from_path,
    read_capture,
    window_from_path,
    write_capture,
)
from worker.sending import mlevents

SAMPLES = TEST_DATA / "capture-samples"
START = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
#: Bounds for hypothesis, which wants them naive.
YEAR_1000 = datetime(1000, 1, 1, tzinfo=UTC).replace(tzinfo=None)
YEAR_2000 = datetime(2000, 1, 1, tzinfo=UTC).replace(tzinfo=None)
YEAR_2100 = datetime(2100, 1, 1, tzinfo=UTC).replace(tzinfo=None)


def _utc(year: int, month: int, day: int, hour: int, minute: int, second: int, micro: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


def _sample(name: str) -> Path:
    path = SAMPLES / name
    if not path.exists():
        pytest.skip(f"real capture samples are not available ({path} is missing)")
    return path


def _read_file(path: Path, partition_id: str = "3") -> list[Message]:
    with path.open("rb") as stream:
        return list(read_capture(stream, partition_id=partition_id, name=path.name))


def _read_bytes(data: bytes, name: str = "test.avro") -> list[Message]:
    return list(read_capture(io.BytesIO(data), partition_id="0", name=name))


def _written(messages: list[Message], codec: str = "null", **options: int) -> bytes:
    stream = io.BytesIO()
    assert write_capture(stream, messages, codec=codec, **options) == len(messages)  # type: ignore[arg-type]
    return stream.getvalue()


def _ml_messages(count: int, **options: object) -> list[Message]:
    return list(number_messages(mlevents.bodies(count), start=START, step=timedelta(milliseconds=250), **options))  # type: ignore[arg-type]


class ReadOnly(io.RawIOBase):
    """A stream that can only be read forward, as a blob download is."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        chunk = self._inner.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


# -- real files written by Azure -----------------------------------------------------------------


def test_reads_a_real_capture_file() -> None:
    messages = _read_file(_sample("cosh_EventhubCaptureExtractor_54.avro"))

    assert len(messages) == 380
    assert [m.position.sequence_number for m in messages] == list(range(8180, 8560))
    assert messages[0].position == Position("3", "2743296", 8180, datetime(2017, 10, 16, 18, 18, 55, tzinfo=UTC))
    assert messages[-1].position == Position("3", "2870616", 8559, datetime(2017, 10, 16, 18, 23, 46, tzinfo=UTC))
    offsets = [int(m.position.offset or "") for m in messages]
    assert offsets == sorted(offsets)
    times = [m.position.enqueued_time for m in messages]
    assert times == sorted(times)  # type: ignore[type-var]
    assert all(m.properties == {} for m in messages)
    assert all(isinstance(orjson.loads(m.body), dict) for m in messages)


def test_reads_the_real_empty_file() -> None:
    assert _read_file(_sample("cosh_EventhubCaptureExtractor_empty.avro")) == []


def test_prefers_the_enqueued_time_in_milliseconds() -> None:
    [message] = _read_file(_sample("metered-billing_p9--2022-12-09--16-50-12.avro"), "9")

    assert message.position == Position(
        "9", "1456", 1, datetime(2022, 12, 9, 16, 51, 25, 193_000, tzinfo=UTC)
    )  # EnqueuedTimeUtc says "12/9/2022 4:51:25 PM"; x-opt-enqueued-time adds the milliseconds
    assert orjson.loads(message.body)["type"] == "UsageReported"


def test_reads_every_record_of_a_real_file_with_system_properties() -> None:
    path = _sample("metered-billing_p9--2022-12-09--17-10-12.avro")
    messages = _read_file(path)
    with path.open("rb") as stream:
        raw = list(fastavro.reader(stream))

    assert [m.position.sequence_number for m in messages] == list(range(4, 24))
    for message, record in zip(messages, raw, strict=True):
        assert isinstance(record, dict)
        moment = message.position.enqueued_time
        assert moment is not None
        assert moment.microsecond % 1000 == 0
        assert moment.replace(microsecond=0) == parse_enqueued_time(record["EnqueuedTimeUtc"])
        assert message.position.offset == record["Offset"]


def test_writes_the_schema_azure_writes() -> None:
    with _sample("cosh_EventhubCaptureExtractor_empty.avro").open("rb") as stream:
        azure = fastavro.reader(stream).writer_schema
    ours = fastavro.reader(io.BytesIO(_written([]))).writer_schema

    assert ours == azure
    assert _read_bytes(_written([])) == []


# -- writing and reading back --------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["null", "deflate"])
def test_round_trip_of_ml_events(codec: str) -> None:
    messages = _ml_messages(300, partition_id="0", first_sequence_number=41, first_offset=1000)

    data = _written(messages, codec, sync_interval=4000)  # several blocks

    assert fastavro.reader(io.BytesIO(data)).codec == codec
    assert _read_bytes(data) == messages
    assert [m.position.sequence_number for m in messages] == list(range(41, 341))


def test_writes_records_as_azure_does() -> None:
    moment = datetime(2022, 12, 9, 16, 51, 25, 193_999, tzinfo=UTC)
    message = Message(b'[{"id": "1"}]', Position("0", "1456", 1, moment), {"aeg-delivery-count": 0})

    [record] = list(fastavro.reader(io.BytesIO(_written([message]))))

    assert record == {
        "SequenceNumber": 1,
        "Offset": "1456",
        "EnqueuedTimeUtc": "12/9/2022 4:51:25 PM",
        "SystemProperties": {ENQUEUED_TIME_PROPERTY: 1670604685193},
        "Properties": {"aeg-delivery-count": 0},
        "Body": b'[{"id": "1"}]',
    }


def test_every_property_branch_round_trips() -> None:
    properties = {
        "long": 2**63 - 1,
        "negative": -(2**63),
        "double": 2.5,
        "string": "Notification",
        "bytes": b"\x00\xff",
        "null": None,
        "aeg-delivery-count": 3,
    }
    [message] = _ml_messages(1, properties=properties)

    [back] = _read_bytes(_written([message], "deflate"))

    assert back.properties == properties
    assert {key: type(value) for key, value in back.properties.items()} == {
        key: type(value) for key, value in properties.items()
    }


def test_a_null_body_reads_as_empty_bytes() -> None:
    schema = fastavro.parse_schema(SCHEMA)
    record = {
        "SequenceNumber": 5,
        "Offset": "10",
        "EnqueuedTimeUtc": "1/2/2026 3:04:05 AM",
        "SystemProperties": {},
        "Properties": {},
        "Body": None,
    }
    stream = io.BytesIO()
    fastavro.writer(stream, schema, [record])

    [message] = _read_bytes(stream.getvalue())

    assert message == Message(b"", Position("0", "10", 5, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)), {})


def test_reads_forward_only_streams() -> None:
    messages = _ml_messages(200)
    data = _written(messages, "deflate", sync_interval=2000)

    stream = io.BufferedReader(ReadOnly(data), 512)

    assert list(read_capture(stream, partition_id="0", name="x.avro")) == messages


property_values = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(),
    st.binary(),
    st.none(),
)
enqueued_times = st.datetimes(min_value=YEAR_2000, max_value=YEAR_2100, timezones=st.just(UTC)).map(
    lambda moment: moment.replace(microsecond=moment.microsecond // 1000 * 1000)
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.binary(max_size=300),
            st.dictionaries(st.text(max_size=20), property_values, max_size=6),
            enqueued_times,
            st.integers(min_value=0, max_value=2**63 - 1),
            st.text(max_size=20),
        ),
        max_size=20,
    ),
    st.sampled_from(["null", "deflate"]),
)
def test_round_trip_of_arbitrary_messages(
    rows: list[tuple[bytes, dict[str, object], datetime, int, str]], codec: str
) -> None:
    messages = [
        Message(body, Position("0", offset, sequence, moment), properties)
        for body, properties, moment, sequence, offset in rows
    ]

    assert _read_bytes(_written(messages, codec)) == messages


@pytest.mark.parametrize(
    ("message", "error", "says"),
    [
        (Message(b"x", Position("0", None, 1, START)), ValueError, "needs a sequence number, an offset"),
        (Message(b"x", Position("0", "1", None, START)), ValueError, "needs a sequence number, an offset"),
        (Message(b"x", Position("0", "1", 1, None)), ValueError, "needs a sequence number, an offset"),
        (Message(b"x", Position("0", "1", 1, START.replace(tzinfo=None))), ValueError, "no time zone"),
        (Message(b"x", Position("0", "1", 1, START), {"flag": True}), TypeError, "'flag' is a bool"),
        (Message(b"x", Position("0", "1", 1, START), {"big": 2**63}), ValueError, "64-bit"),
        (Message(b"x", Position("0", "1", 1, START), {"list": [1]}), TypeError, "'list' is a list"),
    ],
)
def test_write_refuses_what_capture_cannot_hold(message: Message, error: type[Exception], says: str) -> None:
    with pytest.raises(error, match=says):
        write_capture(io.BytesIO(), [message])


def test_number_messages_gives_event_hubs_positions() -> None:
    messages = list(
        number_messages(
            [b"a" * 10, b"", b"c"],
            start=START,
            step=timedelta(seconds=2),
            partition_id="4",
            first_sequence_number=7,
            first_offset=100,
        )
    )

    assert [m.position.sequence_number for m in messages] == [7, 8, 9]
    offsets = [int(m.position.offset or "") for m in messages]
    assert offsets[0] == 100
    assert offsets == sorted(set(offsets))
    assert [m.position.enqueued_time for m in messages] == [
        START,
        START + timedelta(seconds=2),
        START + timedelta(seconds=4),
    ]
    assert {m.position.partition_id for m in messages} == {"4"}


# -- the time format -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12/9/2022 4:51:25 PM", _utc(2022, 12, 9, 16, 51, 25)),
        ("10/16/2017 6:18:55 PM", _utc(2017, 10, 16, 18, 18, 55)),
        ("1/1/2024 12:00:00 AM", _utc(2024, 1, 1, 0, 0, 0)),  # midnight
        ("1/1/2024 12:59:59 AM", _utc(2024, 1, 1, 0, 59, 59)),
        ("1/1/2024 12:00:00 PM", _utc(2024, 1, 1, 12, 0, 0)),  # noon
        ("1/1/2024 1:00:00 AM", _utc(2024, 1, 1, 1, 0, 0)),
        ("1/1/2024 11:59:59 AM", _utc(2024, 1, 1, 11, 59, 59)),
        ("12/31/2023 11:59:59 PM", _utc(2023, 12, 31, 23, 59, 59)),
        ("02/29/2024 01:02:03 pm", _utc(2024, 2, 29, 13, 2, 3)),  # padded, lower case
        ("2/29/2024 13:02:03", _utc(2024, 2, 29, 13, 2, 3)),  # 24-hour clock
        ("12/9/2022 4:51:25.193 PM", _utc(2022, 12, 9, 16, 51, 25, 193_000)),
        ("2022-12-09T16:51:25Z", _utc(2022, 12, 9, 16, 51, 25)),
        ("2022-12-09T16:51:25.1234567Z", _utc(2022, 12, 9, 16, 51, 25, 123_456)),
        ("2022-12-09T17:51:25+01:00", _utc(2022, 12, 9, 16, 51, 25)),
        ("2022-12-09 16:51:25", _utc(2022, 12, 9, 16, 51, 25)),  # no offset: UTC
    ],
)
def test_parse_enqueued_time(text: str, expected: datetime) -> None:
    parsed = parse_enqueued_time(text)

    assert parsed == expected
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "13/1/2024 1:00:00 PM",  # month 13
        "2/30/2024 1:00:00 PM",  # no such day
        "1/1/2024 0:00:00 AM",  # no hour 0 on a 12-hour clock
        "1/1/2024 13:00:00 PM",
        "1/1/2024 1:60:00 PM",
        "1/1/24 1:00:00 PM",  # two-digit year
        "1/1/2024 1:00 PM",
        "1/1/2024 1:00:00 XM",
        "1/1/2024 1:00:00 PM UTC",
        "1/1/2024",
        "1/+1/2024 1:00:00 PM",
        "1/1_0/2024 1:00:00 PM",
        "\uff11/1/2024 1:00:00 PM",  # a full-width digit
        "2022-13-09T16:51:25Z",
    ],
)
def test_parse_enqueued_time_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not an enqueued time"):
        parse_enqueued_time(text)


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2022, 12, 9, 16, 51, 25, 999_999, tzinfo=UTC), "12/9/2022 4:51:25 PM"),
        (datetime(2024, 1, 1, 0, 0, 0, tzinfo=UTC), "1/1/2024 12:00:00 AM"),
        (datetime(2024, 1, 1, 12, 5, 9, tzinfo=UTC), "1/1/2024 12:05:09 PM"),
        (datetime(2024, 1, 1, 1, 0, 0, tzinfo=timezone(timedelta(hours=2))), "12/31/2023 11:00:00 PM"),
    ],
)
def test_format_enqueued_time(moment: datetime, text: str) -> None:
    assert format_enqueued_time(moment) == text


@given(st.datetimes(min_value=YEAR_1000, timezones=st.just(UTC)))
def test_formatted_times_parse_back_to_the_second(moment: datetime) -> None:
    assert parse_enqueued_time(format_enqueued_time(moment)) == moment.replace(microsecond=0)


# -- files that are not capture files ------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"garbage, not Avro at all", b"Obj\x01", b"\x00" * 100])
def test_a_file_that_is_not_avro(data: bytes) -> None:
    with pytest.raises(CaptureError, match=r"^broken\.avro: not an Avro file"):
        _read_bytes(data, "broken.avro")


def test_a_truncated_file_names_the_file_and_the_record() -> None:
    data = _written(_ml_messages(200), sync_interval=4000)

    truncated = r"^cut\.avro: record (\d+): cannot be read, the file is truncated"
    with pytest.raises(CaptureError, match=truncated) as caught:
        _read_bytes(data[: len(data) * 2 // 3], "cut.avro")

    assert isinstance(caught.value, WorkerError)
    record = int(str(caught.value).split("record ")[1].split(":")[0])
    assert 1 < record <= 200


@pytest.mark.parametrize("codec", ["null", "deflate"])
def test_truncation_anywhere_gives_a_capture_error(codec: str) -> None:
    messages = _ml_messages(40)
    data = _written(messages, codec, sync_interval=2000)
    errors = 0

    for cut in range(0, len(data) - 1, 97):
        try:
            back = _read_bytes(data[:cut], "cut.avro")
        except CaptureError as exc:
            errors += str(exc).startswith("cut.avro: ")
        else:  # a cut right after a block leaves a shorter valid file: Avro does not record the count
            assert back == messages[: len(back)]
            assert len(back) < len(messages)

    assert errors > len(data) // 97 * 0.9


@pytest.mark.parametrize("codec", ["null", "deflate"])
def test_corruption_gives_a_capture_error_or_records(codec: str) -> None:
    data = _written(_ml_messages(60), codec, sync_interval=2000)
    rng = random.Random(5)
    named = 0

    for _ in range(300):
        corrupt = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            corrupt[rng.randrange(len(corrupt))] = rng.randrange(256)
        try:
            _read_bytes(bytes(corrupt), "flipped.avro")
        except CaptureError as exc:  # any other exception fails the test
            named += str(exc).startswith("flipped.avro: ")
        else:
            named += 1

    assert named == 300


def _avro(schema: dict[str, object], records: list[dict[str, object]]) -> bytes:
    stream = io.BytesIO()
    fastavro.writer(stream, fastavro.parse_schema(schema), records)
    return stream.getvalue()


def _eventdata_with(**types: object) -> dict[str, object]:
    """Azure's schema with some field types replaced; a type of 0 drops the field."""
    fields = [
        {**field, "type": types.get(field["name"], field["type"])}
        for field in SCHEMA["fields"]
        if types.get(field["name"], 1) != 0
    ]
    return {**SCHEMA, "fields": fields}


@pytest.mark.parametrize(
    ("schema", "record", "says"),
    [
        (
            {"type": "record", "name": "Reading", "fields": [{"name": "value", "type": "double"}]},
            {"value": 1.0},
            "no 'SequenceNumber'",
        ),
        ({"type": "array", "items": "long"}, [1, 2], "its records are not EventData"),
        (_eventdata_with(Offset="long"), None, "'Offset' is 'long', not string"),
        (_eventdata_with(Body="string"), None, "'Body' is 'string', not bytes"),
        (_eventdata_with(Properties=0), None, "no 'Properties'"),
    ],
)
def test_a_file_that_is_not_eventdata(schema: dict[str, object], record: object, says: str) -> None:
    data = _avro(schema, [record] if record is not None else [])  # type: ignore[list-item]

    with pytest.raises(CaptureError, match=rf"^other\.avro: not an Event Hubs Capture file: .*{says}"):
        _read_bytes(data, "other.avro")


def test_a_bad_enqueued_time_names_the_record() -> None:
    good = {"SequenceNumber": 1, "Offset": "0", "SystemProperties": {}, "Properties": {}, "Body": b"{}"}
    records = [{**good, "EnqueuedTimeUtc": "1/2/2026 3:04:05 AM"}, {**good, "EnqueuedTimeUtc": "tomorrow"}]

    with pytest.raises(CaptureError, match=r"^odd\.avro: record 2: EnqueuedTimeUtc: not an enqueued time"):
        _read_bytes(_avro(SCHEMA, records), "odd.avro")


@pytest.mark.parametrize(
    ("text", "system", "says"),
    [
        ("", {}, "EnqueuedTimeUtc: not an enqueued time"),
        ("1/2/2026 3:04:05 AM", {ENQUEUED_TIME_PROPERTY: 2**62}, f"{ENQUEUED_TIME_PROPERTY} {2**62} is not a time"),
    ],
)
def test_an_impossible_enqueued_time_names_the_record(text: str, system: dict[str, object], says: str) -> None:
    record = {"SequenceNumber": 1, "Offset": "0", "Properties": {}, "Body": b"{}"}
    records = [{**record, "EnqueuedTimeUtc": text, "SystemProperties": system}]

    with pytest.raises(CaptureError, match=rf"^odd\.avro: record 1: {says}"):
        _read_bytes(_avro(SCHEMA, records), "odd.avro")


def test_errors_of_the_stream_pass_through() -> None:
    class Failing(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            raise OSError("disk on fire")

    with pytest.raises(OSError, match="disk on fire"):
        list(read_capture(Failing(), partition_id="0", name="x.avro"))  # type: ignore[arg-type]


# -- the path layout -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "partition"),
    [
        ("ns/hub/0/2024/01/02/03/04/05.avro", "0"),
        ("/data/capture/ns/hub/31/2024/12/31/23/59/59.avro", "31"),
        ("https://acct.blob.core.windows.net/capture/ns/hub/7/2024/01/02/03/04/05.avro", "7"),
        ("0/2024/01/02/03/04/05.avro", "0"),
        ("C:\\capture\\ns\\hub\\2\\2024\\01\\02\\03\\04\\05.avro", "2"),
        ("ns/hub/partition-a/2024/02/29/00/00/00.avro", "partition-a"),
        ("2024/01/02/03/04/05.avro", None),  # no partition before the time
        ("ns/hub/0/2024/01/02/03/04.avro", None),  # five numbers
        ("ns/hub/0/2024/1/2/3/4/5.avro", None),  # not zero padded
        ("ns/hub/0/2024/13/02/03/04/05.avro", None),  # month 13
        ("ns/hub/0/2023/02/29/03/04/05.avro", None),  # no such day
        ("ns/hub/0/2024/01/02/03/04/05.avro.tmp", None),
        ("ns/hub/0/2024/01/02/03/04/05.json", None),
        ("ns/hub/0/24/01/02/03/04/05.avro", None),
        ("metered-billing_p9--2022-12-09--16-50-12.avro", None),
        ("54.avro", None),
        ("", None),
    ],
)
def test_partition_from_path(path: str, partition: str | None) -> None:
    assert partition_from_path(path) == partition


def test_window_from_path() -> None:
    assert window_from_path("ns/hub/3/2024/02/29/13/45/07.avro") == datetime(2024, 2, 29, 13, 45, 7, tzinfo=UTC)
    assert window_from_path("ns/hub/3/loose.avro") is None
