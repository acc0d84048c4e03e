"""The live worker's settings: environment and flags, defaults, and errors that name the setting."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from scripts.settings_table import table as settings_table
from worker.cli import main
from worker.config import RunSettings, add_flags, load_settings
from worker.errors import SettingsError

HUB = "Endpoint=sb://127.0.0.1:5672;SharedAccessKeyName=k;SharedAccessKey=s3cr3t;EntityPath=ml-events"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No WORKER_* variable of the machine running the tests leaks in."""
    for key in list(os.environ):
        if key.upper().startswith("WORKER_"):
            monkeypatch.delenv(key)


def minimal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_EVENTHUB_CONNECTION_STRING", HUB)
    monkeypatch.setenv("WORKER_CHECKPOINT_DIR", "state")
    monkeypatch.setenv("WORKER_RULES", "rules/examples.yaml")


def problems(flags: dict[str, object] | None = None) -> list[str]:
    with pytest.raises(SettingsError) as caught:
        load_settings(flags)
    return list(caught.value.problems)


def test_minimal_settings_take_the_documented_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    minimal(monkeypatch)
    settings = load_settings()
    hub = settings.hub()
    assert hub.eventhub == "ml-events"  # from the connection string's EntityPath
    assert hub.consumer_group == "$Default"
    assert hub.expiry == 6 * hub.interval
    assert settings.checkpoints().directory == Path("state")
    assert settings.rules == (Path("rules/examples.yaml"),)
    for name, field in RunSettings.model_fields.items():
        assert field.description, f"setting {name} is undocumented"


def test_flags_win_over_the_environment_and_lists_split_on_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    minimal(monkeypatch)
    monkeypatch.setenv("WORKER_PREFETCH", "500")
    monkeypatch.setenv("WORKER_SEQUENCERS", "Microsoft.Storage.BlobCreated=data.sequencer, A.B=data.seq")
    settings = load_settings({"prefetch": "42", "rules": ["a.yaml,b.yaml", "c.yaml"], "batch_size": None})
    assert settings.prefetch == 42
    assert settings.batch_size == 300
    assert settings.rules == (Path("a.yaml"), Path("b.yaml"), Path("c.yaml"))
    assert settings.core().sequencers == (("Microsoft.Storage.BlobCreated", "data.sequencer"), ("A.B", "data.seq"))


def test_a_malformed_value_names_the_variable_and_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    minimal(monkeypatch)
    monkeypatch.setenv("WORKER_PREFETCH", "0")
    monkeypatch.setenv("WORKER_LATE_POLICY", "maybe")
    found = problems()
    assert any(p.startswith("WORKER_PREFETCH (--prefetch):") and "got '0'" in p for p in found), found
    assert any(p.startswith("WORKER_LATE_POLICY (--late-policy):") and "'maybe'" in p for p in found), found


def test_a_misspelt_variable_is_reported_not_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    minimal(monkeypatch)
    monkeypatch.setenv("WORKER_PREFECH", "10")
    assert problems() == ["WORKER_PREFECH is not a setting (a typo?)"]


def test_missing_settings_are_all_reported_at_once() -> None:
    found = problems()
    assert any("WORKER_EVENTHUB_CONNECTION_STRING" in p and "WORKER_EVENTHUB_NAMESPACE" in p for p in found)
    assert any("WORKER_CHECKPOINT_DIR" in p and "WORKER_STORAGE_CONNECTION_STRING" in p for p in found)
    assert any(p.startswith("WORKER_RULES (--rules) is required") for p in found)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"eventhub_name": "other"}, "the connection string's EntityPath is 'ml-events'"),
        ({"eventhub_namespace": "ns.servicebus.windows.net"}, "set exactly one of WORKER_EVENTHUB_CONNECTION_STRING"),
        ({"storage_account_url": "https://a.blob.core.windows.net"}, "set exactly one of WORKER_STORAGE"),
        ({"ownership_expiry": "5", "load_balancing_interval": "10"}, "must be longer than"),
    ],
)
def test_contradictory_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, flags: dict[str, object], expected: str
) -> None:
    minimal(monkeypatch)
    found = problems(flags)
    assert any(expected in p for p in found), found


def test_a_malformed_connection_string_is_named_without_being_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    minimal(monkeypatch)
    monkeypatch.setenv("WORKER_EVENTHUB_CONNECTION_STRING", "Endpoint=sb://ns/;EntityPath=hub;Key=s3cr3t")
    found = problems()
    assert any(p.startswith("WORKER_EVENTHUB_CONNECTION_STRING (--eventhub-connection-string): ") for p in found)
    assert all("s3cr3t" not in p for p in found)


def test_a_namespace_without_a_hub_name_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_EVENTHUB_NAMESPACE", "ns.servicebus.windows.net")
    monkeypatch.setenv("WORKER_CHECKPOINT_DIR", "state")
    monkeypatch.setenv("WORKER_RULES", "r.yaml")
    assert problems() == [
        "WORKER_EVENTHUB_NAME (--eventhub-name) is required with WORKER_EVENTHUB_NAMESPACE (--eventhub-namespace)"
    ]


def test_secrets_are_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    minimal(monkeypatch)
    monkeypatch.setenv("WORKER_STORAGE_CONNECTION_STRING", "AccountKey=s3cr3t")
    found = problems()
    assert found
    assert all("s3cr3t" not in p for p in found)
    monkeypatch.delenv("WORKER_STORAGE_CONNECTION_STRING")
    settings = load_settings()
    assert "s3cr3t" not in repr(settings)
    assert "s3cr3t" not in repr(settings.hub())


def test_the_run_command_fails_at_start_up_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    minimal(monkeypatch)
    assert main(["run", "--max-wait", "soon"]) == 2
    assert "WORKER_MAX_WAIT (--max-wait): Input should be a valid number" in capsys.readouterr().err


def test_the_readme_documents_every_setting_as_it_is() -> None:
    readme = (Path(__file__).resolve().parents[1] / "docs" / "live-worker.md").read_text()
    for line in settings_table():
        assert line in readme, f"docs/live-worker.md is out of date (python -m scripts.settings_table): {line}"


def test_start_position_event_age_and_dry_run(monkeypatch: pytest.MonkeyPatch) -> None:
    minimal(monkeypatch)
    settings = load_settings()
    assert str(settings.hub().start) == "earliest"
    assert settings.core().max_age is None
    assert settings.processing().dry_run is False
    monkeypatch.setenv("WORKER_START_POSITION", "2h")
    monkeypatch.setenv("WORKER_MAX_EVENT_AGE", "1d")
    monkeypatch.setenv("WORKER_DRY_RUN", "true")
    settings = load_settings()
    assert str(settings.hub().start) == "2h ago"
    assert settings.core().max_age == 86_400
    assert settings.processing().dry_run is True
    monkeypatch.setenv("WORKER_START_POSITION", "yesterday")
    monkeypatch.setenv("WORKER_MAX_EVENT_AGE", "a while")
    found = problems()
    assert any(p.startswith("WORKER_START_POSITION (--start-position): 'yesterday' is not a start") for p in found)
    assert any(p.startswith("WORKER_MAX_EVENT_AGE (--max-event-age): 'a while' is not a duration") for p in found)


def test_a_claim_settles_for_one_and_a_half_balancing_intervals_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    minimal(monkeypatch)
    assert load_settings().hub().settle == 15.0
    monkeypatch.setenv("WORKER_LOAD_BALANCING_INTERVAL", "4")
    assert load_settings().hub().settle == 6.0
    monkeypatch.setenv("WORKER_CLAIM_SETTLE", "0")
    assert load_settings().hub().settle == 0.0
    monkeypatch.setenv("WORKER_CLAIM_SETTLE", "-1")
    assert any(p.startswith("WORKER_CLAIM_SETTLE (--claim-settle): ") for p in problems())


def test_dry_run_is_a_switch_on_the_command_line() -> None:
    parser = argparse.ArgumentParser()
    add_flags(parser)
    assert parser.parse_args(["--dry-run"]).dry_run is True
    assert parser.parse_args([]).dry_run is None  # unset: the environment decides
    assert parser.parse_args(["--start-position", "latest"]).start_position == "latest"
