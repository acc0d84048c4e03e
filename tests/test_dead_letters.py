"""``dead-letters list`` and ``dead-letters show``, run in-process through the CLI on lanes that a
replay wrote: a directory, and a blob container (Azurite)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from azure.storage.blob import BlobServiceClient

from tests.servers import Azurite, free_port
from tests.support import TOPIC, capture
from worker.cli import main

START = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
MODEL = "Microsoft.MachineLearningServices.ModelRegistered"
RUN = "Microsoft.MachineLearningServices.RunCompleted"
#: Registered as a secret by the rules (``${env:...}``); one event's data carries it too.
SECRET = "dead-letter-test-key-7731"  # noqa: S105 - a test value

#: Three rules whose actions fail, each its own way, and no more than four times per target (five
#: failures in a row would open the target's circuit, and change the reason of the letters after).
RULES = """\
rules:
  - name: archive
    filter: {includedEventTypes: [RUN]}
    actions:
      - {type: file, path: BLOCKED/archive, retry: {attempts: 1}}
  - name: audit
    filter: {includedEventTypes: [MODEL]}
    actions:
      - {type: file, path: BLOCKED/audit, retry: {attempts: 1}}
  - name: hook
    filter: {includedEventTypes: [MODEL]}
    actions:
      - type: webhook
        url: "URL"
        secret_headers: {x-functions-key: "${env:DEAD_LETTER_TEST_KEY}"}
        retry: {attempts: 1}
"""


@pytest.fixture(autouse=True)
def function_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEAD_LETTER_TEST_KEY", SECRET)


def bodies() -> list[bytes]:
    """Three models registered (the first one's data carries the secret) and two runs completed."""
    kinds = [MODEL, RUN, MODEL, RUN, MODEL]
    out = []
    for i, kind in enumerate(kinds):
        event = {
            "id": f"ev-{i}",
            "topic": TOPIC,
            "subject": f"models/m{i}:1",
            "eventType": kind,
            "eventTime": (START + timedelta(seconds=i)).isoformat(),
            "data": {"modelName": f"m{i}", "note": SECRET if i == 0 else "plain"},
            "dataVersion": "2",
        }
        out.append(orjson.dumps([event]))
    return out


#: A webhook URL that cannot be rendered: the events have no ``data.missing``.
UNRENDERABLE = "http://127.0.0.1:9/{{ data.missing }}"


def write_lane(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lane: str, url: str = UNRENDERABLE, *extra: str
) -> None:
    """A replay whose every action fails: its dead letters go to ``lane`` (what it prints is dropped)."""
    blocked = tmp_path / "blocked"
    (blocked / "archive").mkdir(parents=True)  # a file action cannot append to a directory
    (blocked / "audit").mkdir()
    rules = tmp_path / "rules.yaml"
    text = RULES.replace("BLOCKED", str(blocked)).replace("URL", url).replace("RUN", RUN).replace("MODEL", MODEL)
    rules.write_text(text, encoding="utf-8")
    source = capture(tmp_path / "capture", "0", bodies())
    args = ["replay", "--log-level", "error", "--rules", str(rules), "--dead-letters", lane, *extra, str(source)]
    assert main(args) == 0
    capsys.readouterr()


def letters_in(directory: Path) -> dict[str, dict[str, Any]]:
    return {path.name: orjson.loads(path.read_bytes()) for path in sorted(directory.iterdir())}


def listed(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert main(["dead-letters", "list", "--json", *args]) == 0
    document: dict[str, Any] = orjson.loads(capsys.readouterr().out)
    return document


def expected_groups(letters: dict[str, dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """What the summary should say, worked out from the letters as written."""
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    for name, letter in letters.items():
        last = letter["attempts"][-1]
        key = (letter["rule"], letter["action"]["type"], last["reason"])
        moment = datetime.fromisoformat(last["at"])
        group = groups.setdefault(key, {"count": 0, "times": [], "names": {}})
        group["count"] += 1
        group["times"].append(moment)
        group["names"][name] = moment
    return groups


def test_list_counts_a_directory_lane_by_rule_action_type_and_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lane = tmp_path / "dead"
    write_lane(tmp_path, capsys, str(lane))
    letters = letters_in(lane)
    assert len(letters) == 8

    document = listed(capsys, str(lane))
    groups = {(g["rule"], g["action_type"], g["reason"]): g for g in document["groups"]}
    assert {key: group["count"] for key, group in groups.items()} == {
        ("archive", "file", "failed"): 2,
        ("audit", "file", "failed"): 3,
        ("hook", "webhook", "render"): 3,
    }
    assert [(g["rule"], g["action_type"], g["reason"]) for g in document["groups"]] == sorted(groups)
    for key, expected in expected_groups(letters).items():
        group = groups[key]
        assert datetime.fromisoformat(group["oldest"]) == min(expected["times"])
        assert datetime.fromisoformat(group["newest"]) == max(expected["times"])
        assert expected["names"][group["newest_letter"]] == max(expected["times"])
        assert group["last_error"] == letters[group["newest_letter"]]["attempts"][-1]["error"]
    assert "has no attribute 'missing'" in groups[("hook", "webhook", "render")]["last_error"]
    every = [datetime.fromisoformat(letter["attempts"][-1]["at"]) for letter in letters.values()]
    assert document["total"] == {"count": 8, "oldest": min(every).isoformat(), "newest": max(every).isoformat()}

    # The table says the same, a line per group and the total.
    assert main(["dead-letters", "list", str(lane)]) == 0
    header, *rows, total = capsys.readouterr().out.splitlines()
    assert header.split()[:4] == ["RULE", "ACTION", "REASON", "COUNT"]
    assert [row.split()[:4] for row in rows] == [[*key, str(groups[key]["count"])] for key in sorted(groups)]
    assert total.split()[:2] == ["total", "8"]


def test_show_prints_one_letter_in_full_by_name_or_idempotency_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lane = tmp_path / "dead"
    write_lane(tmp_path, capsys, str(lane))
    letters = letters_in(lane)
    [name] = [name for name, letter in letters.items() if (letter["rule"], letter["event"]["id"]) == ("audit", "ev-2")]
    for wanted in (name, name.removesuffix(".json"), letters[name]["idempotency_key"]):
        assert main(["dead-letters", "show", str(lane), wanted]) == 0
        assert orjson.loads(capsys.readouterr().out) == letters[name]


def test_show_masks_a_secret_that_a_letters_body_carries(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lane = tmp_path / "dead"
    write_lane(tmp_path, capsys, str(lane))  # loading the rules registers the secret
    letters = letters_in(lane)
    name = next(name for name, letter in letters.items() if letter["event"]["id"] == "ev-0")
    assert SECRET in letters[name]["body"]["text"]  # the raw message is kept as it came, to be re-driven
    assert main(["dead-letters", "show", str(lane), name]) == 0
    out = capsys.readouterr().out
    assert SECRET not in out
    assert '"note\\":\\"***\\"' in out
    assert orjson.loads(out)["event"]["id"] == "ev-0"


def test_show_names_an_id_that_is_not_in_the_lane(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lane = tmp_path / "dead"
    write_lane(tmp_path, capsys, str(lane))
    assert main(["dead-letters", "show", str(lane), "0_00000000000000000099_00000_feed.json"]) == 2
    error = capsys.readouterr().err
    assert "error: 0_00000000000000000099_00000_feed.json: no such dead letter in" in error
    assert str(lane) in error


def test_an_empty_lane_lists_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lane = tmp_path / "dead"
    lane.mkdir()
    assert listed(capsys, str(lane)) == {"groups": [], "total": {"count": 0, "oldest": None, "newest": None}}


@pytest.mark.parametrize("command", [["list"], ["list", "--json"], ["show", "ID"]])
def test_a_lane_that_does_not_exist_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    missing = tmp_path / "nowhere"
    verb, *rest = command
    assert main(["dead-letters", verb, str(missing), *rest]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"error: {missing}: no such file or directory" in captured.err


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        pytest.param(b"{not json", "not a dead letter (not JSON", id="not JSON"),
        pytest.param(b'{"rule": "r"}', "not a dead letter (KeyError", id="not a dead letter"),
    ],
)
def test_a_file_in_the_lane_that_is_not_a_dead_letter_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, fragment: str
) -> None:
    lane = tmp_path / "dead"
    write_lane(tmp_path, capsys, str(lane))
    stray = lane / "notes.json"
    stray.write_bytes(content)
    assert main(["dead-letters", "list", str(lane)]) == 2
    error = capsys.readouterr().err
    assert f"error: {stray}: {fragment}" in error
    assert main(["dead-letters", "show", str(lane), "notes"]) == 2
    assert f"error: {stray}: {fragment}" in capsys.readouterr().err


@pytest.mark.integration
def test_a_container_lane_is_listed_and_shown(tmp_path: Path, azurite: Azurite, capsys: pytest.CaptureFixture[str]):
    """Letters from a dead HTTP target (nothing listens on its port), written to a container's folder."""
    connection = ["--connection-string", azurite.connection_string]
    lane = f"{azurite.account_url}/dead-letters-list/worker-1"
    write_lane(tmp_path, capsys, lane, f"http://127.0.0.1:{free_port()}/models/{{{{ data.modelName }}}}", *connection)
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = service.get_container_client("dead-letters-list")
    letters = {
        blob.name.rpartition("/")[2]: orjson.loads(container.download_blob(blob.name).readall())
        for blob in container.list_blobs()
    }
    container.upload_blob("elsewhere/not-a-letter.json", b"{}")  # outside the lane's folder
    assert len(letters) == 8

    document = listed(capsys, lane, *connection)
    assert {(g["rule"], g["action_type"], g["reason"]): g["count"] for g in document["groups"]} == {
        ("archive", "file", "failed"): 2,
        ("audit", "file", "failed"): 3,
        ("hook", "webhook", "unavailable"): 3,
    }
    every = [datetime.fromisoformat(letter["attempts"][-1]["at"]) for letter in letters.values()]
    assert document["total"] == {"count": 8, "oldest": min(every).isoformat(), "newest": max(every).isoformat()}
    [refused] = [group for group in document["groups"] if group["rule"] == "hook"]
    assert "ClientConnectorError" in refused["last_error"]

    assert refused["newest_letter"] in letters
    [name] = [name for name, letter in letters.items() if (letter["rule"], letter["event"]["id"]) == ("hook", "ev-2")]
    assert main(["dead-letters", "show", lane, name, *connection]) == 0
    assert orjson.loads(capsys.readouterr().out) == letters[name]

    missing = f"{azurite.account_url}/no-such-lane"
    assert main(["dead-letters", "list", missing, *connection]) == 2
    assert "container 'no-such-lane' does not exist" in capsys.readouterr().err
