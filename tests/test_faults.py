"""Faults survived, on the test bed (the local hub, Azurite and worker processes), with their figures:
nothing lost, counts that add up, checkpoints that only move forward."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from azure.core.exceptions import AzureError

from tests.live import (
    RULES,
    Actions,
    checkpoints,
    events,
    held_partitions,
    holds_as_owned,
    ids_of,
    local_hub,
    metrics_of,
    owners,
    send_stream,
    start_worker,
    stop_worker,
    wait_for,
    worker_env,
    worker_log,
)
from tests.probe import message
from tests.servers import Azurite, free_port, start_azurite, stop
from tests.support import compile_ok
from tests.targets import HttpTarget, Received
from worker.actions import ActionSpec, action_types
from worker.actions.base import ActionFate
from worker.actions.breaker import BreakerSettings
from worker.actions.delivery.runner import ActionRunner, DeadLetterDirectory, RunnerSettings
from worker.checkpoints.store import DirectoryCheckpoints, DirectoryCheckpointStore
from worker.core.accounting import Fate
from worker.core.partition import PartitionCore
from worker.core.rules import Rule, RulesTable
from worker.live.handoff import Inbox
from worker.live.partition import LivePartition
from worker.settings import CheckpointSettings, CoreSettings, DriverSettings, Scope

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300), pytest.mark.usefixtures("sdk_garbage")]

#: How long the checkpoint store is away.
OUTAGE = 30.0


class ActionTimes:
    """When each event's action line first appeared, read from the workers' files as they write them."""

    def __init__(self, *paths: Path) -> None:
        self.paths = paths
        self.first_seen: dict[str, float] = {}
        self._read: dict[Path, int] = {}

    def poll(self) -> None:
        now = time.monotonic()
        for path in self.paths:
            if not path.exists():
                continue
            data = path.read_bytes()
            done = data.rfind(b"\n") + 1  # whole lines only
            for line in data[self._read.get(path, 0) : done].splitlines():
                self.first_seen.setdefault(str(orjson.loads(line)["event_id"]), now)
            self._read[path] = done

    async def watch(self) -> None:
        while True:
            self.poll()
            await asyncio.sleep(0.1)


class CheckpointWatch:
    """Every checkpoint sequence number the store held, as read about five times a second (while it answers)."""

    def __init__(self, azurite: Azurite, container: str, namespace: str, hub: str) -> None:
        self._args = (azurite, container, namespace, hub)
        self.seen: dict[str, list[int]] = {}

    async def watch(self) -> None:
        while True:
            try:
                for partition, sequence in (await checkpoints(*self._args)).items():
                    history = self.seen.setdefault(partition, [])
                    if not history or history[-1] != sequence:
                        history.append(sequence)
            except (AzureError, OSError):
                pass  # the store is away
            await asyncio.sleep(0.2)


async def test_the_checkpoint_store_away_for_30_s_loses_nothing_and_never_moves_a_checkpoint_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two workers under a steady stream; Azurite stopped for 30 s, then started again on its data."""
    azurite = start_azurite(tmp_path / "azurite")
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    container = f"outage-{uuid.uuid4().hex[:12]}"
    ports = [free_port(), free_port()]
    cwds = [tmp_path / "w0", tmp_path / "w1"]
    try:
        async with local_hub("outage") as hub:
            namespace = f"127.0.0.1:{hub.port}"
            watch = CheckpointWatch(azurite, container, namespace, "outage")
            times = ActionTimes(*(cwd / "actions.jsonl" for cwd in cwds))
            settings = {"checkpoint_timeout": 2, "ownership_expiry": 6, "http_host": "127.0.0.1"}
            workers = [
                await start_worker(worker_env(hub, azurite, container, rules, http_port=port, **settings), cwd)
                for port, cwd in zip(ports, cwds, strict=True)
            ]

            async def shared() -> bool:
                # By the store and by the workers themselves: a worker that lost a partition in the first
                # balancing reads it until the new owner's receiver takes over, and events sent before
                # it lets go would be acted on by both.
                owned = await owners(azurite, container, namespace, "outage")
                balanced = sorted(Counter(owned.values()).values()) == [2, 2]  # no stealing to come
                return balanced and holds_as_owned(owned, [held_partitions(cwd) for cwd in cwds])

            await wait_for(shared, 60, "the two workers to share the 4 partitions")
            published = events(1500, seed=31, duplicates=0, shuffle=0)
            sent: dict[str, float] = {}
            sending = asyncio.create_task(send_stream(hub, published, per_second=20, chunk=10, sent=sent))
            watching = [asyncio.create_task(watch.watch()), asyncio.create_task(times.watch())]

            async def checkpointed() -> bool:
                return len(watch.seen) == 4 and all(history[-1] > 10 for history in watch.seen.values())

            await wait_for(checkpointed, 60, "every partition to have a checkpoint past 10")
            times.poll()
            done_before = set(times.first_seen)
            # What the store says was finished when it went away (its last checkpoint per partition, as
            # last read: a later write only covers more).
            covered = {partition: history[-1] for partition, history in watch.seen.items()}
            stop(azurite)
            outage_started = time.monotonic()
            await asyncio.sleep(OUTAGE)  # the scenario: the store is away this long
            outage_ended = time.monotonic()
            failures = 0.0
            for port in ports:
                failures += (await metrics_of(port)).get("azml_worker_checkpoint_failures_total", 0.0)
            azurite = start_azurite(tmp_path / "azurite", port=azurite.port)
            await sending

            async def all_acted() -> bool:
                return set(times.first_seen) >= ids_of(published)

            await wait_for(all_acted, 120, "every published event to be acted on")
            for process in workers:
                assert await stop_worker(process, signal.SIGTERM) == 0
            for task in watching:
                task.cancel()
    finally:
        stop(azurite)

    acted = Actions.read(*(cwd / "actions.jsonl" for cwd in cwds))
    per_event = acted.per_event
    during = {event_id for event_id, at in sent.items() if outage_started <= at < outage_ended}
    delays = [times.first_seen[event_id] - sent[event_id] for event_id in during]
    repeated = {event_id for event_id, n in per_event.items() if n > 1}
    with capsys.disabled():
        print(
            f"\nstorage outage of {OUTAGE:.0f} s: {len(during)} events published during it, "
            f"{sum(1 for e in during if times.first_seen[e] < outage_ended)} acted on during it; "
            f"publish-to-action delay max {max(delays):.1f} s; checkpoint failures counted {failures:.0f}; "
            f"events acted on more than once {len(repeated)} (of them finished before the outage: "
            f"{len(repeated & done_before)})"
        )
    assert set(per_event) == ids_of(published)  # nothing lost
    # Nothing the checkpoints held finished before the outage was done again. (Events finished since the
    # last checkpoint write may be: when claims expire during the outage and a partition changes hands
    # as the store comes back, its new owner starts from that checkpoint.)
    redone = {
        str(line["event_id"])
        for line in acted.lines
        if str(line["event_id"]) in repeated and int(str(line["sequence_number"])) <= covered[str(line["partition_id"])]
    }
    assert not redone
    assert failures > 0  # the failed writes were counted
    assert sum(1 for e in during if times.first_seen[e] < outage_ended) > len(during) / 2  # work went on
    assert max(delays) < OUTAGE / 2  # bounded by the action's time, not by the outage
    for partition, history in watch.seen.items():
        assert history == sorted(history), f"partition {partition}'s checkpoint moved back: {history}"
    for cwd in cwds:
        [stopped] = [line for line in worker_log(cwd) if line.get("event") == "worker.stopped"]
        counts = Counter({name: value for name, value in stopped.items() if isinstance(value, int)})
        assert sum(counts[fate.value] for fate in Fate) == counts["events"], stopped


async def test_the_hub_dropping_every_connection_and_restarting_mid_stream_loses_nothing(
    tmp_path: Path, azurite: Azurite, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every connection cut at once (a network failure), then the hub stopped and started again on its
    port and data: the worker reconnects and goes on from where it was."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    cwd = tmp_path / "worker"
    async with local_hub("drops") as hub:
        worker = await start_worker(worker_env(hub, azurite, f"drops-{uuid.uuid4().hex[:12]}", rules), cwd)
        published = events(800, seed=41, duplicates=0, shuffle=0)
        sending = asyncio.create_task(send_stream(hub, published, per_second=40, chunk=10))

        def acted_on(count: int) -> Callable[[], Awaitable[bool]]:
            async def enough() -> bool:
                return len(Actions.read(cwd / "actions.jsonl").per_event) >= count

            return enough

        await wait_for(acted_on(150), 60, "150 events to be acted on")
        hub.drop_connections()
        await wait_for(acted_on(400), 60, "400 events to be acted on, after the connections dropped")
        await hub.stop()
        await asyncio.sleep(1.0)  # the scenario: the hub is away this long
        await hub.start()  # on the same port, with the same partitions and events
        await sending
        await wait_for(acted_on(len(published)), 90, "every published event to be acted on")
        assert await stop_worker(worker, signal.SIGTERM) == 0
    per_event = Actions.read(cwd / "actions.jsonl").per_event
    repeated = sum(n - 1 for n in per_event.values())
    with capsys.disabled():
        print(f"\nhub faults: {len(per_event)} events acted on, {repeated} actions repeated")
    assert set(per_event) == ids_of(published)
    [stopped] = [line for line in worker_log(cwd) if line.get("event") == "worker.stopped"]
    counts = Counter({name: value for name, value in stopped.items() if isinstance(value, int)})
    assert sum(counts[fate.value] for fate in Fate) == counts["events"], stopped


class Attempts:
    """A runner's observer: every attempt's result, in order."""

    def __init__(self) -> None:
        self.results: list[str] = []

    def observe(self, action_type: str, seconds: float | None, result: str) -> None:
        self.results.append(result)

    def dead_letter_failed(self, action_type: str) -> None:
        self.results.append("dead_letter_failed")

    def attempting(self, action_type: str, started: float) -> None:
        return None

    def attempted(self, action_type: str, started: float) -> None:
        return None


async def test_a_target_slower_than_the_action_timeout_for_a_while_then_back(
    tmp_path: Path, http_target: HttpTarget
) -> None:
    """Attempts time out and are retried, the target's circuit opens and spares it, the checkpoint waits;
    once the target answers in time again, every action is done and the checkpoint passes them all."""
    slow = asyncio.Event()
    slow.set()

    async def respond(received: Received) -> web.StreamResponse | None:
        if slow.is_set():
            await asyncio.sleep(2)  # ten times the action's timeout
        return web.json_response({"ok": True})

    http_target.respond = respond
    hook = action_types()["webhook"].params.model_validate(
        {
            "url": f"{http_target.url}/slow",
            "timeout": 0.2,
            "retry": {"attempts": 100, "first_delay": 0.05, "max_delay": 0.2},
        }
    )
    table = RulesTable.build([Rule("hook", compile_ok({}), (ActionSpec("webhook", 0, hook),))])
    attempts = Attempts()
    runner = ActionRunner(
        DeadLetterDirectory(tmp_path / "dead"),
        settings=RunnerSettings(breaker=BreakerSettings(failures=3, reset_after=0.5)),
        observe=attempts,
    )
    core = PartitionCore("0", table, CoreSettings(window=0))
    scope = Scope("ns.example", "hub", "$default")
    checkpoint = DirectoryCheckpoints(tmp_path, scope).checkpoint("0")
    settings = CheckpointSettings(None, None, "unused", tmp_path, 0.1, 1)
    live = LivePartition(core, runner, DriverSettings(concurrency=4), checkpoint, settings, Inbox("0", 100))
    live.start()
    live.offer([message(n, f"runs/{n}", n) for n in range(6)])

    async def spared() -> bool:
        return attempts.results.count("transient") >= 6 and "circuit_open" in attempts.results

    await wait_for(spared, 30, "attempts to time out and the circuit to open")
    assert live.core.checkpoint is None  # held back: no action has finished
    slow.clear()

    async def caught_up() -> bool:
        position = live.core.checkpoint
        return position is not None and position.sequence_number == 5

    await wait_for(caught_up, 60, "every action to be done once the target answers in time")
    await live.close(5.0, write=True)
    await runner.aclose()
    assert core.counts().actions == {("hook", "webhook", ActionFate.DONE): 6}
    assert not (tmp_path / "dead").exists()
    assert attempts.results[-1] == "ok"
    assert {"transient", "circuit_open", "ok"} <= set(attempts.results)
    assert [
        c["sequence_number"]
        for c in await DirectoryCheckpointStore(tmp_path).list_checkpoints("ns.example", "hub", "$default")
    ] == [5]
