"""The live worker's test bed: a local hub per test, Azurite, workers in-process or as subprocesses."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from azure.core.exceptions import ResourceNotFoundError
from azure.eventhub import EventData
from azure.eventhub.aio import EventHubProducerClient
from azure.eventhub.extensions.checkpointstoreblobaio import BlobCheckpointStore
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import ROOT, Azurite
from worker.localhub.hub import LocalHub
from worker.localhub.store import HubSpec
from worker.sending import mlevents
from worker.sending.placement import partition_for_key
from worker.sending.publish import PublishReport, plan, publish

#: One rule acting on every event, appending a line per action to ``actions.jsonl`` in the worker's
#: working directory: what the tests read back.
RULES = """
rules:
  - name: every-event
    filter: {}
    actions:
      - type: file
        path: actions.jsonl
"""


@asynccontextmanager
async def local_hub(name: str, partitions: int = 4) -> AsyncIterator[LocalHub]:
    """A hub of the test's own, in this process, on a free port."""
    async with LocalHub([HubSpec(name, partitions, ("$Default",))]) as hub:
        yield hub


def events(count: int, *, seed: int, shuffle: int = 20, duplicates: float = 0.1) -> list[mlevents.Delivery]:
    """Realistic ML events as Event Grid delivers them: shuffled, some twice."""
    return list(
        mlevents.deliveries(
            mlevents.generate(count, mlevents.Options(seed=seed)), shuffle=shuffle, duplicates=duplicates, seed=seed
        )
    )


def ids_of(deliveries: list[mlevents.Delivery]) -> set[str]:
    out = set()
    for delivery in deliveries:
        document = orjson.loads(delivery.body)
        for event in document if isinstance(document, list) else [document]:
            out.add(event["id"])
    return out


async def send(hub: LocalHub, deliveries: list[mlevents.Delivery]) -> PublishReport:
    """Publish with the real producer, keyed by subject as the Event Grid subscription is told to."""
    return await publish(hub.connection_string(), plan(deliveries, "subject"))


async def send_stream(
    hub: LocalHub,
    deliveries: list[mlevents.Delivery],
    per_second: float,
    chunk: int = 100,
    sent: dict[str, float] | None = None,
) -> None:
    """Publish at about ``per_second`` events a second, a chunk at a time: a stream, not a burst.

    Keyed by subject, routed with the service's hash, as the Event Grid subscription would. ``sent``
    is told each event's id and the monotonic time its chunk was sent.
    """
    async with EventHubProducerClient.from_connection_string(hub.connection_string()) as producer:
        ids = await producer.get_partition_ids()
        outgoing = list(plan(deliveries, "subject"))
        for start in range(0, len(outgoing), chunk):
            groups: dict[str, list[EventData]] = defaultdict(list)
            for message in outgoing[start : start + chunk]:
                event = EventData(message.body)
                properties: dict[str | bytes, Any] = {str(key): value for key, value in message.properties.items()}
                event.properties = properties
                assert message.partition_key is not None
                groups[partition_for_key(message.partition_key, ids)].append(event)
            for partition, group in groups.items():
                batch = await producer.create_batch(partition_id=partition)
                for event in group:
                    batch.add(event)
                await producer.send_batch(batch)
            if sent is not None:
                now = time.monotonic()
                sent.update((event_id, now) for event_id in ids_of(deliveries[start : start + chunk]))
            await asyncio.sleep(chunk / per_second)


@dataclass
class Actions:
    """The action lines the workers wrote, read back."""

    lines: list[dict[str, object]] = field(default_factory=list)

    @classmethod
    def read(cls, *paths: Path) -> Actions:
        lines = []
        for path in paths:
            if path.exists():
                written = path.read_bytes()
                complete = written[: written.rfind(b"\n") + 1]  # not a line a worker is writing now
                lines += [orjson.loads(line) for line in complete.splitlines() if line.strip()]
        return cls(lines)

    @property
    def per_event(self) -> Counter[str]:
        return Counter(str(line["event_id"]) for line in self.lines)

    def keys_by_event(self) -> dict[str, set[str]]:
        keys: dict[str, set[str]] = defaultdict(set)
        for line in self.lines:
            keys[str(line["event_id"])].add(str(line["idempotency_key"]))
        return keys


def live_settings(connection_string: str, azurite: Azurite, container: str, rules: Path) -> dict[str, object]:
    """The settings every live test starts from: this hub, checkpoints on Azurite, short intervals."""
    return {
        "eventhub_connection_string": connection_string,
        "storage_connection_string": azurite.connection_string,
        "checkpoint_container": container,
        "rules": rules,
        "http_port": 0,
        "load_balancing_interval": 1,
        "reorder_window": 0.5,
        "max_wait": 0.2,
        "late_policy": "process",
    }


def worker_env(hub: LocalHub, azurite: Azurite, container: str, rules: Path, **settings: object) -> dict[str, str]:
    """The environment of a worker subprocess: every setting as its WORKER_* variable."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("WORKER_")}
    values = live_settings(hub.connection_string(), azurite, container, rules)
    values.update(checkpoint_interval=0.5, log_format="json", dead_letters="dead-letters")
    values.update(settings)
    env.update({f"WORKER_{name.upper()}": str(value) for name, value in values.items()})
    env["PYTHONPATH"] = str(ROOT)
    return env


async def start_worker(env: dict[str, str], cwd: Path) -> asyncio.subprocess.Process:
    cwd.mkdir(parents=True, exist_ok=True)
    log = (cwd / "worker.log").open("ab")
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "worker", "run", env=env, cwd=cwd, stdout=log, stderr=log
        )
    finally:
        log.close()


async def stop_worker(process: asyncio.subprocess.Process, how: signal.Signals = signal.SIGTERM) -> int:
    if process.returncode is None:
        process.send_signal(how)
    async with asyncio.timeout(60):
        return await process.wait()


async def wait_worker(process: asyncio.subprocess.Process, within: float = 120) -> int:
    """The exit code of a worker that stops by itself (``WORKER_IDLE_EXIT``)."""
    async with asyncio.timeout(within):
        return await process.wait()


async def checkpoints(azurite: Azurite, container: str, namespace: str, hub: str) -> dict[str, int]:
    """Each partition's checkpointed sequence number, read through the SDK's own checkpoint store."""
    async with BlobCheckpointStore.from_connection_string(azurite.connection_string, container) as store:
        found = await store.list_checkpoints(namespace, hub, "$Default")
    return {str(c["partition_id"]): int(c["sequence_number"]) for c in found}


async def owners(azurite: Azurite, container: str, namespace: str, hub: str) -> dict[str, str]:
    """Each partition's owner; "" for a partition released (or the container not made yet: none)."""
    try:
        async with BlobCheckpointStore.from_connection_string(azurite.connection_string, container) as store:
            found = await store.list_ownership(namespace, hub, "$Default")
    except ResourceNotFoundError:
        return {}
    return {str(o["partition_id"]): str(o["owner_id"] or "") for o in found}


async def wait_for(condition: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    """Poll a condition on other processes' state until it holds; fail naming ``what`` after ``within`` s."""
    try:
        async with asyncio.timeout(within):
            while not await condition():  # noqa: ASYNC110 - the state is in other processes and in Azurite
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"timed out after {within}s waiting for {what}") from None


async def metrics_of(port: int) -> dict[str, float]:
    """A worker's metrics, summed by name, by name and outcome (``events_total:handed_over``) and by name
    and fate (``actions_total:planned``); {} while it does not answer."""
    try:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as response:
            text = await response.text()
    except aiohttp.ClientConnectionError:
        return {}
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            keys = [sample.name, f"{sample.name}:{sample.labels.get('outcome', '')}"]
            if "fate" in sample.labels:
                keys.append(f"{sample.name}:{sample.labels['fate']}")
            for key in keys:
                out[key] = out.get(key, 0.0) + sample.value
    return out


def adds_up(metrics: dict[str, float]) -> bool:
    """Every event read has an outcome, or is held in a reorder buffer still."""
    read = metrics.get("azml_worker_events_read_total", -1.0)
    return read == metrics.get("azml_worker_events_total", 0.0) + metrics.get("azml_worker_reorder_buffered", 0.0)


def worker_log(cwd: Path) -> list[dict[str, object]]:
    path = cwd / "worker.log"
    out = []
    for line in path.read_bytes().splitlines() if path.exists() else []:
        try:
            out.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            continue  # the SDK's own warnings, or a traceback
    return out


__all__ = ["ROOT"]


def held_partitions(cwd: Path) -> set[str]:
    """The partitions a worker holds, by its own log: claimed and not closed since."""
    held: set[str] = set()
    for entry in worker_log(cwd):
        if entry.get("event") == "partition.claimed":
            held.add(str(entry["partition_id"]))
        elif entry.get("event") == "partition.closed":
            held.discard(str(entry["partition_id"]))
    return held


def holds_as_owned(owned: dict[str, str], held: list[set[str]]) -> bool:
    """The workers hold (by their logs) exactly the partitions the store says their owners own, each
    worker one owner's: no partition is read by two workers, none by no one."""
    by_owner: dict[str, set[str]] = {}
    for partition, owner in owned.items():
        by_owner.setdefault(owner, set()).add(partition)
    if "" in by_owner or len(by_owner) != len(held):
        return False
    return sorted(sorted(p) for p in by_owner.values()) == sorted(sorted(p) for p in held)
