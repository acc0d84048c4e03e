"""``python -m worker send``: events published to the local hub arrive as Event Grid would deliver them."""

from __future__ import annotations

import asyncio
import io
from contextlib import redirect_stdout
from pathlib import Path

import orjson
import pytest
from azure.eventhub import EventData

from tests.hubclient import collect, last_sequence_numbers
from tests.servers import HubServer
from worker.cli import main
from worker.core.decoding import decode_body
from worker.events import Event
from worker.sending.placement import partition_for_key

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("sdk_garbage")]


def run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


def received_since(localhub: HubServer, starts: dict[str, int], count: int) -> list[tuple[EventData, str]]:
    """The ``count`` events sent after ``starts`` with their partitions, read from every partition at once."""
    got = asyncio.run(collect(localhub.connection_string, None, count, starting_position=dict(starts), settle=0.5))
    assert len(got.events) == count
    return list(zip(got.events, got.partitions, strict=True))


def positions(localhub: HubServer) -> dict[str, int]:
    return asyncio.run(last_sequence_numbers(localhub.connection_string))


def test_send_generated_events_keyed_by_subject(localhub: HubServer) -> None:
    starts = positions(localhub)
    options = ["--generate", "60", "--schema", "both", "--shuffle", "3", "--duplicates", "0.2", "--seed", "3"]
    code, out = run(["send", "--connection-string", localhub.connection_string, *options])
    assert code == 0
    sent = int(out.split()[1])
    assert sent > 60  # some delivered twice
    got = received_since(localhub, starts, sent)
    schemas, ids = set(), []
    for message, partition in got:
        (event,) = decode_body(message.body_as_str())
        assert isinstance(event, Event)
        assert message.partition_key == str(event.subject).encode()
        assert partition == partition_for_key(str(event.subject), list(starts))  # where the service puts the key
        assert message.sequence_number is not None
        assert message.properties[b"aeg-output-event-id"] == event.id.encode()
        schemas.add(event.schema)
        ids.append(event.id)
    assert len(set(ids)) == 60
    assert len(schemas) == 2  # Event Grid and CloudEvents


def test_send_json_files_round_robin(localhub: HubServer, tmp_path: Path) -> None:
    events = [
        {"id": f"e{i}", "eventType": "T", "subject": f"s{i}", "eventTime": "2026-11-01T00:00:00Z"} for i in range(6)
    ]
    (tmp_path / "array.json").write_bytes(orjson.dumps(events[:4]))
    (tmp_path / "lines.jsonl").write_bytes(b"\n".join(orjson.dumps(e) for e in events[4:]))
    starts = positions(localhub)
    files = [str(tmp_path / "array.json"), str(tmp_path / "lines.jsonl")]
    code, out = run(["send", "--connection-string", localhub.connection_string, "--partition-key", "none", *files])
    assert code == 0, out
    got = received_since(localhub, starts, 6)
    assert sorted(orjson.loads(m.body_as_str())[0]["id"] for m, _ in got) == [f"e{i}" for i in range(6)]
    assert all(m.partition_key is None for m, _ in got)
    assert len({partition for _, partition in got}) > 1  # round-robin


def test_send_needs_a_source(localhub: HubServer, tmp_path: Path) -> None:
    assert run(["send", "--connection-string", localhub.connection_string])[0] == 2
    assert run(["send", "--connection-string", localhub.connection_string, str(tmp_path / "missing.json")])[0] == 2
