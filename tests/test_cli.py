"""The command line, run in-process through ``main`` and once as ``python -m worker``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.conftest import EXAMPLE_SECRETS
from worker.cli import main
from worker.sending.mlevents import DEFAULT_TOPIC, MODEL_REGISTERED, RUN_STATUS_CHANGED

ROOT = Path(__file__).parents[1]
EXAMPLES = ROOT / "rules" / "examples.yaml"


def _body(event_type: str, subject: str, data: dict[str, object], *, topic: str = DEFAULT_TOPIC) -> bytes:
    event = {
        "id": f"id-{subject}",
        "topic": topic,
        "subject": subject,
        "eventType": event_type,
        "eventTime": "2026-11-01T09:00:00.1234567Z",
        "data": data,
        "dataVersion": "2",
    }
    return orjson.dumps([event])


def _lines(text: str) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in text.splitlines() if line]


def test_validate_accepts_the_shipped_rules(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(ROOT / "rules")]) == 0
    assert "ok: 11 rules in 2 files" in capsys.readouterr().out  # the tests in rules/tests/ left out


def test_validate_reports_every_problem_with_file_line_and_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "rules:\n"
        "  - name: one\n"
        "    filter:\n"
        "      advancedFilters:\n"
        "        - {operatorType: StringEquals, key: data.x, values: [a]}\n"
        "    actions: [{type: log}]\n"
        "  - name: two\n"
        "    actions: [{type: mail}]\n"
    )
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:5:" in err
    assert "rule 'one'" in err
    assert "unknown operatorType 'StringEquals'" in err
    assert f"{bad}:8:" in err
    assert "unknown action type 'mail'" in err


def test_explain_prints_one_line_per_event_and_rule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body = tmp_path / "body.json"
    body.write_bytes(_body(RUN_STATUS_CHANGED, "experiments/e/runs/r", {"runStatus": "Completed"}))
    assert main(["explain", "--rules", str(EXAMPLES), str(body)]) == 0
    lines = _lines(capsys.readouterr().out)
    assert [line["rule"] for line in lines] == [
        "mail-on-failed-run",
        "function-on-model-registered",
        "retrain-on-monitor-breach",
        "refresh-data-on-legacy-drift",
        "deploy-by-model-tags",
        "evaluate-completed-training",
        "ci-on-completed-training-run",
        "audit-production-changes",
        "run-stuck",
        "failed-runs-digest",
    ]
    assert all(line["event_id"] == "id-experiments/e/runs/r" for line in lines)
    failed = lines[0]
    assert failed["matched"] is False
    assert "StringIn data.runStatus" in str(failed["reason"])
    assert "'Completed'" in str(failed["reason"])


def test_explain_shows_a_match_and_the_workspace_guard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _body(MODEL_REGISTERED, "models/m:1", {"modelTags": {"stage": "Production", "deploy": "true"}})
    foreign = _body(MODEL_REGISTERED, "models/m:2", {}, topic=DEFAULT_TOPIC + "-other")
    body = tmp_path / "body.json"
    body.write_bytes(b"[" + good[1:-1] + b"," + foreign[1:-1] + b"]")
    assert main(["explain", "--rules", str(EXAMPLES), str(body)]) == 0
    lines = _lines(capsys.readouterr().out)
    matched = {(line["event_id"], line["rule"]) for line in lines if line["matched"]}
    assert matched == {
        ("id-models/m:1", "function-on-model-registered"),
        ("id-models/m:1", "deploy-by-model-tags"),
        ("id-models/m:1", "audit-production-changes"),
    }
    assert all("allow-list" in str(line["reason"]) for line in lines if line["event_id"] == "id-models/m:2")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        pytest.param(b"\xff\xfe", "not_utf8", id="not-utf8"),
        pytest.param(b"{oops", "not_json", id="not-json"),
        pytest.param(b'[{"id": "1"}]', "not_an_event", id="not-an-event"),
    ],
)
def test_explain_rejects_a_bad_body(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: bytes, fragment: str
) -> None:
    path = tmp_path / "body.json"
    path.write_bytes(body)
    assert main(["explain", "--rules", str(EXAMPLES), str(path)]) == 2
    assert fragment in capsys.readouterr().err


def test_explain_rejects_a_bad_rules_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules: []\n")
    body = tmp_path / "body.json"
    body.write_bytes(_body(MODEL_REGISTERED, "models/m:1", {}))
    assert main(["explain", "--rules", str(rules), str(body)]) == 2
    assert "'rules' must be a non-empty list" in capsys.readouterr().err


def test_explain_reports_a_missing_body_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "--rules", str(EXAMPLES), str(tmp_path / "absent.json")]) == 2
    assert "cannot read the body file" in capsys.readouterr().err


@pytest.mark.usefixtures("sdk_garbage")
@pytest.mark.parametrize(
    "mode", [pytest.param(["--capture"], id="capture"), pytest.param([], id="live", marks=pytest.mark.integration)]
)
def test_demo_acts_on_realistic_events_and_the_counts_add_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], mode: list[str]
) -> None:
    """``--capture``: the bundled capture replayed. Live: published to an in-process local hub and
    consumed by the worker, with checkpoints in a local directory."""
    monkeypatch.chdir(tmp_path)  # the example file action writes out/production-audit.jsonl here
    report = tmp_path / "report.json"
    assert main(["demo", *mode, "--log-level", "warning", "--report", str(report)]) == 0
    counts = orjson.loads(report.read_bytes())
    assert sum(counts["outcomes"].values()) == counts["events"] > 400
    assert counts["outcomes"]["invalid"] == 1  # the malformed body
    assert counts["skipped"]["foreign_topic"] == 8  # the other workspace's events
    assert counts["skipped"]["duplicate"] > 0
    audit = (tmp_path / "out" / "production-audit.jsonl").read_bytes().splitlines()
    assert len(audit) == counts["rules"]["audit-production-changes"]["actions"]["file"]["done"] > 0
    assert f"Events read: {counts['events']}" in capsys.readouterr().out
    if not mode:
        assert any((tmp_path / "out" / "demo" / "checkpoints").rglob("checkpoint/*"))


@pytest.mark.integration
def test_module_entry_point_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "worker", "validate", str(EXAMPLES)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok: 10 rules")


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "validate" in capsys.readouterr().err


def test_secrets_are_needed_to_act_but_not_to_look(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in EXAMPLE_SECRETS:
        monkeypatch.delenv(name)
    assert main(["validate", str(EXAMPLES)]) == 2
    err = capsys.readouterr().err
    assert all(f"environment variable {name} is not set" in err for name in EXAMPLE_SECRETS)
    assert main(["validate", "--skip-secrets", str(EXAMPLES)]) == 0
    assert capsys.readouterr().out.startswith("ok: 10 rules")
    # Executing nothing needs no secrets: explain, rules tests, and a dry run.
    body = tmp_path / "body.json"
    body.write_bytes(_body(MODEL_REGISTERED, "models/m:1", {"modelName": "m"}))
    assert main(["explain", "--rules", str(EXAMPLES), str(body)]) == 0
    assert main(["test", str(ROOT / "rules" / "tests" / "examples.test.yaml")]) == 0
    sample = ROOT / "worker" / "samples" / "capture"
    assert main(["replay", "--dry-run", "--log-level", "error", "--rules", str(EXAMPLES), str(sample)]) == 0
    assert main(["replay", "--log-level", "error", "--rules", str(EXAMPLES), str(sample)]) == 2
    assert "SMTP_PASSWORD" in capsys.readouterr().err
