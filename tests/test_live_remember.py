"""Rules that remember, in the live worker on the test bed: the local hub driven by the real SDK,
checkpoints (and the pipeline state they carry) in Azurite, workers as processes that are killed.

An expectation fires when its deadline passes while the worker runs, never before it (how soon after
it: bench/bench_worker.py); one fulfilled in time never does. What is pending is saved with the checkpoint, so that an
expectation or a group outlives a SIGKILL, a restart and a takeover by another worker, and still acts
exactly once (the same idempotency key as it would have had).
"""

from __future__ import annotations

import signal
import uuid
from asyncio.subprocess import Process
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.eventhub.aio import EventHubProducerClient
from azure.storage.blob.aio import ContainerClient

from tests.hubclient import send as send_bodies
from tests.live import (
    Actions,
    held_partitions,
    local_hub,
    owners,
    start_worker,
    stop_worker,
    wait_for,
    worker_env,
    worker_log,
)
from tests.servers import Azurite
from worker.actions import idempotency_key
from worker.core.state import SavedState
from worker.localhub.hub import LocalHub
from worker.sending.mlevents import DEFAULT_TOPIC, RUN_COMPLETED, RUN_STATUS_CHANGED

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120), pytest.mark.usefixtures("sdk_garbage")]

#: The live worker's reorder window in these tests (seconds): its clock for expectations runs this
#: far behind the wall clock.
WINDOW = 0.5
#: A killed worker's claims lapse this fast, so that a restart or another worker takes over soon.
FAST_TAKEOVER = {"load_balancing_interval": 0.5, "ownership_expiry": 2}

STATUS = f"""\
      includedEventTypes: [{RUN_STATUS_CHANGED}]
      advancedFilters:
        - {{operatorType: StringIn, key: data.runStatus, values: [STATUS]}}
        - {{operatorType: StringIn, key: data.experimentName, values: [EXPERIMENT]}}
"""
#: A run of EXPERIMENT that reports Running must end within WITHIN.
EXPECT = f"""\
  - name: NAME
    filter:
{STATUS.replace("STATUS", "Running")}\
    expect:
      within: WITHIN
      filter:
        any:
          - includedEventTypes: [{RUN_COMPLETED}]
          - includedEventTypes: [{RUN_STATUS_CHANGED}]
            advancedFilters: [{{operatorType: StringIn, key: data.runStatus, values: [Completed, Failed, Canceled]}}]
    actions:
      - {{type: log, message: expired}}
      - {{type: file, path: actions.jsonl}}
"""
#: The failed runs of EXPERIMENT, one notification per group.
GROUP = f"""\
  - name: NAME
    filter:
{STATUS.replace("STATUS", "Failed")}\
    group: {{by: "{{{{ data.experimentName }}}}", wait: WAIT, interval: INTERVAL}}
    actions:
      - {{type: file, path: actions.jsonl}}
"""


def expect_rule(name: str, experiment: str, within: str) -> str:
    return EXPECT.replace("NAME", name).replace("EXPERIMENT", experiment).replace("WITHIN", within)


def group_rule(name: str, experiment: str, wait: str, interval: str) -> str:
    return (
        GROUP.replace("NAME", name)
        .replace("EXPERIMENT", experiment)
        .replace("WAIT", wait)
        .replace("INTERVAL", interval)
    )


def rules_file(tmp_path: Path, *rules: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n" + "".join(rules))
    return path


# --- events ---------------------------------------------------------------------------------------


class Run(NamedTuple):
    experiment: str
    run_id: str

    @property
    def subject(self) -> str:
        return f"experiments/{uuid.uuid5(uuid.NAMESPACE_URL, self.experiment)}/runs/{self.run_id}"

    def event(self, event_type: str, status: str | None = None) -> dict[str, Any]:
        """One event of this run, as Event Grid delivers it, stamped now."""
        data: dict[str, Any] = {"experimentName": self.experiment, "runId": self.run_id, "runType": "azureml.scriptrun"}
        if status is not None:
            data["runStatus"] = status
        return {
            "id": str(uuid.uuid4()),
            "topic": DEFAULT_TOPIC,
            "subject": self.subject,
            "eventType": event_type,
            "eventTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "data": data,
            "dataVersion": "2",
            "metadataVersion": "1",
        }


def new_run(experiment: str) -> Run:
    return Run(experiment, f"{experiment}_{uuid.uuid4().hex[:12]}")


class Sent(NamedTuple):
    """An event as the hub took it: its sequence number, and its enqueued time as the hub stamped it."""

    sequence_number: int
    enqueued: float


async def send_event(hub: LocalHub, event: dict[str, Any], partition: str = "0") -> Sent:
    """Send one event alone (an Event Grid body: a list of one) with the real producer, and read back
    from the hub, through the same SDK, where and when it was enqueued."""
    connection = hub.connection_string()
    await send_bodies(connection, [orjson.dumps([event]).decode()], partition_id=partition)
    async with EventHubProducerClient.from_connection_string(connection) as producer:
        properties = await producer.get_partition_properties(partition)
    enqueued: datetime = properties["last_enqueued_time_utc"]
    return Sent(int(properties["last_enqueued_sequence_number"]), enqueued.timestamp())


# --- what the workers left -----------------------------------------------------------------------


class Saved(NamedTuple):
    """A partition's checkpoint blob: where it stands, and the pipeline state it holds."""

    sequence_number: int
    state: SavedState


async def saved(azurite: Azurite, container: str, hub: LocalHub, partition: str = "0") -> Saved | None:
    """The checkpoint blob of ``partition`` in the layout the SDK reads (its metadata) with the pipeline
    state as its content; None before the first write."""
    name = hub.hubs[0].name
    blob = f"127.0.0.1:{hub.port}/{name}/$default/checkpoint/{partition}".lower()
    async with ContainerClient.from_connection_string(azurite.connection_string, container) as client:
        try:
            download = await client.get_blob_client(blob).download_blob()
        except ResourceNotFoundError:
            return None
        data = await download.readall()
    sequence = int(download.properties.metadata["sequencenumber"])
    return Saved(sequence, SavedState.from_json(data, blob) if data else SavedState())


def pending_of(found: Saved | None) -> list[tuple[str, str, str, int]]:
    """What the saved state says is pending: (kind, rule, key, events held) each."""
    if found is None:
        return []
    return [(p.kind, p.rule, p.key, len(p.events)) for p in found.state.pending]


async def wait_for_state(
    azurite: Azurite,
    container: str,
    hub: LocalHub,
    check: Callable[[Saved | None], bool],
    within: float,
    what: str,
    partition: str = "0",
) -> Saved | None:
    """Wait until the saved state of ``partition`` passes ``check``; fail showing the last one read."""
    last: list[Saved | None] = [None]

    async def holds() -> bool:
        last[0] = await saved(azurite, container, hub, partition)
        return check(last[0])

    try:
        await wait_for(holds, within, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the checkpoint last read: {last[0]}") from None
    return last[0]


async def holding(cwd: Path, partition: str = "0") -> None:
    """Until the worker in ``cwd`` holds ``partition``: a worker's clock for what it remembers is the
    events' times, so the events go out once it reads, not while a busy machine is still starting it."""

    async def held() -> bool:
        return partition in held_partitions(cwd)

    await wait_for(held, 60, f"the worker to hold partition {partition}")


def settled(found: Saved | None) -> bool:
    """Whether the saved state holds nothing that will act: no expectation pending, no group with
    events, and no expiry or notification fired and not finished (a group that has notified and is
    waiting out its interval holds no events: it ends unless one joins)."""
    return found is not None and not any(p.kind != "group" or p.total for p in found.state.pending)


def lines_of(*cwds: Path) -> list[dict[str, object]]:
    return Actions.read(*(cwd / "actions.jsonl" for cwd in cwds)).lines


def has_line(cwd: Path, event_id: str) -> Callable[[], Awaitable[bool]]:
    async def written() -> bool:
        return any(line["event_id"] == event_id for line in lines_of(cwd))

    return written


@pytest.fixture
async def processes() -> AsyncIterator[list[Process]]:
    """Worker processes a test starts: any still running at its end (a failed test) are killed."""
    started: list[Process] = []
    yield started
    for process in started:
        if process.returncode is None:
            await stop_worker(process, signal.SIGKILL)


# --- the tests -----------------------------------------------------------------------------------


async def test_an_expectation_expires_after_its_deadline_and_one_fulfilled_in_time_never_fires(
    tmp_path: Path, azurite: Azurite, processes: list[Process]
) -> None:
    within = 3.0
    rules = rules_file(
        tmp_path, expect_rule("run-stuck", "quick", f"{within:g}s"), expect_rule("run-slow", "patient", "10m")
    )
    container = f"expire-{uuid.uuid4().hex[:12]}"
    cwd = tmp_path / "worker"
    async with local_hub("expire", partitions=1) as hub:
        processes.append(await start_worker(worker_env(hub, azurite, container, rules, reorder_window=WINDOW), cwd))
        # An expectation that is fulfilled in time: seen pending, then fulfilled, then gone.
        patient = new_run("patient")
        started = patient.event(RUN_STATUS_CHANGED, "Running")
        await send_event(hub, started)
        await wait_for_state(
            azurite,
            container,
            hub,
            lambda s: pending_of(s) == [("expect", "run-slow", patient.subject, 1)],
            60,
            "the patient run's expectation to be saved as pending",
        )
        completed = await send_event(hub, patient.event(RUN_COMPLETED))
        await wait_for_state(
            azurite,
            container,
            hub,
            lambda s: s is not None and s.sequence_number >= completed.sequence_number and not s.state.pending,
            30,
            "the completion to be checkpointed, with nothing pending",
        )

        # An expectation that is not: it expires while the worker runs.
        quick = new_run("quick")
        stuck = quick.event(RUN_STATUS_CHANGED, "Running")
        sent = await send_event(hub, stuck)
        await wait_for(has_line(cwd, stuck["id"]), 30, "the stuck run's expectation to expire")
        await wait_for_state(
            azurite,
            container,
            hub,
            settled,
            30,
            "the expiry to be finished and saved",
        )
        assert await stop_worker(processes[-1], signal.SIGTERM) == 0

    [line] = lines_of(cwd)
    assert line["event_id"] == stuck["id"]
    assert line["rule"] == "run-stuck"
    assert line["expired"] is True
    assert line["expectation_key"] == quick.subject
    assert line["idempotency_key"] == idempotency_key(f"expiry\x1f{quick.subject}\x1f{stuck['id']}", "run-stuck", 1)
    [logged] = [entry for entry in worker_log(cwd) if entry.get("event") == "action.log"]
    assert logged["event_id"] == stuck["id"]
    fired = datetime.fromisoformat(str(logged["timestamp"])).timestamp()
    # Never before its deadline on the worker's clock (the wall clock less the window). How soon after
    # it is a figure, not a test: bench/bench_worker.py prints it.
    assert fired >= sent.enqueued + within + WINDOW


async def test_an_expectation_pending_across_a_sigkill_and_a_restart_fires_once(
    tmp_path: Path, azurite: Azurite, processes: list[Process]
) -> None:
    rules = rules_file(tmp_path, expect_rule("run-stuck", "restarted", "15s"))
    container = f"restart-{uuid.uuid4().hex[:12]}"
    cwd = tmp_path / "worker"
    async with local_hub("restart", partitions=1) as hub:
        env = worker_env(hub, azurite, container, rules, reorder_window=WINDOW, **FAST_TAKEOVER)
        processes.append(await start_worker(env, cwd))
        await holding(cwd)
        run = new_run("restarted")
        stuck = run.event(RUN_STATUS_CHANGED, "Running")
        sent = await send_event(hub, stuck)
        await wait_for_state(
            azurite,
            container,
            hub,
            lambda s: (
                s is not None
                and s.sequence_number >= sent.sequence_number
                and pending_of(s) == [("expect", "run-stuck", run.subject, 1)]
            ),
            30,
            "the expectation to be saved as pending",
        )
        assert await stop_worker(processes[-1], signal.SIGKILL) == -signal.SIGKILL
        assert not lines_of(cwd)  # killed before the deadline

        processes.append(await start_worker(env, cwd))
        await wait_for(has_line(cwd, stuck["id"]), 60, "the restarted worker to fire the expiry")
        await wait_for_state(
            azurite,
            container,
            hub,
            settled,
            30,
            "nothing pending and nothing fired in flight in the saved state",
        )
        assert await stop_worker(processes[-1], signal.SIGTERM) == 0

    [line] = lines_of(cwd)
    assert line["event_id"] == stuck["id"]
    assert line["expired"] is True
    assert line["expectation_key"] == run.subject
    assert line["idempotency_key"] == idempotency_key(f"expiry\x1f{run.subject}\x1f{stuck['id']}", "run-stuck", 1)


async def test_an_expectation_pending_across_a_takeover_fires_once_on_the_new_owner(
    tmp_path: Path, azurite: Azurite, processes: list[Process]
) -> None:
    rules = rules_file(tmp_path, expect_rule("run-stuck", "orphaned", "15s"))
    container = f"takeover-{uuid.uuid4().hex[:12]}"
    cwds = [tmp_path / "w0", tmp_path / "w1"]
    async with local_hub("takeover", partitions=2) as hub:
        namespace = f"127.0.0.1:{hub.port}"
        env = worker_env(
            hub, azurite, container, rules, reorder_window=WINDOW, load_balancing_strategy="balanced", **FAST_TAKEOVER
        )
        processes.extend([await start_worker(env, cwd) for cwd in cwds])

        async def shared() -> bool:
            owned = await owners(azurite, container, namespace, "takeover")
            held = [held_partitions(cwd) for cwd in cwds]
            return len(set(owned.values()) - {""}) == 2 and held[0] | held[1] == {"0", "1"} and not held[0] & held[1]

        await wait_for(shared, 60, "the two workers to hold one partition each")
        [owner] = [i for i, cwd in enumerate(cwds) if "0" in held_partitions(cwd)]
        victim, survivor = processes[owner], processes[1 - owner]

        run = new_run("orphaned")
        stuck = run.event(RUN_STATUS_CHANGED, "Running")
        sent = await send_event(hub, stuck, partition="0")
        await wait_for_state(
            azurite,
            container,
            hub,
            lambda s: (
                s is not None
                and s.sequence_number >= sent.sequence_number
                and pending_of(s) == [("expect", "run-stuck", run.subject, 1)]
            ),
            30,
            "the owner to save the expectation as pending",
        )
        assert await stop_worker(victim, signal.SIGKILL) == -signal.SIGKILL
        assert not lines_of(*cwds)  # killed before the deadline

        await wait_for(has_line(cwds[1 - owner], stuck["id"]), 60, "the new owner to fire the expiry")
        await wait_for_state(
            azurite,
            container,
            hub,
            settled,
            30,
            "nothing pending and nothing fired in flight in the saved state",
        )
        assert "0" in held_partitions(cwds[1 - owner])
        assert await stop_worker(survivor, signal.SIGTERM) == 0

    assert not lines_of(cwds[owner])
    [line] = lines_of(*cwds)
    assert line["event_id"] == stuck["id"]
    assert line["partition_id"] == "0"
    assert line["expectation_key"] == run.subject
    assert line["idempotency_key"] == idempotency_key(f"expiry\x1f{run.subject}\x1f{stuck['id']}", "run-stuck", 1)


async def test_a_group_pending_across_a_restart_notifies_once_with_all_its_events(
    tmp_path: Path, azurite: Azurite, processes: list[Process]
) -> None:
    experiment = "flaky-training"
    # The fourth event joins after a restart, which a busy machine may take 10 s to make: the group
    # waits long enough for it (the notification is what the test waits for, not the time).
    rules = rules_file(tmp_path, group_rule("failed-runs", experiment, "40s", "3s"))
    container = f"group-{uuid.uuid4().hex[:12]}"
    cwd = tmp_path / "worker"
    async with local_hub("group", partitions=1) as hub:
        env = worker_env(hub, azurite, container, rules, reorder_window=WINDOW, **FAST_TAKEOVER)
        processes.append(await start_worker(env, cwd))
        await holding(cwd)
        failures = [new_run(experiment).event(RUN_STATUS_CHANGED, "Failed") for _ in range(4)]
        for failure in failures[:3]:
            last = await send_event(hub, failure)
        await wait_for_state(
            azurite,
            container,
            hub,
            lambda s: (
                s is not None
                and s.sequence_number >= last.sequence_number
                and pending_of(s) == [("group", "failed-runs", experiment, 3)]
            ),
            30,
            "the group's first three events to be saved as pending",
        )
        assert await stop_worker(processes[-1], signal.SIGKILL) == -signal.SIGKILL
        assert not lines_of(cwd)  # killed before the group was due

        processes.append(await start_worker(env, cwd))
        await send_event(hub, failures[3])
        await wait_for(has_line(cwd, failures[0]["id"]), 60, "the group's notification")
        await wait_for_state(
            azurite,
            container,
            hub,
            settled,
            30,
            "the notification to be finished and saved, the group holding no events",
        )
        assert await stop_worker(processes[-1], signal.SIGTERM) == 0

    ids = [str(failure["id"]) for failure in failures]
    [line] = lines_of(cwd)
    assert line["group"] == experiment
    assert line["event_ids"] == ids
    assert line["count"] == 4
    assert line["event_id"] == ids[0]
    assert line["idempotency_key"] == idempotency_key(f"group\x1f{experiment}\x1f{ids[0]}", "failed-runs", 0)
