"""``checkpoints show`` and ``checkpoints reset`` on the test bed: the local hub, Azurite, real workers.

What they report is checked against the SDK's own checkpoint store and the hub; what a reset did, by
running a worker from the checkpoints it wrote and seeing which events it acts on.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from azure.eventhub.aio import EventHubConsumerClient
from azure.eventhub.extensions.checkpointstoreblobaio import BlobCheckpointStore

from tests.live import (
    RULES,
    Actions,
    checkpoints,
    events,
    ids_of,
    owners,
    start_worker,
    stop_worker,
    wait_for,
    wait_worker,
)
from tests.live import worker_env as live_env
from tests.servers import Azurite
from worker.admin.checkpoints import reset, show
from worker.checkpoints.store import DirectoryCheckpoints, DirectoryCheckpointStore, open_stores
from worker.cli import main
from worker.config import load_connection_settings
from worker.core.state import SavedState
from worker.errors import CheckpointMoved, SettingsError
from worker.events import Position
from worker.localhub.hub import LocalHub
from worker.localhub.store import HubSpec
from worker.moments import EARLIEST, LATEST, parse_start
from worker.sending.mlevents import Delivery
from worker.sending.publish import plan, publish
from worker.settings import CheckpointSettings, ConsumerGroupSettings, Scope

HUB = "Endpoint=sb://127.0.0.1:5672;SharedAccessKeyName=k;SharedAccessKey=s3cr3t;EntityPath=ml-events"
SCOPE = Scope("ns.servicebus.windows.net", "ml-events", "$Default")
STATE = SavedState(recent_ids=("a", "b"), finished_beyond=("c",))


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.upper().startswith("WORKER_"):
            monkeypatch.delenv(key)


# --- settings and arguments ------------------------------------------------------------------------


@pytest.mark.usefixtures("clean_environment")
def test_the_commands_take_run_s_connection_settings_and_ignore_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pod's environment holds every variable of ``run``, some only ``run`` understands."""
    monkeypatch.setenv("WORKER_EVENTHUB_CONNECTION_STRING", HUB)
    monkeypatch.setenv("WORKER_CHECKPOINT_DIR", "state")
    monkeypatch.setenv("WORKER_CONSUMER_GROUP", "workers")
    monkeypatch.setenv("WORKER_PREFETCH", "not-even-a-number")  # run's, and wrong: not theirs to judge
    settings = load_connection_settings({"load_balancing_interval": "5"})
    group = settings.consumer_group_settings()
    assert group.scope == Scope("127.0.0.1:5672", "ml-events", "workers")
    assert group.checkpoints.directory == Path("state")
    assert group.expiry == 30  # 6 x the interval
    assert "s3cr3t" not in repr(group)


@pytest.mark.usefixtures("clean_environment")
def test_their_settings_errors_name_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_CONSUMR_GROUP", "typo")
    with pytest.raises(SettingsError) as caught:
        load_connection_settings()
    found = caught.value.problems
    assert any("WORKER_EVENTHUB_CONNECTION_STRING" in p and "WORKER_EVENTHUB_NAMESPACE" in p for p in found)
    assert any("WORKER_CHECKPOINT_DIR" in p for p in found)
    assert "WORKER_CONSUMR_GROUP is not a setting (a typo?)" in found
    assert not any("WORKER_RULES" in p for p in found)  # run's alone


@pytest.mark.usefixtures("clean_environment")
def test_the_command_line_refuses_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["checkpoints", "show"]) == 2
    assert "WORKER_EVENTHUB_CONNECTION_STRING (--eventhub-connection-string)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["checkpoints", "reset", "--to", "yesterday", "--eventhub-connection-string", HUB])
    assert exited.value.code == 2
    assert "'yesterday' is not a start position" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["checkpoints", "reset", "--eventhub-connection-string", HUB])  # --to is required
    assert "--to" in capsys.readouterr().err


# --- the checkpoint's own reset, on a directory ------------------------------------------------------


async def test_a_reset_moves_a_checkpoint_back_and_empties_its_state(tmp_path: Path) -> None:
    partitions = DirectoryCheckpoints(tmp_path, SCOPE)
    worker = partitions.checkpoint("1")
    assert await worker.look() is None
    assert await worker.write(Position("1", "9000", 90), STATE)
    operator = partitions.checkpoint("1")
    seen = await operator.look()
    assert seen is not None
    assert (seen.offset, seen.sequence_number) == ("9000", 90)
    assert seen.written is not None
    assert abs(seen.written - datetime.now(UTC)) < timedelta(minutes=1)
    await operator.reset(Position("1", "-1", -1))
    listed = await DirectoryCheckpointStore(tmp_path).list_checkpoints(*_scope())
    assert [(c["offset"], c["sequence_number"]) for c in listed] == [("-1", -1)]
    assert await partitions.checkpoint("1").load() == SavedState()
    # The worker's own writes still only move forward from there.
    assert await partitions.checkpoint("1").write(Position("1", "100", 1), STATE)


async def test_a_reset_does_not_overwrite_a_write_it_did_not_see(tmp_path: Path) -> None:
    partitions = DirectoryCheckpoints(tmp_path, SCOPE)
    operator = partitions.checkpoint("0")
    assert await operator.look() is None
    assert await partitions.checkpoint("0").write(Position("0", "500", 5), STATE)  # a worker, meanwhile
    with pytest.raises(CheckpointMoved, match=r"checkpoint/0: written since it was read"):
        await operator.reset(Position("0", "-1", -1))
    listed = await DirectoryCheckpointStore(tmp_path).list_checkpoints(*_scope())
    assert [(c["offset"], c["sequence_number"]) for c in listed] == [("500", 5)]
    await operator.look()
    await operator.reset(Position("0", "-1", -1))  # read again: it goes through
    assert await partitions.checkpoint("0").load() == SavedState()


@pytest.mark.integration
async def test_a_blob_reset_is_a_compare_and_swap_too(azurite: Azurite) -> None:
    container = f"reset-{uuid.uuid4().hex[:12]}"
    config = CheckpointSettings(azurite.connection_string, None, container, None)
    async with open_stores(config, SCOPE) as stores:
        worker, operator = stores.partitions.checkpoint("2"), stores.partitions.checkpoint("2")
        assert await worker.write(Position("2", "9000", 90), STATE)
        seen = await operator.look()
        assert seen is not None
        assert (seen.offset, seen.sequence_number) == ("9000", 90)
        assert await worker.write(Position("2", "9100", 91), STATE)  # after the operator read it
        with pytest.raises(CheckpointMoved, match=r"checkpoint/2: written since it was read"):
            await operator.reset(Position("2", "-1", -1))
        await operator.look()
        await operator.reset(Position("2", "-1", -1))
        listed = await stores.checkpoints.list_checkpoints(*_scope())
        assert [(c["offset"], c["sequence_number"]) for c in listed] == [("-1", -1)]
        assert await stores.partitions.checkpoint("2").load() == SavedState()
        # A reset where there was no checkpoint creates one.
        fresh = stores.partitions.checkpoint("3")
        await fresh.reset(Position("3", "700", 7))
        assert (await stores.partitions.checkpoint("3").look()).sequence_number == 7  # type: ignore[union-attr]


def _scope() -> tuple[str, str, str]:
    return SCOPE.namespace, SCOPE.eventhub, SCOPE.consumer_group


# --- on the test bed ---------------------------------------------------------------------------------


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    return path


def worker_env(hub: LocalHub, azurite: Azurite, container: str, rules: Path, **settings: object) -> dict[str, str]:
    """A worker's whole environment, run's variables and all, as a pod's would be."""
    values: dict[str, object] = {"load_balancing_interval": 0.5}
    values.update(settings)
    return live_env(hub, azurite, container, rules, **values)


async def cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """``python -m worker ARGS`` in ``env``: its exit code, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(90):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def shown(env: dict[str, str]) -> dict[str, dict[str, object]]:
    """``checkpoints show --json``, by partition."""
    code, out, err = await cli(env, "checkpoints", "show", "--json")
    assert code == 0, err
    return {str(row["partition_id"]): row for row in orjson.loads(out)["partitions"]}


async def run_until_idle(env: dict[str, str], cwd: Path) -> Actions:
    """A worker from the checkpoints as they are, until it has caught up: what it acted on."""
    process = await start_worker({**env, "WORKER_IDLE_EXIT": "1.5"}, cwd)
    assert await wait_worker(process) == 0, (cwd / "worker.log").read_text()[-3000:]
    return Actions.read(cwd / "actions.jsonl")


async def send_to(hub: LocalHub, deliveries: list[Delivery], partition: str | None = None) -> dict[str, int]:
    """Publish with the real producer, keyed by subject (or all to one partition): the messages per partition."""
    report = await publish(hub.connection_string(), plan(deliveries, "subject"), partition_id=partition)
    return report.by_partition


async def hub_ends(hub: LocalHub) -> dict[str, int]:
    """Each partition's last enqueued sequence number, as the hub answers the SDK."""
    async with EventHubConsumerClient.from_connection_string(
        hub.connection_string(), consumer_group="$Default"
    ) as client:
        ids = await client.get_partition_ids()
        found = [await client.get_partition_properties(partition) for partition in ids]
    return {str(p["id"]): int(p["last_enqueued_sequence_number"]) for p in found}


def namespace(hub: LocalHub) -> str:
    return f"127.0.0.1:{hub.port}"


def container() -> str:
    return f"group-{uuid.uuid4().hex[:12]}"


@pytest.mark.integration
@pytest.mark.timeout(240)
@pytest.mark.usefixtures("sdk_garbage")
async def test_show_agrees_with_the_sdk_s_checkpoint_store_and_the_hub(
    tmp_path: Path, azurite: Azurite, rules: Path
) -> None:
    where = container()
    async with LocalHub([HubSpec("show", 4, ("$Default", "fresh"))]) as hub:
        env = worker_env(hub, azurite, where, rules)
        # No worker has run: there is no container yet, and show says so.
        code, _, err = await cli(env, "checkpoints", "show")
        assert code == 2
        assert f"checkpoint container {where!r}" in err

        await send_to(hub, events(300, seed=21))
        await run_until_idle(env, tmp_path / "first")
        more = await send_to(hub, events(60, seed=22))

        found = await shown(env)
        async with BlobCheckpointStore.from_connection_string(azurite.connection_string, where) as store:
            listed = {c["partition_id"]: c for c in await store.list_checkpoints(namespace(hub), "show", "$Default")}
            claims = {o["partition_id"]: o for o in await store.list_ownership(namespace(hub), "show", "$Default")}
        ends = await hub_ends(hub)
        assert set(found) == set(ends) == set(listed) == {"0", "1", "2", "3"}
        for partition, row in found.items():
            assert row["checkpoint_sequence_number"] == listed[partition]["sequence_number"]
            assert row["checkpoint_offset"] == listed[partition]["offset"]
            assert row["checkpoint_written"] is not None
            assert row["last_enqueued_sequence_number"] == ends[partition]
            assert row["lag"] == ends[partition] - listed[partition]["sequence_number"]
            assert row["lag"] == more.get(partition, 0)  # the worker had finished everything before
            assert row["lag_is_whole_partition"] is False
            # The worker stopped cleanly: it released its claims.
            assert not claims[partition]["owner_id"]
            assert (row["claim"], row["owner_id"]) == ("released", None)

        # A consumer group that never ran: no checkpoint, each partition's lag is all of it.
        fresh = await shown({**env, "WORKER_CONSUMER_GROUP": "fresh"})
        for partition, row in fresh.items():
            assert row["checkpoint_sequence_number"] is None
            assert (row["lag"], row["lag_is_whole_partition"]) == (ends[partition] + 1, True)
            assert row["claim"] == "none"

        code, out, err = await cli(env, "checkpoints", "show")
        assert code == 0, err
        header = out.splitlines()[1]
        assert header.split()[:3] == ["PARTITION", "CHECKPOINT", "OFFSET"]
        assert len(out.splitlines()) == 2 + 4


@pytest.mark.integration
@pytest.mark.timeout(240)
@pytest.mark.usefixtures("sdk_garbage")
async def test_a_reset_to_earliest_acts_on_every_event_again(tmp_path: Path, azurite: Azurite, rules: Path) -> None:
    where = container()
    async with LocalHub([HubSpec("earliest", 4)]) as hub:
        published = events(300, seed=23)
        sent = await send_to(hub, published)
        env = worker_env(hub, azurite, where, rules)
        first = await run_until_idle(env, tmp_path / "first")
        assert set(first.per_event) == ids_of(published)
        before = await checkpoints(azurite, where, namespace(hub), "earliest")
        assert before == {partition: count - 1 for partition, count in sent.items()}

        # A dry run shows the moves and writes nothing.
        code, out, err = await cli(env, "checkpoints", "reset", "--to", "earliest", "--dry-run")
        assert code == 0, err
        assert "partition 0: " in out
        assert "-> -1 (offset -1: the start of the partition)" in out
        assert "dry run: nothing was written" in out
        assert await checkpoints(azurite, where, namespace(hub), "earliest") == before

        code, out, err = await cli(env, "checkpoints", "reset", "--to", "earliest")
        assert code == 0, err
        assert f"partition 0: {before['0']} (offset " in out
        assert await checkpoints(azurite, where, namespace(hub), "earliest") == dict.fromkeys(sent, -1)
        # KEDA's lag is every event again.
        assert {p: row["lag"] for p, row in (await shown(env)).items()} == sent

        # Every event is acted on again, once: the pipeline state (its recent ids) was emptied too,
        # or they would all be taken for Event Grid's duplicates.
        again = await run_until_idle(env, tmp_path / "again")
        assert set(again.per_event) == ids_of(published)
        assert max(again.per_event.values()) == 1


@pytest.mark.integration
@pytest.mark.timeout(240)
@pytest.mark.usefixtures("sdk_garbage")
async def test_a_reset_to_latest_skips_what_was_enqueued_before(tmp_path: Path, azurite: Azurite, rules: Path) -> None:
    where = container()
    async with LocalHub([HubSpec("latest", 4)]) as hub:
        old = await send_to(hub, events(200, seed=24))
        env = worker_env(hub, azurite, where, rules)
        # A consumer group that never ran, started at the end of the hub: no container yet, reset makes it.
        code, out, err = await cli(env, "checkpoints", "reset", "--to", "latest")
        assert code == 0, err
        assert "no checkpoint -> " in out
        assert await checkpoints(azurite, where, namespace(hub), "latest") == {p: n - 1 for p, n in old.items()}
        assert all(row["lag"] == 0 for row in (await shown(env)).values())

        new = events(100, seed=25)
        await send_to(hub, new)
        acted = await run_until_idle(env, tmp_path / "worker")
        assert set(acted.per_event) == ids_of(new)


@pytest.mark.integration
@pytest.mark.timeout(240)
@pytest.mark.usefixtures("sdk_garbage")
async def test_a_reset_to_a_time_resumes_at_the_first_event_enqueued_from_then(
    tmp_path: Path, azurite: Azurite, rules: Path
) -> None:
    where = container()
    async with LocalHub([HubSpec("time", 4)]) as hub:
        # Partition 0: events before and after the time; 1: before only; 2: after only; 3: none.
        before, after = events(80, seed=26, duplicates=0), events(60, seed=27, duplicates=0)
        await send_to(hub, before[:50], "0")
        await send_to(hub, before[50:], "1")
        moment = datetime.now(UTC) + timedelta(milliseconds=2)  # after every event before, to the millisecond

        async def past() -> bool:
            return datetime.now(UTC) >= moment + timedelta(milliseconds=3)

        await wait_for(past, 5, "the clock to pass the time")
        await send_to(hub, after[:40], "0")
        await send_to(hub, after[40:], "2")

        env = worker_env(hub, azurite, where, rules)
        code, out, err = await cli(env, "checkpoints", "reset", "--to", moment.isoformat())
        assert code == 0, err
        assert await checkpoints(azurite, where, namespace(hub), "time") == {"0": 49, "1": 29, "2": -1, "3": -1}
        lines = {line.split(":")[0]: line for line in out.splitlines()}
        assert "before the first event enqueued at or after" in lines["partition 0"]
        assert "none was enqueued at or after" in lines["partition 1"]
        assert "the start of the partition" in lines["partition 2"]
        assert "never held an event" in lines["partition 3"]
        lag = {p: row["lag"] for p, row in (await shown(env)).items()}
        assert lag == {"0": 40, "1": 0, "2": 20, "3": 0}

        acted = await run_until_idle(env, tmp_path / "worker")
        assert set(acted.per_event) == ids_of(after)
        assert max(acted.per_event.values()) == 1


@pytest.mark.integration
@pytest.mark.timeout(240)
@pytest.mark.usefixtures("sdk_garbage")
async def test_a_reset_is_refused_while_a_worker_holds_the_partitions_unless_forced(
    tmp_path: Path, azurite: Azurite, rules: Path
) -> None:
    where = container()
    async with LocalHub([HubSpec("held", 2)]) as hub:
        published = events(100, seed=28)
        await send_to(hub, published)
        env = worker_env(hub, azurite, where, rules, ownership_expiry=4)
        cwd = tmp_path / "running"
        process = await start_worker(env, cwd)
        try:

            async def caught_up() -> bool:
                return set(Actions.read(cwd / "actions.jsonl").per_event) == ids_of(published)

            await wait_for(caught_up, 60, "the worker to act on every event")
            held = await owners(azurite, where, namespace(hub), "held")
            assert set(held) == {"0", "1"}
            assert all(held.values())

            # show: the owner, and a live claim.
            found = await shown(env)
            assert {p: (row["owner_id"], row["claim"]) for p, row in found.items()} == {
                p: (owner, "live") for p, owner in held.items()
            }

            before = await checkpoints(azurite, where, namespace(hub), "held")
            code, out, err = await cli(env, "checkpoints", "reset", "--to", "earliest")
            assert code == 1
            assert out == ""
            for partition, owner in held.items():
                assert f"partition {partition} is held by {owner} (claimed " in err
            assert "--force" in err
            # Forced, as a dry run: what would move, and nothing moved.
            code, out, err = await cli(env, "checkpoints", "reset", "--to", "earliest", "--force", "--dry-run")
            assert code == 0, err
            assert "warning: forced: partition 0 is held by" in err
            assert "dry run: nothing was written" in out
            assert await checkpoints(azurite, where, namespace(hub), "held") == before
        finally:
            await stop_worker(process, signal.SIGKILL)

        # The worker died without releasing its claims: they stay live until they expire. Forced:
        code, out, err = await cli(env, "checkpoints", "reset", "--to", "earliest", "--force", "--partition", "1")
        assert code == 0, err
        assert await checkpoints(azurite, where, namespace(hub), "held") == {"0": before["0"], "1": -1}
        # The next worker takes the partitions over once the claims expire, and acts again on partition 1's
        # events, and only those.
        again = await run_until_idle(env, tmp_path / "next")
        first = Actions.read(cwd / "actions.jsonl")
        on_partition_1 = {str(line["event_id"]) for line in first.lines if line["partition_id"] == "1"}
        assert on_partition_1
        assert set(again.per_event) == on_partition_1


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.usefixtures("sdk_garbage")
async def test_both_commands_on_a_checkpoint_directory(tmp_path: Path) -> None:
    async with LocalHub([HubSpec("local", 2)]) as hub:
        sent = await send_to(hub, events(40, seed=29, duplicates=0))
        directory = tmp_path / "checkpoints"
        settings = ConsumerGroupSettings(
            connection_string=hub.connection_string(),
            namespace=None,
            scope=Scope(namespace(hub), "local", "$Default"),
            checkpoints=CheckpointSettings(None, None, "unused", directory),
            expiry=30.0,
        )
        with pytest.raises(SettingsError, match="is not a directory"):
            await show(settings)

        report = await reset(settings, LATEST)
        assert report.written
        assert [(move.partition_id, move.before) for move in report.moves] == [("0", None), ("1", None)]
        store = DirectoryCheckpointStore(directory)
        listed = await store.list_checkpoints(namespace(hub), "local", "$Default")
        assert {c["partition_id"]: c["sequence_number"] for c in listed} == {p: n - 1 for p, n in sent.items()}
        rows = {row.partition_id: row for row in await show(settings)}
        assert {p: (row.checkpoint_sequence_number, row.lag) for p, row in rows.items()} == {
            p: (n - 1, 0) for p, n in sent.items()
        }
        assert await DirectoryCheckpoints(directory, settings.scope).checkpoint("0").load() == SavedState()

        # A live claim in the directory store: named, and the reset refused.
        ownership = {
            "fully_qualified_namespace": namespace(hub),
            "eventhub_name": "local",
            "consumer_group": "$Default",
            "partition_id": "1",
            "owner_id": "worker-a",
        }
        await store.claim_ownership([ownership])
        refused = await reset(settings, EARLIEST)
        assert not refused.written
        assert refused.held[0].startswith("partition 1 is held by worker-a (claimed ")
        assert (await show(settings))[1].claim == "live"

        # Only the partition asked for; a partition the hub does not have is named.
        moved = await reset(settings, parse_start("1h"), ["0"])
        assert [move.partition_id for move in moved.moves] == ["0"]
        assert (moved.moves[0].after.offset, moved.moves[0].after.sequence_number) == ("-1", -1)
        with pytest.raises(SettingsError, match="--partition 5: the hub has partitions 0, 1"):
            await reset(settings, EARLIEST, ["5"], force=True)
