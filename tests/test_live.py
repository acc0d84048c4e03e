"""The live worker on the test bed: the local hub driven by the real SDK, checkpoints in Azurite."""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
import structlog

from tests.configmap import ConfigMapVolume
from tests.live import (
    RULES,
    Actions,
    adds_up,
    checkpoints,
    events,
    ids_of,
    live_settings,
    local_hub,
    metrics_of,
    owners,
    send,
    send_stream,
    start_worker,
    stop_worker,
    wait_for,
    wait_worker,
    worker_env,
    worker_log,
)
from tests.servers import Azurite, free_port
from worker.config import RunSettings
from worker.core.accounting import Fate, Skip
from worker.live.run import run_worker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180), pytest.mark.usefixtures("sdk_garbage")]


def settings(hub_connection: str, azurite: Azurite, container: str, rules: Path, **changes: object) -> RunSettings:
    """An in-process worker's settings: the live tests' own, stopping once idle for a second."""
    values = live_settings(hub_connection, azurite, container, rules)
    values.update(idle_exit=1.0)
    values.update(changes)
    return RunSettings.explicit(**values)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The in-process worker's working directory: its file actions and dead letters land here."""
    (tmp_path / "rules.yaml").write_text(RULES)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("pipeline_process", [True, False], ids=["pipeline-process", "one-process"])
async def test_every_published_event_is_acted_on_once_and_a_restart_resumes(
    workdir: Path, azurite: Azurite, pipeline_process: bool
) -> None:
    container = f"live-{uuid.uuid4().hex[:12]}"
    async with local_hub("resume") as hub:
        first = events(600, seed=1)
        report = await send(hub, first)
        assert report.sent == len(first)
        config = settings(
            hub.connection_string(),
            azurite,
            container,
            workdir / "rules.yaml",
            http_port=free_port(),
            pipeline_process=pipeline_process,
        )

        tally = await run_worker(config)
        assert tally.check() == []
        assert tally.read == len(first)
        acted = Actions.read(workdir / "actions.jsonl")
        assert set(acted.per_event) == ids_of(first)
        assert max(acted.per_event.values()) == 1  # Event Grid's duplicates were skipped, nothing redone
        assert tally.skipped[Skip.DUPLICATE] == len(first) - len(ids_of(first))

        # Each partition's checkpoint is its last event: everything read was finished.
        namespace = f"127.0.0.1:{hub.port}"
        marks = await checkpoints(azurite, container, namespace, "resume")
        expected = {p: n - 1 for p, n in report.by_partition.items() if n}
        assert marks == expected

        # A restart reads nothing again; new events are acted on once.
        again = await run_worker(config)
        assert again.read == 0
        second = events(120, seed=2)
        await send(hub, second)
        later = await run_worker(config)
        assert later.read == len(second)
        acted = Actions.read(workdir / "actions.jsonl")
        assert set(acted.per_event) == ids_of(first) | ids_of(second)
        assert max(acted.per_event.values()) == 1


async def test_health_and_metrics_of_a_running_worker(workdir: Path, azurite: Azurite) -> None:
    port = free_port()
    async with local_hub("ops") as hub:
        await send(hub, events(50, seed=3, duplicates=0))
        config = settings(
            hub.connection_string(),
            azurite,
            f"ops-{uuid.uuid4().hex[:12]}",
            workdir / "rules.yaml",
            http_port=port,
            http_host="127.0.0.1",
            idle_exit=0,
        )
        stop = asyncio.Event()
        running = asyncio.create_task(run_worker(config, stop))
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:

            async def read_all() -> bool:
                try:
                    async with http.get("/metrics") as response:
                        text = await response.text()
                except aiohttp.ClientConnectionError:
                    return False
                return 'azml_worker_rule_matches_total{rule="every-event"} 50.0' in text

            await wait_for(read_all, 30, "the metrics to count 50 matches")
            async with http.get("/readyz") as response:
                assert response.status == 200
            async with http.get("/metrics") as response:
                text = await response.text()
            assert "azml_worker_partitions_owned 4.0" in text
            assert "azml_worker_events_read_total 50.0" in text
            received = re.findall(r'^azml_worker_messages_received_total\{partition="\d"\} (\S+)$', text, re.M)
            assert len(received) == 4  # one per owned partition
            assert sum(map(float, received)) == 50
        stop.set()
        tally = await running
        assert tally.read == 50


async def test_sigterm_finishes_in_flight_work_checkpoints_and_releases(tmp_path: Path, azurite: Azurite) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    container = f"term-{uuid.uuid4().hex[:12]}"
    cwd = tmp_path / "worker"
    async with local_hub("term") as hub:
        published = events(3000, seed=4)
        sending = asyncio.create_task(send(hub, published))
        env = worker_env(hub, azurite, container, rules)
        process = await start_worker(env, cwd)

        async def started() -> bool:
            return len(Actions.read(cwd / "actions.jsonl").lines) > 200

        await wait_for(started, 60, "the worker to act on some events")
        assert await stop_worker(process, signal.SIGTERM) == 0
        await sending
        namespace = f"127.0.0.1:{hub.port}"
        assert set((await owners(azurite, container, namespace, "term")).values()) <= {""}  # all released
        names = [entry.get("event") for entry in worker_log(cwd)]
        assert "worker.stopping" in names
        assert "worker.stopped" in names

        # The rest, after a restart: every event acted on exactly once, across both runs.
        process = await start_worker({**env, "WORKER_IDLE_EXIT": "1.5"}, cwd)
        assert await wait_worker(process) == 0
        acted = Actions.read(cwd / "actions.jsonl")
        assert set(acted.per_event) == ids_of(published)
        assert max(acted.per_event.values()) == 1


async def test_sigkill_at_random_points_loses_nothing(tmp_path: Path, azurite: Azurite) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    container = f"kill-{uuid.uuid4().hex[:12]}"
    cwd = tmp_path / "worker"
    rng = random.Random(5)
    async with local_hub("kill") as hub:
        published = events(4000, seed=5)
        sending = asyncio.create_task(send_stream(hub, published, per_second=400))
        # A killed worker keeps its partitions until its ownership expires: keep that short.
        env = worker_env(hub, azurite, container, rules, load_balancing_interval=0.5, ownership_expiry=2)
        namespace = f"127.0.0.1:{hub.port}"
        # After each kill: the action lines written so far, and the checkpoints.
        kills: list[tuple[int, dict[str, int]]] = []
        for _ in range(3):
            process = await start_worker(env, cwd)
            # The kill point, by what the worker has done, not by the clock: a random number of
            # further actions, and a checkpoint beyond the last one seen before a kill.
            before = len(Actions.read(cwd / "actions.jsonl").lines)
            further = rng.randint(150, 600)
            marks = kills[-1][1] if kills else {}

            async def far_enough(before: int = before, further: int = further, marks: dict[str, int] = marks) -> bool:
                if len(Actions.read(cwd / "actions.jsonl").lines) < before + further:
                    return False
                now = await checkpoints(azurite, container, namespace, "kill")
                return any(sequence > marks.get(partition, -1) for partition, sequence in now.items())

            await wait_for(far_enough, 120, f"{further} more actions and a new checkpoint")
            assert await stop_worker(process, signal.SIGKILL) == -signal.SIGKILL
            written = len(Actions.read(cwd / "actions.jsonl").lines)
            kills.append((written, await checkpoints(azurite, container, namespace, "kill")))
        await sending
        process = await start_worker({**env, "WORKER_IDLE_EXIT": "1.5"}, cwd)
        assert await wait_worker(process) == 0

    acted = Actions.read(cwd / "actions.jsonl")
    assert set(acted.per_event) == ids_of(published)  # no event without its action
    # A repeated action carries the same idempotency key as the first...
    keys = acted.keys_by_event()
    assert all(len(found) == 1 for found in keys.values())
    # ...and only events in flight at a kill were repeated: none at or below the checkpoint written
    # before the kill is acted on again after it.
    checked = 0
    for written, marks in kills:
        finished = {
            str(line["event_id"])
            for line in acted.lines[:written]
            if int(str(line["sequence_number"])) <= marks.get(str(line["partition_id"]), -1)
        }
        checked += len(finished)
        again = finished & {str(line["event_id"]) for line in acted.lines[written:]}
        assert not again, f"{len(again)} finished events were acted on again after a kill"
    assert checked, "no checkpoint was written before any kill: the kills came too early to show anything"


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


async def test_a_dead_pipeline_process_stops_the_worker_and_a_restart_loses_nothing(
    tmp_path: Path, azurite: Azurite
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    cwd = tmp_path / "worker"
    async with local_hub("engine") as hub:
        published = events(1500, seed=12)
        sending = asyncio.create_task(send_stream(hub, published, per_second=500))
        env = worker_env(hub, azurite, f"engine-{uuid.uuid4().hex[:12]}", rules, ownership_expiry=2)
        process = await start_worker(env, cwd)

        async def acting() -> bool:
            return (cwd / "actions.jsonl").exists() and bool(children_of(process.pid))

        await wait_for(acting, 60, "the worker to act")
        [child] = children_of(process.pid)
        os.kill(child, signal.SIGKILL)
        assert await wait_worker(process, 60) == 1  # failed, for the container to be restarted
        exited = [e for e in worker_log(cwd) if e.get("event") == "childprocess.exited"]
        assert exited
        assert exited[0]["level"] == "error"
        await sending
        process = await start_worker({**env, "WORKER_IDLE_EXIT": "1.5"}, cwd)
        assert await wait_worker(process) == 0
    assert set(Actions.read(cwd / "actions.jsonl").per_event) == ids_of(published)


async def test_a_consumer_group_shares_partitions_and_takes_over_from_a_dead_worker(
    tmp_path: Path, azurite: Azurite
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    container = f"group-{uuid.uuid4().hex[:12]}"
    interval, expiry = 1.0, 4.0
    async with local_hub("group", partitions=8) as hub:
        namespace = f"127.0.0.1:{hub.port}"
        env = worker_env(
            hub,
            azurite,
            container,
            rules,
            load_balancing_interval=interval,
            ownership_expiry=expiry,
            load_balancing_strategy="balanced",
        )
        workers = [await start_worker(env, tmp_path / f"w{i}") for i in range(3)]
        published = events(3000, seed=6)
        sending = asyncio.create_task(send(hub, published))

        async def spread() -> bool:
            owned = await owners(azurite, container, namespace, "group")
            counts = [list(owned.values()).count(owner) for owner in set(owned.values())]
            return len(owned) == 8 and len(counts) == 3 and min(counts) >= 2

        await wait_for(spread, 60, "the 8 partitions to be spread over the 3 workers")

        async def mid_stream() -> bool:  # every worker has acted on some events
            return all(len(Actions.read(tmp_path / f"w{i}" / "actions.jsonl").lines) >= 100 for i in range(3))

        await wait_for(mid_stream, 60, "every worker to act on 100 events")
        before = await owners(azurite, container, namespace, "group")
        victim = workers.pop(0)
        assert await stop_worker(victim, signal.SIGKILL) == -signal.SIGKILL
        survivors_before = set(before.values())

        async def taken_over() -> bool:
            owned = await owners(azurite, container, namespace, "group")
            return len(set(owned.values())) == 2 and len(owned) == 8

        # Within the ownership expiry plus one balancing interval (and the balancing jitter, the
        # claims' own round trips and the polling: a margin of a few intervals).
        await wait_for(taken_over, expiry + interval + 5 * interval, "the dead worker's partitions to move")
        after = await owners(azurite, container, namespace, "group")
        assert set(after.values()) < survivors_before
        await sending

        async def all_acted() -> bool:
            acted = Actions.read(*(tmp_path / f"w{i}" / "actions.jsonl" for i in range(3)))
            return set(acted.per_event) == ids_of(published)

        await wait_for(all_acted, 60, "every event to be acted on")
        for process in workers:
            assert await stop_worker(process, signal.SIGTERM) == 0
    acted = Actions.read(*(tmp_path / f"w{i}" / "actions.jsonl" for i in range(3)))
    keys = acted.keys_by_event()
    assert all(len(k) == 1 for k in keys.values())


async def test_sighup_reloads_the_rules_and_keeps_the_old_table_when_the_new_one_is_invalid(
    tmp_path: Path, azurite: Azurite
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        RULES.replace("filter: {}", "filter: {includedEventTypes: [Microsoft.MachineLearningServices.ModelRegistered]}")
    )
    cwd = tmp_path / "worker"
    async with local_hub("reload") as hub:
        env = worker_env(hub, azurite, f"reload-{uuid.uuid4().hex[:12]}", rules, rules_watch=0)
        process = await start_worker(env, cwd)

        async def logged(name: str) -> bool:
            return any(entry.get("event") == name for entry in worker_log(cwd))

        await wait_for(lambda: logged("receiver.started"), 60, "the worker to start")
        rules.write_text("rules:\n  - name: broken\n    filter: {includedEventTypes: 7}\n")
        assert process.returncode is None
        process.send_signal(signal.SIGHUP)
        await wait_for(lambda: logged("rules.rejected"), 30, "the invalid table to be rejected")
        rules.write_text(RULES)
        process.send_signal(signal.SIGHUP)
        await wait_for(lambda: logged("rules.reloaded"), 30, "the new table to be loaded")
        published = events(200, seed=7, duplicates=0)
        await send(hub, published)

        async def all_acted() -> bool:
            return set(Actions.read(cwd / "actions.jsonl").per_event) == ids_of(published)

        await wait_for(all_acted, 60, "every event to be acted on under the new table")
        assert await stop_worker(process) == 0


async def test_a_partition_that_stops_delivering_with_lag_is_recycled(workdir: Path, azurite: Azurite) -> None:
    async with local_hub("stall", partitions=2) as hub:
        config = settings(
            hub.connection_string(),
            azurite,
            f"stall-{uuid.uuid4().hex[:12]}",
            workdir / "rules.yaml",
            idle_exit=0,
            stall_timeout=2.0,
        )
        published = events(60, seed=8, duplicates=0)
        stop = asyncio.Event()
        with structlog.testing.capture_logs() as logs:
            running = asyncio.create_task(run_worker(config, stop))

            def claims(partition: str) -> int:
                return sum(1 for e in logs if e["event"] == "partition.claimed" and e["partition_id"] == partition)

            async def claimed_both() -> bool:
                return claims("0") >= 1 and claims("1") >= 1

            await wait_for(claimed_both, 30, "both partitions to be claimed")
            hub.stick("stall", "0")  # partition 0's link stays open but delivers nothing
            await send(hub, published)

            async def recycled() -> bool:
                return claims("0") >= 2

            await wait_for(recycled, 30, "partition 0's stalled receiver to be recycled")
            stalled = [e for e in logs if e["event"] == "partition.stalled"]
            assert stalled
            assert stalled[0]["partition_id"] == "0"
            assert stalled[0]["lag"] > 0
            hub.stick("stall", "0", stuck=False)

            async def all_acted() -> bool:
                return set(Actions.read(workdir / "actions.jsonl").per_event) == ids_of(published)

            await wait_for(all_acted, 30, "every event to be acted on after the recycle")
            stop.set()
            tally = await running
    assert tally.check() == []
    assert max(Actions.read(workdir / "actions.jsonl").per_event.values()) == 1


async def test_a_changed_rules_file_is_reloaded_without_a_signal(workdir: Path, azurite: Azurite) -> None:
    """The rules are a ConfigMap volume, updated as the kubelet updates one: the paths stay, the
    directory behind them is swapped; the last update replaces the key with another."""
    volume = ConfigMapVolume(workdir / "rules", {"rules.yaml": RULES})
    async with local_hub("watch") as hub:
        # The pipelines in this process, where the reload's logs are captured (the SIGHUP test above
        # reloads those of a pipeline process).
        config = settings(
            hub.connection_string(),
            azurite,
            f"watch-{uuid.uuid4().hex[:12]}",
            volume.root,
            idle_exit=0,
            rules_watch=0.2,
            pipeline_process=False,
        )
        stop = asyncio.Event()
        with structlog.testing.capture_logs() as logs:
            running = asyncio.create_task(run_worker(config, stop))

            def logged(name: str) -> Callable[[], Awaitable[bool]]:
                async def check() -> bool:
                    return any(e["event"] == name for e in logs)

                return check

            await wait_for(logged("receiver.started"), 30, "the worker to start")
            volume.update({"rules.yaml": "rules:\n  - name: broken\n    filter: {includedEventTypes: 7}\n"})
            await wait_for(logged("rules.rejected"), 30, "the invalid table to be rejected")
            volume.update({"renamed.yaml": RULES.replace("every-event", "renamed")})
            await wait_for(logged("rules.reloaded"), 30, "the new table to be loaded")
            assert [e["rules"] for e in logs if e["event"] == "rules.reloaded"] == [1]
            rejected = next(e["problems"] for e in logs if e["event"] == "rules.rejected")
            assert rejected[0].startswith(f"{volume.root / 'rules.yaml'}:")
            published = events(40, seed=10, duplicates=0)
            await send(hub, published)

            async def all_acted() -> bool:
                lines = Actions.read(workdir / "actions.jsonl").lines
                return {str(line["event_id"]) for line in lines if line["rule"] == "renamed"} == ids_of(published)

            await wait_for(all_acted, 30, "the reloaded rule to act on every event")
            stop.set()
            await running


async def test_events_held_when_a_partition_moves_are_handed_over_and_counted(tmp_path: Path, azurite: Azurite) -> None:
    """A worker that loses partitions to a new one counts what it held on them as handed over: its
    counts add up in /metrics while it runs, and in its report when it stops; so do the new one's."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    container = f"handover-{uuid.uuid4().hex[:12]}"
    ports = [free_port(), free_port()]
    async with local_hub("handover") as hub:
        published = events(200, seed=21, duplicates=0)
        await send(hub, published)

        def env(port: int) -> dict[str, str]:
            # An hour's reorder window: every event read stays held, until it is handed over.
            return worker_env(
                hub, azurite, container, rules, reorder_window=3600, http_port=port, http_host="127.0.0.1"
            )

        first = await start_worker(env(ports[0]), tmp_path / "w0")

        async def first_read_everything() -> bool:
            metrics = await metrics_of(ports[0])
            return (
                metrics.get("azml_worker_events_read_total") == len(published)
                and metrics.get("azml_worker_partitions_owned") == 4
            )

        await wait_for(first_read_everything, 60, "the first worker to read every event, on all 4 partitions")
        second = await start_worker(env(ports[1]), tmp_path / "w1")

        async def handed_over() -> bool:
            metrics = await metrics_of(ports[0])
            return metrics.get("azml_worker_partitions_owned") == 2 and bool(
                metrics.get("azml_worker_events_total:handed_over")
            )

        await wait_for(handed_over, 60, "the second worker to take 2 partitions from the first")
        metrics = await metrics_of(ports[0])
        assert adds_up(metrics), metrics
        assert 0 < metrics["azml_worker_events_total:handed_over"] < len(published)
        assert (
            metrics["azml_worker_reorder_buffered"] == len(published) - metrics["azml_worker_events_total:handed_over"]
        )

        async def second_read_its_share() -> bool:
            metrics = await metrics_of(ports[1])
            return metrics.get("azml_worker_partitions_owned") == 2 and bool(
                metrics.get("azml_worker_events_read_total")
            )

        await wait_for(second_read_its_share, 60, "the second worker to read its 2 partitions")
        assert adds_up(await metrics_of(ports[1]))
        for process in (second, first):
            assert await stop_worker(process, signal.SIGTERM) == 0
    for cwd in (tmp_path / "w0", tmp_path / "w1"):
        [stopped] = [line for line in worker_log(cwd) if line.get("event") == "worker.stopped"]
        counts = {name: value for name, value in stopped.items() if isinstance(value, int)}
        assert sum(counts.get(fate.value, 0) for fate in Fate) == counts["events"] > 0, stopped
        assert counts["handed_over"] == counts["events"]  # held for an hour: nothing else happened to them
    assert not Actions.read(tmp_path / "w0" / "actions.jsonl", tmp_path / "w1" / "actions.jsonl").lines
