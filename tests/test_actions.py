"""The built-in actions, driven through the registry: ``file`` appends JSON lines, ``log`` writes a
structured log event, and failures surface as ActionError."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tests.support import TOPIC, make_event
from worker.actions import ActionSpec, PlannedAction, action_types, idempotency_key
from worker.actions.delivery.services import Services
from worker.errors import ActionError
from worker.rulefiles.loading import load_rules


def file_executor(**params: object):
    kind = action_types()["file"]
    validated = kind.params.model_validate(params)
    return validated, kind.executor(validated, Services())


def read_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def open_descriptors_to(path: Path) -> int:
    fds = Path("/proc/self/fd")
    count = 0
    for fd in fds.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        count += target == str(path)
    return count


# --- idempotency keys -----------------------------------------------------------------------------


def test_idempotency_keys_are_stable_and_distinct():
    key = idempotency_key("ev-1", "audit", 0)
    # A fixed value: the key must survive restarts and upgrades, so it is pinned here.
    assert key == "dae3877b64d72098fad6386c80584f21"
    assert idempotency_key("ev-1", "audit", 0) == key
    assert len(key) == 32
    assert int(key, 16) >= 0
    others = {
        idempotency_key("ev-2", "audit", 0),
        idempotency_key("ev-1", "audit-2", 0),
        idempotency_key("ev-1", "audit", 1),
        idempotency_key("ev-1", "audi", 0),
    }
    assert key not in others
    assert len(others) == 4


def test_a_planned_action_carries_its_key():
    event = make_event()
    action = PlannedAction("audit", ActionSpec("log", 2, action_types()["log"].params()), event)
    assert action.idempotency_key == idempotency_key("ev-1", "audit", 2)
    assert action.late is False


# --- the file action ------------------------------------------------------------------------------


async def test_the_file_action_appends_one_json_line_per_action(tmp_path):
    path = tmp_path / "deep" / "er" / "audit.jsonl"
    params, executor = file_executor(path=str(path))
    first, second = make_event("ev-1", sequence_number=41), make_event("ev-2", sequence_number=42, partition="5")
    actions = [
        PlannedAction("audit", ActionSpec("file", 0, params), first),
        PlannedAction("audit", ActionSpec("file", 1, params), first),
        PlannedAction("other-rule", ActionSpec("file", 0, params), second, late=True),
    ]
    try:
        for action in actions:
            await executor.execute(action)
    finally:
        await executor.aclose()
    assert path.parent.is_dir()
    lines = read_lines(path)
    assert len(lines) == 3
    assert lines[0] == {
        "rule": "audit",
        "action_index": 0,
        "idempotency_key": idempotency_key("ev-1", "audit", 0),
        "event_id": "ev-1",
        "event_type": "Microsoft.MachineLearningServices.ModelRegistered",
        "subject": "models/churn:3",
        "topic": TOPIC,
        "event_time": "2026-11-01T09:00:00.123456+00:00",
        "partition_id": "3",
        "offset": "8192",
        "sequence_number": 41,
        "late": False,
    }
    assert [(line["rule"], line["action_index"], line["event_id"]) for line in lines] == [
        ("audit", 0, "ev-1"),
        ("audit", 1, "ev-1"),
        ("other-rule", 0, "ev-2"),
    ]
    assert [line["idempotency_key"] for line in lines] == [action.idempotency_key for action in actions]
    assert [line["idempotency_key"] for line in lines] == [
        idempotency_key("ev-1", "audit", 0),
        idempotency_key("ev-1", "audit", 1),
        idempotency_key("ev-2", "other-rule", 0),
    ]
    assert len({line["idempotency_key"] for line in lines}) == 3
    assert (lines[2]["partition_id"], lines[2]["sequence_number"], lines[2]["late"]) == ("5", 42, True)
    assert all("data" not in line for line in lines)


async def test_the_same_action_again_writes_the_same_key(tmp_path):
    path = tmp_path / "audit.jsonl"
    params, executor = file_executor(path=str(path))
    event = make_event()
    action = PlannedAction("audit", ActionSpec("file", 0, params), event)
    await executor.execute(action)
    # A redelivery decodes to a new Event with the same id.
    await executor.execute(PlannedAction("audit", ActionSpec("file", 0, params), make_event()))
    await executor.aclose()
    first, again = read_lines(path)
    assert first["idempotency_key"] == again["idempotency_key"] == idempotency_key("ev-1", "audit", 0)


async def test_include_data_writes_the_event_data(tmp_path):
    path = tmp_path / "with-data.jsonl"
    params, executor = file_executor(path=str(path), include_data=True)
    data = {"modelName": "churn", "modelTags": {"stage": "production"}, "modelVersion": 3, "drift": 0.835, "n": None}
    await executor.execute(PlannedAction("r", ActionSpec("file", 0, params), make_event(data=data)))
    await executor.execute(PlannedAction("r", ActionSpec("file", 0, params), make_event(data=[])))
    await executor.aclose()
    lines = read_lines(path)
    assert [line["data"] for line in lines] == [data, []]


async def test_include_data_writes_integers_beyond_64_bits(tmp_path):
    path = tmp_path / "big.jsonl"
    params, executor = file_executor(path=str(path), include_data=True)
    data = {"big": 10**400 + 1, "negative": -(10**400), "text": "modèle ✓"}
    event = make_event(data=data)
    assert event.data == data
    await executor.execute(PlannedAction("r", ActionSpec("file", 0, params), event))
    await executor.aclose()
    (line,) = read_lines(path)
    assert line["data"] == data
    assert line["event_id"] == "ev-1"


async def test_the_file_is_appended_to_not_truncated(tmp_path):
    path = tmp_path / "audit.jsonl"
    path.write_text('{"existing": true}\n', encoding="utf-8")
    params, executor = file_executor(path=str(path))
    await executor.execute(PlannedAction("r", ActionSpec("file", 0, params), make_event()))
    await executor.aclose()
    lines = read_lines(path)
    assert lines[0] == {"existing": True}
    assert lines[1]["event_id"] == "ev-1"


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to see open files")
async def test_aclose_closes_the_file_and_a_later_action_reopens_it(tmp_path):
    path = tmp_path / "audit.jsonl"
    params, executor = file_executor(path=str(path))
    assert open_descriptors_to(path) == 0
    await executor.execute(PlannedAction("r", ActionSpec("file", 0, params), make_event("ev-1")))
    # Each line is flushed as it is written.
    assert [line["event_id"] for line in read_lines(path)] == ["ev-1"]
    assert open_descriptors_to(path) == 1
    await executor.aclose()
    assert open_descriptors_to(path) == 0
    await executor.aclose()  # closing twice is harmless
    await executor.execute(PlannedAction("r", ActionSpec("file", 0, params), make_event("ev-2")))
    assert open_descriptors_to(path) == 1
    await executor.aclose()
    assert open_descriptors_to(path) == 0
    assert [line["event_id"] for line in read_lines(path)] == ["ev-1", "ev-2"]


async def test_aclose_without_any_action_creates_nothing(tmp_path):
    path = tmp_path / "sub" / "never.jsonl"
    _, executor = file_executor(path=str(path))
    await executor.aclose()
    assert not path.exists()
    assert not path.parent.exists()


async def test_an_unwritable_path_raises_action_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory", encoding="utf-8")
    path = blocker / "audit.jsonl"
    params, executor = file_executor(path=str(path))
    with pytest.raises(ActionError) as caught:
        await executor.execute(PlannedAction("r", ActionSpec("file", 0, params), make_event()))
    assert str(path) in str(caught.value)
    assert "file action: cannot append to" in str(caught.value)
    assert isinstance(caught.value.__cause__, OSError)
    await executor.aclose()
    assert blocker.read_text(encoding="utf-8") == "not a directory"


async def test_a_directory_as_the_path_raises_action_error(tmp_path):
    params, executor = file_executor(path=str(tmp_path))
    with pytest.raises(ActionError, match="cannot append to"):
        await executor.execute(PlannedAction("r", ActionSpec("file", 0, params), make_event()))
    await executor.aclose()


async def test_rules_plan_file_actions_end_to_end(tmp_path):
    out = tmp_path / "out" / "production.jsonl"
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f"""\
rules:
  - name: audit-production
    filter:
      includedEventTypes: [Microsoft.MachineLearningServices.ModelRegistered]
      advancedFilters:
        - {{operatorType: StringIn, key: data.ModelTags.stage, values: [production]}}
    actions:
      - type: log
      - type: file
        path: {out}
        include_data: true
""",
        encoding="utf-8",
    )
    table = load_rules([rules])
    event = make_event()
    planned = table.evaluate(event).plan(event)
    assert [(a.rule, a.spec.type, a.spec.index) for a in planned] == [
        ("audit-production", "log", 0),
        ("audit-production", "file", 1),
    ]
    executors = [action_types()[a.spec.type].executor(a.spec.params, Services()) for a in planned]
    with capture_logs() as logs:
        for action, executor in zip(planned, executors, strict=True):
            await executor.execute(action)
    for executor in executors:
        await executor.aclose()
    (line,) = read_lines(out)
    assert line["idempotency_key"] == idempotency_key("ev-1", "audit-production", 1)
    assert line["data"] == {"modelName": "churn", "modelTags": {"stage": "production"}}
    (log,) = logs
    assert log["idempotency_key"] == idempotency_key("ev-1", "audit-production", 0)
    assert line["idempotency_key"] != log["idempotency_key"]


# --- the log action -------------------------------------------------------------------------------


async def test_the_log_action_writes_one_structured_event():
    kind = action_types()["log"]
    params = kind.params.model_validate({"message": "call the model-registered function", "level": "warning"})
    executor = kind.executor(params, Services())
    event = make_event()
    action = PlannedAction("function-on-model-registered", ActionSpec("log", 1, params), event, late=True)
    with capture_logs() as logs:
        await executor.execute(action)
    await executor.aclose()
    assert logs == [
        {
            "event": "action.log",
            "log_level": "warning",
            "message": "call the model-registered function",
            "rule": "function-on-model-registered",
            "action_index": 1,
            "event_id": "ev-1",
            "event_type": "Microsoft.MachineLearningServices.ModelRegistered",
            "subject": "models/churn:3",
            "partition_id": "3",
            "sequence_number": 41,
            "idempotency_key": idempotency_key("ev-1", "function-on-model-registered", 1),
            "late": True,
        }
    ]


@pytest.mark.parametrize("level", ["debug", "info", "warning", "error"])
async def test_the_log_action_levels(level):
    kind = action_types()["log"]
    params = kind.params.model_validate({"level": level})
    executor = kind.executor(params, Services())
    with capture_logs() as logs:
        await executor.execute(PlannedAction("r", ActionSpec("log", 0, params), make_event("ev-9")))
    (log,) = logs
    assert log["log_level"] == level
    assert log["event"] == "action.log"
    assert log["message"] is None
    assert log["event_id"] == "ev-9"
    assert log["idempotency_key"] == idempotency_key("ev-9", "r", 0)


async def test_the_log_action_default_level_is_info():
    kind = action_types()["log"]
    params = kind.params()
    executor = kind.executor(params, Services())
    with capture_logs() as logs:
        await executor.execute(PlannedAction("r", ActionSpec("log", 0, params), make_event()))
        await executor.execute(PlannedAction("r", ActionSpec("log", 0, params), make_event("ev-2")))
    assert [(log["log_level"], log["event_id"]) for log in logs] == [("info", "ev-1"), ("info", "ev-2")]


def test_the_registry_lists_the_built_in_types():
    types = action_types()
    assert {"file", "log"} <= set(types)
    assert types["file"].name == "file"
    assert types["log"].name == "log"
    assert types["file"].summary
    assert types["log"].summary
