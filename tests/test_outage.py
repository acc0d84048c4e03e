"""An outage of a webhook target, end to end: capture files through the replay pipeline to a real
aiohttp server that fails (503 or a dropped connection) until the first action is dead-lettered,
then recovers. Every event's action arrives or is in the dead-letter lane with its errors; the
counts add up; re-driving the lane after the fix delivers the rest under the same idempotency keys.
The same with the dead-letter lane in a blob container (Azurite)."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from azure.storage.blob import ContainerClient, ContainerSasPermissions, generate_container_sas
from structlog.testing import capture_logs

from tests.probe import DeadLetterFailures, yielding
from tests.servers import ACCOUNT, ACCOUNT_KEY, Azurite, free_port
from tests.support import capture, make_event
from tests.targets import HttpTarget, Received
from worker.actions import ActionSpec, PlannedAction, action_types, idempotency_key
from worker.actions.base import ActionFate
from worker.actions.breaker import BreakerSettings
from worker.actions.delivery.deadletters import dead_letter_lane
from worker.actions.delivery.runner import ActionRunner, RunnerSettings
from worker.actions.retry import RetryPolicy
from worker.cli import main
from worker.errors import SourceError
from worker.replay.run import LogProgress, ReplaySettings, replay
from worker.replay.sources import plan_sources
from worker.rulefiles.loading import load_rules
from worker.settings import CoreSettings, DriverSettings

TOPIC = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ml-prod"
START = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
EVENTS = 40

RULES = """\
rules:
  - name: hook
    filter: {includedEventTypes: [Microsoft.MachineLearningServices.ModelRegistered]}
    actions:
      - type: webhook
        url: URL/models/{{ data.modelName }}
        secret_headers: {x-functions-key: "${env:OUTAGE_FUNCTION_KEY}"}
        retry: {attempts: 3, first_delay: 0.01, max_delay: 0.05}
        timeout: 5
"""
SECRET = "outage-function-key-0042"  # noqa: S105 - a test value, kept out of dead letters


@pytest.fixture(autouse=True)
def function_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTAGE_FUNCTION_KEY", SECRET)


def bodies(count: int) -> list[bytes]:
    out = []
    for i in range(count):
        event = {
            "id": f"ev-{i:03d}",
            "topic": TOPIC,
            "subject": f"models/m{i}:1",
            "eventType": "Microsoft.MachineLearningServices.ModelRegistered",
            "eventTime": (START + timedelta(seconds=i)).isoformat(),
            "data": {"modelName": f"m{i}", "modelVersion": 1},
            "dataVersion": "2",
        }
        out.append(orjson.dumps([event]))
    return out


def rules_file(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES.replace("URL", url), encoding="utf-8")
    return path


def letters_in(directory: Path) -> list[dict[str, Any]]:
    return [orjson.loads(p.read_bytes()) for p in sorted(directory.glob("*.json"))]


def settings(dead: Path | str, connection_string: str | None = None) -> ReplaySettings:
    return ReplaySettings(
        core=CoreSettings(window=0),
        driver=DriverSettings(concurrency=4),
        runner=RunnerSettings(per_target=4, breaker=BreakerSettings(failures=3, reset_after=0.05)),
        dead_letters=dead,
        connection_string=connection_string,
    )


class Outage:
    """Fails every request (a 503 or a dropped connection, in turn) until ``over()``; records answers."""

    def __init__(self, target: HttpTarget, over: Any) -> None:
        self.answers: list[tuple[str, str, int | None]] = []  # (event id, idempotency key, status)
        self._over = over
        target.respond = self.respond

    async def respond(self, received: Received) -> web.StreamResponse | None:
        event_id = received.json()["id"]
        key = received.header("Idempotency-Key") or ""
        assert received.header("x-functions-key") == SECRET
        if self._over():
            self.answers.append((event_id, key, 200))
            return web.Response(status=200)
        if len(self.answers) % 2:
            self.answers.append((event_id, key, None))
            return None
        self.answers.append((event_id, key, 503))
        return web.Response(status=503, headers={"Retry-After": "0"}, text="try later")


@pytest.mark.integration
async def test_an_outage_then_recovery_loses_nothing(
    tmp_path: Path, http_target: HttpTarget, capsys: pytest.CaptureFixture[str]
):
    dead = tmp_path / "dead"
    outage = Outage(http_target, lambda: any(dead.glob("*.json")))
    source = capture(tmp_path / "capture", "0", bodies(EVENTS))
    table = load_rules([rules_file(tmp_path, http_target.url)])
    expected = {f"ev-{i:03d}": idempotency_key(f"ev-{i:03d}", "hook", 0) for i in range(EVENTS)}

    with plan_sources([str(source)]) as plan:
        tally = await replay(plan, table, settings(dead), LogProgress(1))

    # Every request carries its event's key, whichever attempt it was.
    assert all(key == expected[event_id] for event_id, key, _ in outage.answers)
    accepted = {key for _, key, status in outage.answers if status == 200}
    letters = letters_in(dead)
    dead_keys = {letter["idempotency_key"] for letter in letters}
    assert letters, "the outage lasts until an action is dead-lettered"
    assert accepted.isdisjoint(dead_keys)
    assert accepted | dead_keys == set(expected.values())
    # The counts add up: every event read has one outcome, every action one fate.
    assert tally.check() == []
    assert tally.read == EVENTS
    assert tally.actions == {
        ("hook", "webhook", ActionFate.DONE): len(accepted),
        ("hook", "webhook", ActionFate.DEAD_LETTERED): len(letters),
    }
    for letter in letters:
        assert letter["rule"] == "hook"
        assert letter["action"] == {"type": "webhook", "index": 0}
        assert letter["position"]["partition_id"] == "0"
        assert orjson.loads(letter["body"]["text"])[0]["id"] == letter["event"]["id"]
        assert len(letter["attempts"]) == 3
        for attempt in letter["attempts"]:
            assert attempt["transient"] is True
            assert any(s in attempt["error"] for s in ("HTTP 503", "ServerDisconnected", "circuit open")), attempt
    assert SECRET not in "".join(p.read_text() for p in dead.iterdir())

    # After the fix: re-drive the lane. Only the dead-lettered actions run, under the same keys.
    before = len(outage.answers)
    report = tmp_path / "redrive.json"
    args = ["--rules", str(rules_file(tmp_path, http_target.url)), "--dead-letters", str(tmp_path / "dead-2")]
    # The CLI runs its own event loop: in a thread, while the target answers on this one.
    command = ["replay", "--from-dead-letters", "--log-level", "error", "--report", str(report), *args, str(dead)]
    code = await asyncio.to_thread(main, command)
    assert code == 0, capsys.readouterr().err
    redriven = outage.answers[before:]
    assert {key for _, key, _ in redriven} == dead_keys
    assert all(status == 200 for _, _, status in redriven)
    assert len(redriven) == len(dead_keys)
    counts = orjson.loads(report.read_bytes())
    assert counts["events"] == len(letters)
    assert counts["rules"]["hook"]["actions"] == {"webhook": {"done": len(letters)}}
    assert not (tmp_path / "dead-2").exists()

    # Now every event's action has arrived, and every duplicate delivery carried the same key.
    received = Counter(key for _, key, status in outage.answers if status == 200)
    assert set(received) == set(expected.values())
    assert all(n == 1 for n in received.values())
    keys_per_event: dict[str, set[str]] = {}
    for event_id, key, _ in outage.answers:
        keys_per_event.setdefault(event_id, set()).add(key)
    assert all(len(keys) == 1 for keys in keys_per_event.values())
    assert any(n > 1 for n in Counter(event_id for event_id, _, _ in outage.answers).values())


@pytest.mark.integration
async def test_a_dead_letter_container_is_written_and_re_driven(
    tmp_path: Path, http_target: HttpTarget, azurite: Azurite
):
    lane = f"{azurite.account_url}/dead-letters/worker-1"
    down = f"http://127.0.0.1:{free_port()}"
    source = capture(tmp_path / "capture", "3", bodies(6))
    table = load_rules([rules_file(tmp_path, down)])
    with plan_sources([str(source)]) as plan:
        tally = await replay(plan, table, settings(lane, azurite.connection_string), LogProgress(1))
    assert tally.actions == {("hook", "webhook", ActionFate.DEAD_LETTERED): 6}

    container = ContainerClient.from_connection_string(azurite.connection_string, "dead-letters")
    with container:
        names = sorted(blob.name for blob in container.list_blobs())
        assert len(names) == 6
        assert all(name.startswith("worker-1/3_") for name in names)
        letter = orjson.loads(container.download_blob(names[0]).readall())
    assert letter["event"]["id"] == "ev-000"
    assert letter["position"]["partition_id"] == "3"
    errors = [a["error"] for a in letter["attempts"]]
    assert "ClientConnectorError" in errors[0]  # refused, then spared while the circuit is open
    assert all("ClientConnectorError" in e or "circuit open" in e for e in errors)
    assert SECRET not in orjson.dumps(letter).decode()

    outage = Outage(http_target, lambda: True)
    args = ["--rules", str(rules_file(tmp_path, http_target.url)), "--connection-string", azurite.connection_string]
    assert await asyncio.to_thread(main, ["replay", "--from-dead-letters", "--log-level", "error", *args, lane]) == 0
    assert sorted(event_id for event_id, _, _ in outage.answers) == [f"ev-{i:03d}" for i in range(6)]


@pytest.mark.parametrize(
    ("files", "fragment"),
    [
        ({}, "no .json files found"),
        ({"0_00000000000000000001_00000_abc.json": b"{not json"}, "not a dead letter"),
        ({"0_00000000000000000001_00000_abc.json": b'{"rule": "r"}'}, "not a dead letter"),
    ],
)
def test_a_lane_that_is_empty_or_holds_no_letters_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], files: dict[str, bytes], fragment: str
):
    lane = tmp_path / "lane"
    lane.mkdir()
    for name, data in files.items():
        (lane / name).write_bytes(data)
    rules = rules_file(tmp_path, "http://127.0.0.1:9")
    assert main(["replay", "--from-dead-letters", "--rules", str(rules), str(lane)]) == 2
    assert fragment in capsys.readouterr().err


@pytest.mark.integration
async def test_a_dead_letter_container_refusing_writes_holds_the_event_and_is_tried_again(azurite: Azurite):
    """Writes refused (a read-only SAS): the dead letter is tried again, each failure counted and
    logged, and the action never finishes, so its event stays unfinished; stopping leaves it so."""
    with ContainerClient.from_connection_string(azurite.connection_string, "read-only-lane") as container:
        container.create_container()
    sas = generate_container_sas(
        ACCOUNT,
        "read-only-lane",
        account_key=ACCOUNT_KEY,
        permission=ContainerSasPermissions(read=True, list=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    failures = DeadLetterFailures()
    failed = failures.action_types
    lane = dead_letter_lane(f"{azurite.account_url}/read-only-lane?{sas}")
    runner = ActionRunner(lane, RetryPolicy(attempts=1), sleep=yielding, observe=failures)
    hook = action_types()["webhook"].params.model_validate(
        {
            "url": f"http://127.0.0.1:{free_port()}/down",
            "secret_headers": {"x-functions-key": "${env:OUTAGE_FUNCTION_KEY}"},
        }
    )
    with capture_logs() as logs:
        running = asyncio.create_task(runner.run(PlannedAction("hook", ActionSpec("webhook", 0, hook), make_event())))
        async with asyncio.timeout(30):
            while len(failed) < 3:  # noqa: ASYNC110 - the failures are counted as they happen
                await asyncio.sleep(0.01)
        assert not running.done()
        running.cancel()  # the worker stops: the event is redone after its restart
        with pytest.raises(asyncio.CancelledError):
            await running
    await runner.aclose()
    refusals = [line for line in logs if line["event"] == "dead_letter.failed"]
    assert len(refusals) >= 3
    assert all("read-only-lane" in line["error"] and sas not in line["error"] for line in refusals)
    with ContainerClient.from_connection_string(azurite.connection_string, "read-only-lane") as container:
        assert list(container.list_blobs()) == []


def test_a_dead_letter_container_of_another_account_than_the_connection_strings_is_refused():
    connection = f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};BlobEndpoint=http://127.0.0.1:10000/{ACCOUNT};"
    with pytest.raises(SourceError, match="the connection string is for another account"):
        dead_letter_lane("https://elsewhere.blob.core.windows.net/dead-letters", connection)
