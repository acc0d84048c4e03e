"""``replay``: capture files through the whole pipeline, run in-process through the CLI."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from azure.storage.blob import BlobServiceClient

from tests.servers import Azurite
from tests.support import START, TEST_DATA, capture
from worker.actions.base import PlannedAction
from worker.actions.secrets import Placeholders
from worker.cli import main
from worker.core.accounting import Tally
from worker.replay.run import LogProgress, ReplaySettings, replay
from worker.replay.sources import plan_replay
from worker.rulefiles.loading import load_rules
from worker.sending import mlevents
from worker.settings import CoreSettings, LatePolicy

ROOT = Path(__file__).parents[1]
EXAMPLES = ROOT / "rules" / "examples.yaml"
SAMPLE = ROOT / "worker" / "samples" / "capture"
REAL_SAMPLES = TEST_DATA / "capture-samples"

RULES = """
rules:
  - name: every-run
    filter: {includedEventTypes: [Microsoft.MachineLearningServices.RunCompleted]}
    actions:
      - {type: file, path: ACTIONS}
  - name: every-model
    filter: {includedEventTypes: [Microsoft.MachineLearningServices.ModelRegistered]}
    actions:
      - {type: file, path: ACTIONS}
      - {type: log, level: debug}
"""


def rules_file(tmp_path: Path, actions: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES.replace("ACTIONS", str(actions)))
    return path


def report_of(tmp_path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    report = tmp_path / "report.json"
    code = main(["replay", "--log-level", "warning", "--report", str(report), *args])
    return code, orjson.loads(report.read_bytes()) if report.exists() else {}


def outcomes(report: dict[str, Any]) -> dict[str, int]:
    value = report["outcomes"]
    assert isinstance(value, dict)
    return value


def read_lines(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def test_the_bundled_sample_replays_with_every_outcome_and_the_counts_add_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = report_of(tmp_path, "--dry-run", "--rules", str(EXAMPLES), str(SAMPLE))
    assert code == 0
    counts = outcomes(report)
    assert sum(counts.values()) == report["events"]
    assert all(counts[name] > 0 for name in ("matched", "unmatched", "skipped", "invalid")), counts
    skipped = report["skipped"]
    assert isinstance(skipped, dict)
    assert skipped["duplicate"] > 0
    assert skipped["late"] > 0  # stragglers held back past the window
    assert skipped["foreign_topic"] > 0
    assert set(report["partitions"]) == {"0", "1"}
    rules = report["rules"]
    assert isinstance(rules, dict)
    planned = {name: entry["actions"] for name, entry in rules.items()}
    assert planned["mail-on-failed-run"] == {"email": {"planned": rules["mail-on-failed-run"]["matched"]}}
    out = capsys.readouterr().out
    assert f"Events read: {report['events']}" in out
    assert "mail-on-failed-run" in out


def test_actions_run_once_per_event_rule_and_action(tmp_path: Path) -> None:
    events = list(mlevents.generate(300, mlevents.Options(seed=3)))
    bodies = [d.body for d in mlevents.deliveries(events, shuffle=4, duplicates=0.2, seed=3)]
    source = tmp_path / "capture"
    capture(source, "0", bodies[:150])
    capture(source, "0", bodies[150:], minute=5, first=150, codec="deflate")
    actions = tmp_path / "actions.jsonl"
    code, report = report_of(tmp_path, "--window", "3600", "--rules", str(rules_file(tmp_path, actions)), str(source))
    assert code == 0
    lines = read_lines(actions)
    keys = Counter(str(line["idempotency_key"]) for line in lines)
    assert keys
    assert max(keys.values()) == 1  # no action twice, duplicates included
    handled = (mlevents.RUN_COMPLETED, mlevents.MODEL_REGISTERED)
    wanted = {str(e["id"]) for e in events if e["eventType"] in handled}
    assert {str(line["event_id"]) for line in lines} == wanted
    assert outcomes(report)["matched"] == len(wanted)
    # duplicates of the types no rule names are skipped as unhandled, before the duplicate check
    handled_deliveries = sum(1 for b in bodies if orjson.loads(b)[0]["eventType"] in handled)
    assert report["skipped"]["duplicate"] == handled_deliveries - len(wanted) > 0
    rules = report["rules"]
    assert rules["every-model"]["actions"]["file"] == {"done": rules["every-model"]["matched"]}
    assert rules["every-model"]["actions"]["log"] == {"done": rules["every-model"]["matched"]}


def test_each_subject_is_acted_on_in_event_time_order(tmp_path: Path) -> None:
    events = list(mlevents.generate(400, mlevents.Options(seed=5)))
    shuffled = [d.body for d in mlevents.deliveries(events, shuffle=5, seed=5)]
    source = tmp_path / "capture"
    # a quarter of a second apart: each delivery stays well within the five-second default window
    capture(source, "0", shuffled, step=timedelta(milliseconds=250))
    actions = tmp_path / "actions.jsonl"
    code, report = report_of(tmp_path, "--rules", str(rules_file(tmp_path, actions)), str(source))
    assert code == 0
    times: dict[str, list[str]] = {}
    for line in read_lines(actions):
        if line["rule"] == "every-run":
            times.setdefault(str(line["subject"]), []).append(str(line["event_time"]))
    assert any(len(t) > 1 for t in times.values()), "the generator should repeat run subjects"
    for subject_times in times.values():
        assert subject_times == sorted(subject_times)
    assert report["skipped"]["late"] == 0


def test_partitions_and_time_range_select_what_is_replayed(tmp_path: Path) -> None:
    source = tmp_path / "capture"
    for partition in ("0", "1", "2"):
        capture(source, partition, list(mlevents.bodies(20, mlevents.Options(seed=int(partition)))))
    since, until = START + timedelta(seconds=5), START + timedelta(seconds=15)
    code, report = report_of(
        tmp_path,
        "--dry-run",
        "--rules",
        str(EXAMPLES),
        "--partition",
        "0",
        "--partition",
        "2",
        "--since",
        since.isoformat(),
        "--until",
        until.isoformat(),
        str(source),
    )
    assert code == 0
    assert report["events"] == 20  # seconds 5..14 of partitions 0 and 2
    assert set(report["partitions"]) == {"0", "2"}


def test_garbage_bodies_are_counted_invalid_with_their_reason(tmp_path: Path) -> None:
    good = list(mlevents.bodies(3))
    bodies = [b"\xff\xfe\x00", b"not json", b'{"no": "event"}', b"[]", b"", *good]
    source = capture(tmp_path / "capture", "0", bodies)
    code, report = report_of(tmp_path, "--dry-run", "--rules", str(EXAMPLES), str(source))
    assert code == 0
    assert report["invalid"] == {"not_utf8": 1, "not_json": 2, "not_an_event": 2}
    assert report["events"] == len(bodies)


def test_an_action_that_keeps_failing_is_dead_lettered_with_its_attempts(tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    blocked.mkdir()  # the file action cannot append to a directory
    dead = tmp_path / "dead"
    source = capture(tmp_path / "capture", "0", [mlevents.bodies(1).__next__()])
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"rules:\n  - name: all\n    actions: [{{type: file, path: {blocked}}}]\n")
    code, report = report_of(tmp_path, "--rules", str(rules), "--dead-letters", str(dead), str(source))
    assert code == 0
    assert report["rules"]["all"]["actions"]["file"] == {"dead_lettered": 1}
    [letter] = [orjson.loads(p.read_bytes()) for p in dead.iterdir()]
    assert letter["rule"] == "all"
    assert letter["action"] == {"type": "file", "index": 0}
    assert letter["position"]["sequence_number"] == 0
    assert len(letter["attempts"]) == 3
    assert all("cannot append" in attempt["error"] for attempt in letter["attempts"])
    assert orjson.loads(letter["body"]["text"])[0]["id"] == letter["event"]["id"]


def test_a_dead_letter_that_cannot_be_written_stops_the_replay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    not_a_directory = tmp_path / "dead"
    not_a_directory.write_text("")
    source = capture(tmp_path / "capture", "0", [mlevents.bodies(1).__next__()])
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"rules:\n  - name: all\n    actions: [{{type: file, path: {blocked}}}]\n")
    code, report = report_of(tmp_path, "--rules", str(rules), "--dead-letters", str(not_a_directory), str(source))
    assert code == 2
    assert report == {}
    error = capsys.readouterr().err
    assert f"error: {not_a_directory}/" in error
    assert "cannot write the dead letter" in error


def test_a_missing_source_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = report_of(tmp_path, "--dry-run", "--rules", str(EXAMPLES), str(tmp_path / "nowhere"))
    assert code == 2
    assert "nowhere" in capsys.readouterr().err


def test_a_corrupt_capture_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = capture(tmp_path / "capture", "0", list(mlevents.bodies(50)))
    source.write_bytes(source.read_bytes()[:-300])
    code, _ = report_of(tmp_path, "--dry-run", "--rules", str(EXAMPLES), str(source))
    assert code == 2
    assert source.name in capsys.readouterr().err


@pytest.mark.skipif(not REAL_SAMPLES.is_dir(), reason=f"no real capture samples at {REAL_SAMPLES}")
def test_real_capture_files_replay_and_their_bodies_are_counted(tmp_path: Path) -> None:
    code, report = report_of(tmp_path, "--dry-run", "--rules", str(EXAMPLES), str(REAL_SAMPLES))
    assert code == 0
    # 380 + 0 + 1 + 20 records; the bodies are telemetry and billing documents, not events
    assert report["events"] == 401
    assert outcomes(report)["invalid"] == 401
    assert report["invalid"] == {"not_an_event": 401}


@pytest.mark.integration
def test_a_blob_container_replays_like_a_directory(tmp_path: Path, azurite: Azurite) -> None:
    source = tmp_path / "capture"
    for partition in ("0", "1"):
        bodies = list(mlevents.bodies(30, mlevents.Options(seed=int(partition))))
        capture(source, partition, bodies)
        capture(source, partition, bodies[:10], minute=1, first=30)  # delivered again
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = service.get_container_client("replay-test")
    container.create_container()
    for path in source.rglob("*.avro"):
        with path.open("rb") as data:
            container.upload_blob(f"capture/{path.relative_to(source).as_posix()}", data)
    container.upload_blob(
        "elsewhere/ns/hub/5/2026/11/01/09/00/00.avro", (source / "ns/hub/0/2026/11/01/09/00/00.avro").read_bytes()
    )

    local_code, local = report_of(tmp_path, "--dry-run", "--rules", str(EXAMPLES), str(source))
    url = f"{azurite.account_url}/replay-test/capture/"
    code, remote = report_of(
        tmp_path, "--dry-run", "--rules", str(EXAMPLES), "--connection-string", azurite.connection_string, url
    )
    assert (local_code, code) == (0, 0)
    assert remote == local  # the prefix leaves out the blob under elsewhere/
    assert remote["events"] == 80
    assert remote["skipped"]["duplicate"] == 20


@pytest.mark.parametrize("by_sequencer", [False, True])
def test_a_configured_sequencer_orders_a_subject_instead_of_time(tmp_path: Path, by_sequencer: bool) -> None:
    blob_created = "Microsoft.Storage.BlobCreated"

    def storage_event(number: int, sequencer: str, second: int) -> bytes:
        event = {
            "id": f"blob-{number}",
            "topic": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/a",
            "subject": "/blobServices/default/containers/c/blobs/model.pkl",
            "eventType": blob_created,
            "eventTime": f"2026-11-01T09:00:0{second}Z",
            "data": {"sequencer": sequencer},
        }
        return orjson.dumps([event])

    # the later sequencer carries the earlier time (clocks differ; the sequencer is the truth)
    source = capture(tmp_path / "capture", "0", [storage_event(1, "0000000B", 1), storage_event(2, "0000000A", 2)])
    actions = tmp_path / "actions.jsonl"
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"rules:\n  - name: blobs\n    actions: [{{type: file, path: {actions}}}]\n")
    option = ["--sequencer", f"{blob_created}=data.sequencer"] if by_sequencer else []
    code, _ = report_of(tmp_path, "--rules", str(rules), *option, str(source))
    assert code == 0
    order = [line["event_id"] for line in read_lines(actions)]
    assert order == (["blob-2", "blob-1"] if by_sequencer else ["blob-1", "blob-2"])


@pytest.mark.parametrize("value", ["no-equals", "=data.sequencer", "T=data..x"])
def test_a_malformed_sequencer_option_is_refused(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["replay", "--rules", str(EXAMPLES), "--sequencer", value, "x.avro"])
    assert exited.value.code == 2
    assert "is not TYPE=KEY" in capsys.readouterr().err


@pytest.mark.parametrize("late", ["skip", "process"])
def test_a_dry_run_counted_in_the_core_reports_what_the_driver_counts(late: str) -> None:
    """A plain dry run counts each event's planned actions in the core, without work for the driver;
    given something to observe, the driver counts them from the work: the two reports are one."""
    table = load_rules([EXAMPLES], env=Placeholders())
    settings = ReplaySettings(dry_run=True, core=CoreSettings(late=LatePolicy(late)))

    def replayed(observe: Callable[[PlannedAction], None] | None) -> Tally:
        with plan_replay([str(SAMPLE)], dead_letters=False) as plan:
            tally = asyncio.run(replay(plan, table, settings, LogProgress(1), observe=observe))
        assert tally.check() == []
        return tally

    observed: list[PlannedAction] = []
    counted, driven = replayed(None), replayed(observed.append)
    assert counted.report() == driven.report()
    # Every action the driver was handed is one the core counted, and the other way round.
    assert sum(counted.actions.values()) == len(observed) > 0
