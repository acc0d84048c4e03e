"""The seam between receiving and processing: deliveries, the inbox's back-pressure, the wire between
the two processes, and the type check that keeps both ends of it in step."""

from __future__ import annotations

import asyncio
import pickle
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from worker.core.accounting import Tally
from worker.errors import ChildProcessFailed, PartitionFailed
from worker.events import NO_PROPERTIES, Message, Position
from worker.live.handoff import (
    ActionCounts,
    Close,
    Closed,
    Command,
    Delivery,
    Fatal,
    Inbox,
    Open,
    PartitionStatus,
    Put,
    Ready,
    Reload,
    Reply,
    Report,
    Start,
    Stop,
    Taken,
    frame,
    read_command,
    read_reply,
    read_start,
)
from worker.settings import CheckpointSettings, ProcessingSettings, Scope

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ProcessingSettings(
    rules=(Path("rules.yaml"),),
    scope=Scope("ns.example", "hub", "$default"),
    checkpoints=CheckpointSettings("secret-connection", None, "c", None, 10.0, 100),
)


def test_a_delivery_becomes_the_cores_message() -> None:
    delivery = Delivery(b"[]", "4096", 7, 1_793_523_600_250, {"aeg-delivery-count": "1"})
    assert delivery.message("3") == Message(
        b"[]",
        Position("3", "4096", 7, datetime(2026, 11, 1, 9, 0, 0, 250_000, tzinfo=UTC)),
        {"aeg-delivery-count": "1"},
    )
    bare = Delivery(b"{}", None, None, None, None).message("0")
    assert bare == Message(b"{}", Position("0"), NO_PROPERTIES)
    assert pickle.loads(pickle.dumps(delivery)) == delivery  # noqa: S301 - our own bytes


def test_amqp_properties_are_decoded_when_read() -> None:
    """As the SDK's AMQP layer gives them: keys and text values as bytes, other values as they are."""
    raw: dict[str | bytes, object] = {b"aeg-event-type": b"Notification", b"aeg-delivery-count": 2, "x": b"\xff"}
    properties = Delivery(b"[]", "0", 0, None, raw).message("0").properties
    assert dict(properties) == {"aeg-event-type": "Notification", "aeg-delivery-count": 2, "x": "\ufffd"}
    assert properties["aeg-delivery-count"] == 2
    assert len(properties) == 3
    assert "aeg-event-type" in properties


async def test_the_inbox_holds_the_receiver_until_the_pipeline_takes_in() -> None:
    taken: list[tuple[str, int]] = []
    inbox = Inbox("2", 3, on_take=lambda partition, count: taken.append((partition, count)))
    inbox.hand(2)
    await inbox.room()  # two of three: room left
    inbox.hand(1)
    waiting = asyncio.create_task(inbox.room())
    await asyncio.sleep(0)
    assert not waiting.done()
    inbox.take(1)
    await waiting
    assert taken == [("2", 1)]
    inbox.hand(5)
    waiting = asyncio.create_task(inbox.room())
    await asyncio.sleep(0)
    inbox.fail()
    with pytest.raises(PartitionFailed, match="partition 2: its pipeline has stopped"):
        await waiting


PROPERTY_VALUE = b"shared-object"


def _every_record() -> list[Start | Command | Reply]:
    status = PartitionStatus("1", 2, 3, 0.5, 4, 0, True, 9)
    tally = Tally(read=3)
    return [
        Start(SETTINGS),
        Open("1"),
        Put(
            "1",
            [
                Delivery(b"[]", "0", 0, 1, None),
                # As the SDK's AMQP layer gives them, the same value twice (nothing is shared on the wire).
                Delivery(b"[{}]", "1", 1, 2, {b"aeg-event-type": b"Notification", b"n": 2, "same": PROPERTY_VALUE}),
                Delivery(b"[{}]", "2", 2, 3, {b"aeg-event-type": b"Notification", b"again": PROPERTY_VALUE}),
            ],
        ),
        Close("1", 2.5, True),
        Reload(),
        Stop(),
        Ready(),
        Taken("1", 300),
        Report((status,), tally, ActionCounts({("log", "ok"): 2}, {"log": [1.0, 0.0, 0.01]}, {"webhook": 1})),
        Closed("1"),
        Fatal("cannot open the stores"),
    ]


async def _reader_of(*frames: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    for data in frames:
        reader.feed_data(data)
    reader.feed_eof()
    return reader


async def test_every_record_crosses_the_wire_whole() -> None:
    records = _every_record()
    reader = await _reader_of(*(frame(record) for record in records))
    got: list[object] = [await read_start(reader)]
    got += [await read_command(reader) for _ in range(5)]
    got += [await read_reply(reader) for _ in range(5)]
    assert got == records
    assert [type(record) for record in got] == [type(record) for record in records]  # () == () for the empty ones
    put = got[2]
    assert isinstance(put, Put)
    assert all(type(delivery) is Delivery for delivery in put.deliveries)
    with pytest.raises(asyncio.IncompleteReadError):
        await read_reply(reader)


async def test_a_frame_of_the_wrong_kind_or_unreadable_fails_the_child_process() -> None:
    with pytest.raises(ChildProcessFailed, match="expected one of Ready, Taken, Report, Closed, Fatal"):
        await read_reply(await _reader_of(frame(Open("1"))))
    with pytest.raises(ChildProcessFailed, match="expected one of Open, Put, Close, Reload, Stop"):
        await read_command(await _reader_of(frame(Ready())))
    garbage = b"\x05\x00\x00\x00junk!"
    with pytest.raises(ChildProcessFailed, match="cannot be read"):
        await read_command(await _reader_of(garbage))


def test_the_settings_sent_to_the_child_never_show_the_connection_string() -> None:
    assert "secret-connection" not in repr(Start(SETTINGS))


@pytest.mark.integration
@pytest.mark.parametrize(
    ("union", "module"),
    [
        ("Command = Open | Put | Close | Reload | Stop", "live.child"),
        ("Reply = Ready | Taken | Report | Closed | Fatal", "live.childprocess"),
    ],
    ids=["command", "reply"],
)
def test_a_record_added_to_one_end_and_not_handled_at_the_other_fails_the_type_check(
    tmp_path: Path, union: str, module: str
) -> None:
    """mypy strict, on a copy of the package with one more record in a union: the other end's
    ``match`` no longer covers it."""
    shutil.copytree(ROOT / "worker", tmp_path / "worker")
    handoff = tmp_path / "worker" / "live" / "handoff.py"
    text = handoff.read_text()
    assert union in text
    handoff.write_text(
        text.replace(union, f"@dataclass(frozen=True, slots=True)\nclass Ping:\n    pass\n\n\n{union} | Ping")
    )
    command = [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "-p", f"worker.{module}"]
    clean = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False, timeout=300)
    assert clean.returncode == 0, clean.stdout  # the project itself type-checks
    mutated = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, check=False, timeout=300)
    assert mutated.returncode == 1, mutated.stdout
    assert f"worker/{module.replace('.', '/')}.py" in mutated.stdout
    assert 'Argument 1 to "assert_never" has incompatible type "Ping"' in mutated.stdout
