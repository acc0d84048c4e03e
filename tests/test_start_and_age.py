"""Where a first start begins, and events too old to act on: on the test bed (local hub, Azurite, the
real SDK), and in replay."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from structlog.testing import capture_logs

from tests.live import RULES, Actions, checkpoints, events, ids_of, live_settings, send, wait_for
from tests.servers import Azurite
from tests.support import START, capture
from worker.cli import main
from worker.config import RunSettings
from worker.core.accounting import Skip, Tally
from worker.live.run import run_worker
from worker.localhub.hub import LocalHub
from worker.localhub.server import now_ms
from worker.localhub.store import HubSpec
from worker.sending import mlevents

HOURS = 3_600_000


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "rules.yaml").write_text(RULES)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def config(hub: LocalHub, azurite: Azurite, rules: Path, **changes: object) -> RunSettings:
    values = live_settings(hub.connection_string(), azurite, f"start-{uuid.uuid4().hex[:12]}", rules)
    values.update(idle_exit=1.0, pipeline_process=False)
    values.update(changes)
    return RunSettings.explicit(**values)


async def send_at(hub: LocalHub, deliveries: list[mlevents.Delivery], hours_ago: int) -> None:
    """Publish with the hub's clock set back: events enqueued ``hours_ago`` hours ago."""
    hub.state.clock = lambda: now_ms() - hours_ago * HOURS
    try:
        await send(hub, deliveries)
    finally:
        hub.state.clock = now_ms


def attached(hub: LocalHub, partitions: int, group: str = "$default") -> bool:
    name = hub.hubs[0].name.casefold()
    return all(hub.state.owners.get((name, group, str(p))) for p in range(partitions))


@asynccontextmanager
async def worker(settings: RunSettings) -> AsyncIterator[asyncio.Task[Tally]]:
    """A worker running until the block ends."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(settings, stop))
    try:
        yield task
    finally:
        stop.set()
        await task


@pytest.mark.integration
@pytest.mark.timeout(180)
@pytest.mark.usefixtures("sdk_garbage")
@pytest.mark.parametrize("start", ["earliest", "2h", "time"])
async def test_a_partition_without_a_checkpoint_starts_where_the_setting_says(
    workdir: Path, azurite: Azurite, start: str
) -> None:
    week_old = events(60, seed=11, duplicates=0)
    recent = events(40, seed=12, duplicates=0)
    async with LocalHub([HubSpec("start", 2, ("$Default",))]) as hub:
        await send_at(hub, week_old, hours_ago=7 * 24)
        await send(hub, recent)
        position = (datetime.now(UTC) - timedelta(hours=1)).isoformat() if start == "time" else start
        settings = config(hub, azurite, workdir / "rules.yaml", start_position=position)
        with capture_logs() as logs:
            tally = await run_worker(settings)
    acted = set(Actions.read(workdir / "actions.jsonl").per_event)
    expected = ids_of(recent) if start != "earliest" else ids_of(week_old) | ids_of(recent)
    assert acted == expected
    assert tally.read == len(expected)
    claims = [entry for entry in logs if entry["event"] == "partition.claimed"]
    assert len(claims) == 2
    assert {entry["start"] for entry in claims} == {"start_position"}
    assert {entry["start_position"] for entry in claims} == {str(settings.start_position)}


@pytest.mark.integration
@pytest.mark.timeout(180)
@pytest.mark.usefixtures("sdk_garbage")
async def test_latest_skips_what_the_hub_holds_and_a_restart_reads_what_came_meanwhile(
    workdir: Path, azurite: Azurite
) -> None:
    held = events(50, seed=13, duplicates=0)
    meanwhile = events(30, seed=14, duplicates=0)
    after = events(20, seed=15, duplicates=0)
    async with LocalHub([HubSpec("latest", 2, ("$Default",))]) as hub:
        report = await send(hub, held)
        settings = config(hub, azurite, workdir / "rules.yaml", start_position="latest", idle_exit=0)
        with capture_logs() as logs:
            async with worker(settings) as running:
                await wait_for(lambda: _now(attached(hub, 2)), 60, "the receivers to attach at the latest event")
        assert running.result().read == 0
        assert not (workdir / "actions.jsonl").exists()
        claims = [entry for entry in logs if entry["event"] == "partition.claimed"]
        assert {(entry["start"], entry["held"]) for entry in claims} == {("start_position", "checkpoint")}
        # Stopped before its first event, it has recorded where it started: the last event held.
        namespace = f"127.0.0.1:{hub.port}"
        marks = await checkpoints(azurite, settings.checkpoint_container, namespace, "latest")
        assert marks == {p: report.by_partition.get(p, 0) - 1 for p in ("0", "1")}

        # Restarted with the same setting: the checkpoints say where to go on, not "latest", so
        # what was sent while it was down is acted on.
        await send(hub, meanwhile)
        with capture_logs() as logs:
            async with worker(settings) as running:

                async def acted_on_meanwhile() -> bool:
                    return len(Actions.read(workdir / "actions.jsonl").lines) >= len(ids_of(meanwhile))

                await wait_for(acted_on_meanwhile, 60, "the worker to act on what was sent while it was down")
                await send(hub, after)

                async def acted_on_after() -> bool:
                    lines = Actions.read(workdir / "actions.jsonl").lines
                    return len(lines) >= len(ids_of(meanwhile)) + len(ids_of(after))

                await wait_for(acted_on_after, 60, "the worker to act on the events sent after it started")
        assert set(Actions.read(workdir / "actions.jsonl").per_event) == ids_of(meanwhile) | ids_of(after)
        assert running.result().read == len(meanwhile) + len(after)
        claims = [entry for entry in logs if entry["event"] == "partition.claimed"]
        assert {entry["start"] for entry in claims} == {"checkpoint"}
        assert all(isinstance(entry["sequence_number"], int) for entry in claims)


async def _now(value: bool) -> bool:
    return value


AGE_RULES = """
rules:
  - name: recent-only
    max_age: 1h
    filter: {}
    actions: [{type: file, path: recent.jsonl}]
  - name: by-default
    filter: {}
    actions: [{type: file, path: default.jsonl}]
  - name: audit
    max_age: 30d
    filter: {includedEventTypes: [Microsoft.MachineLearningServices.RunCompleted]}
    actions: [{type: file, path: audit.jsonl}]
"""


def timed(count: int, seed: int, start: datetime) -> list[mlevents.Delivery]:
    return list(mlevents.deliveries(mlevents.generate(count, mlevents.Options(seed=seed, start=start))))


@pytest.mark.integration
@pytest.mark.timeout(180)
@pytest.mark.usefixtures("sdk_garbage")
async def test_the_live_worker_does_not_act_on_events_older_than_max_age(workdir: Path, azurite: Azurite) -> None:
    """A worker that was down for two days: its events' ages run to now, not to when they were enqueued."""
    rules = workdir / "age.yaml"
    rules.write_text(AGE_RULES)
    now = datetime.now(UTC)
    two_days_old = timed(40, 21, now - timedelta(days=2))
    fresh = timed(30, 22, now - timedelta(minutes=10))
    async with LocalHub([HubSpec("age", 2, ("$Default",))]) as hub:
        await send_at(hub, two_days_old, hours_ago=48)  # published then, read now
        await send(hub, fresh)
        tally = await run_worker(config(hub, azurite, rules, max_event_age="6h"))
    old_ids, fresh_ids = ids_of(two_days_old), ids_of(fresh)
    runs = {_id(d) for d in two_days_old if _type(d) == mlevents.RUN_COMPLETED}
    assert set(Actions.read(workdir / "recent.jsonl").per_event) == fresh_ids
    assert set(Actions.read(workdir / "default.jsonl").per_event) == fresh_ids  # WORKER_MAX_EVENT_AGE=6h
    audited = set(Actions.read(workdir / "audit.jsonl").per_event)
    assert runs <= audited  # 30 days: old runs are still audited
    assert tally.rule_stale["recent-only"] == len(old_ids)
    assert tally.rule_stale["by-default"] == len(old_ids)
    assert tally.skipped[Skip.STALE] == len(old_ids) - len(runs)  # no rule left to act on them
    assert tally.check() == []


def _id(delivery: mlevents.Delivery) -> str:
    return str(orjson.loads(delivery.body)[0]["id"])


def _type(delivery: mlevents.Delivery) -> str:
    return str(orjson.loads(delivery.body)[0]["eventType"])


def test_a_replay_measures_age_to_the_enqueued_time_by_default_and_to_now_on_request(tmp_path: Path) -> None:
    """A backtest sees what a worker keeping up would have seen; a recovery after an outage sees now."""
    prompt = [d.body for d in timed(30, 31, START - timedelta(seconds=40))]
    retried_late = [d.body for d in timed(5, 32, START - timedelta(days=1))]  # Event Grid retried a day later
    source = tmp_path / "capture"
    capture(source, "0", prompt + retried_late)
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f"rules:\n  - name: fresh\n    max_age: 2h\n    filter: {{}}\n"
        f"    actions: [{{type: file, path: {tmp_path / 'acted.jsonl'}}}]\n"
    )

    def replayed(*options: str) -> dict[str, object]:
        report = tmp_path / "report.json"
        code = main(
            [
                "replay",
                "--log-level",
                "warning",
                "--window",
                "0",
                "--report",
                str(report),
                *options,
                "--rules",
                str(rules),
                str(source),
            ]
        )
        assert code == 0
        loaded: dict[str, object] = orjson.loads(report.read_bytes())
        return loaded

    backtest = replayed("--dry-run")
    assert backtest["skipped"]["stale"] == 5  # type: ignore[index]
    assert backtest["rules"]["fresh"] == {"matched": 30, "stale": 5, "actions": {"file": {"planned": 30}}}  # type: ignore[index]
    recovery = replayed("--dry-run", "--age-from", "now")
    assert recovery["skipped"]["stale"] == 35  # type: ignore[index]
    default = replayed("--dry-run", "--max-age", "12h", "--age-from", "enqueued")
    assert default["skipped"]["stale"] == 5  # type: ignore[index]


@pytest.mark.integration
@pytest.mark.timeout(180)
@pytest.mark.usefixtures("sdk_garbage")
async def test_a_workspace_the_rules_do_not_admit_is_said_once_per_topic(workdir: Path, azurite: Azurite) -> None:
    """Rules whose workspaces list was left as the example skip everything: the worker says so."""
    rules = workdir / "guarded.yaml"
    rules.write_text(
        "workspaces: [/subscriptions/SUBSCRIPTION/resourceGroups/RG/providers/"
        "Microsoft.MachineLearningServices/workspaces/WORKSPACE]\n" + RULES
    )
    published = events(40, seed=51, duplicates=0)
    async with LocalHub([HubSpec("guarded", 2, ("$Default",))]) as hub:
        await send(hub, published)
        with capture_logs() as logs:
            tally = await run_worker(config(hub, azurite, rules))
    assert tally.skipped[Skip.FOREIGN_TOPIC] == len(published)
    told = [entry for entry in logs if entry["event"] == "events.foreign_topic"]
    assert {entry["topic"] for entry in told} == {mlevents.DEFAULT_TOPIC}
    assert len(told) <= 2  # once per partition that saw it
    assert all("WORKSPACE" in str(entry["accepted"]).upper() for entry in told)
