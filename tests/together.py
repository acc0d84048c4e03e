"""Workers of one consumer group on the test bed, as subprocesses: started at the same moment on a hub
nobody has claimed, or joining and leaving a running group as KEDA scales it; what each acted on,
which partitions moved between them, and whether each event acted on twice is explained by a move.

Shared by the consumer group tests and ``bench/bench_start.py``.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from tests.live import (
    RULES,
    Actions,
    events,
    ids_of,
    local_hub,
    owners,
    send_stream,
    start_worker,
    stop_worker,
    wait_for,
    worker_env,
    worker_log,
)
from tests.servers import Azurite
from tests.start_gate import start_gate
from worker.localhub.hub import LocalHub
from worker.sending import mlevents


@dataclass(frozen=True)
class Leave:
    """A partition that left a worker: taken by a peer, released at a stop, or with the worker killed."""

    partition_id: str
    worker: str
    #: ``ownership_lost`` or ``shutdown`` (from the worker's log), ``taken_at_stop`` (closed at the
    #: stop, a peer having claimed it since), or ``killed``.
    why: str
    #: Whether it had acted there (False: held since its claim, it acted on nothing); None when killed.
    settled: bool | None


@dataclass
class Group:
    """The workers of one consumer group, by name; their working directories under ``root``."""

    root: Path
    env: dict[str, str]
    processes: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)
    killed: set[str] = field(default_factory=set)
    #: Monotonic time each worker was started.
    started: dict[str, float] = field(default_factory=dict)

    async def start(self, *names: str) -> None:
        """Start these workers at the same moment."""
        now = time.monotonic()
        processes = await asyncio.gather(*(start_worker(self.env, self.root / name) for name in names))
        self.processes.update(zip(names, processes, strict=True))
        self.started.update(dict.fromkeys(names, now))

    async def stop(self, name: str, how: signal.Signals = signal.SIGTERM) -> int:
        if how is signal.SIGKILL:
            self.killed.add(name)
        return await stop_worker(self.processes[name], how)

    async def stop_all(self) -> None:
        """Stop every running worker at once (SIGTERM), as a deployment deleted."""
        running = self.running
        codes = await asyncio.gather(*(stop_worker(self.processes[name]) for name in running))
        failed = [name for name, code in zip(running, codes, strict=True) if code != 0]
        assert not failed, f"{failed} did not stop cleanly: see their worker.log under {self.root}"

    @property
    def running(self) -> list[str]:
        return [name for name, process in self.processes.items() if process.returncode is None]

    def actions(self) -> dict[str, Actions]:
        return {name: Actions.read(self.root / name / "actions.jsonl") for name in self.processes}

    def owner_id(self, name: str) -> str | None:
        """The owner id a worker claims with, from its log (None before its first claim)."""
        for line in worker_log(self.root / name):
            if line.get("event") == "partition.claimed" and line.get("owner_id"):
                return str(line["owner_id"])
        return None

    def tenures(self) -> dict[str, Counter[str]]:
        """Per partition, how many times each worker claimed it: each claim is a tenure, acting at most
        once on each event it reads."""
        out: dict[str, Counter[str]] = defaultdict(Counter)
        for name in self.processes:
            for line in worker_log(self.root / name):
                if line.get("event") == "partition.claimed":
                    out[str(line["partition_id"])][name] += 1
        return dict(out)

    def leaves(self) -> list[Leave]:
        """Every partition that left a worker, by the workers' logs (a killed worker's: what it held).
        A partition closed at the stop after a peer had claimed it was taken just before the stop,
        and its owner's next round, which would have said so, never came: ``taken_at_stop``."""
        logs = {name: worker_log(self.root / name) for name in self.processes}
        claims = [
            (str(line["timestamp"]), str(line["partition_id"]), name)
            for name, lines in logs.items()
            for line in lines
            if line.get("event") == "partition.claimed"
        ]
        out = []
        for name, lines in logs.items():
            held: dict[str, str] = {}
            for line in lines:
                if line.get("event") == "partition.claimed":
                    held[str(line["partition_id"])] = str(line["timestamp"])
                elif line.get("event") == "partition.closed":
                    partition = str(line["partition_id"])
                    since = held.pop(partition, "")
                    why = str(line["reason"])
                    closed = str(line["timestamp"])
                    taken = any(p == partition and w != name and since < t < closed for t, p, w in claims)
                    if why == "shutdown" and taken:
                        why = "taken_at_stop"
                    settled = line.get("settled")
                    out.append(Leave(partition, name, why, settled if isinstance(settled, bool) else None))
            if name in self.killed:
                out += [Leave(partition, name, "killed", None) for partition in sorted(held)]
        return out


@dataclass(frozen=True)
class Acted:
    """What a group acted on: per event, the workers that acted on it and the idempotency keys used."""

    by_event: dict[str, list[str]]
    keys: dict[str, set[str]]
    partition_of: dict[str, str]

    @classmethod
    def of(cls, group: Group) -> Acted:
        by_event: dict[str, list[str]] = defaultdict(list)
        keys: dict[str, set[str]] = defaultdict(set)
        partition_of: dict[str, str] = {}
        for name, actions in group.actions().items():
            for line in actions.lines:
                event_id = str(line["event_id"])
                by_event[event_id].append(name)
                keys[event_id].add(str(line["idempotency_key"]))
                partition_of[event_id] = str(line["partition_id"])
        return cls(dict(by_event), dict(keys), partition_of)

    def repeats(self) -> dict[str, list[str]]:
        """The events acted on more than once, with the workers that did."""
        return {event_id: names for event_id, names in self.by_event.items() if len(names) > 1}

    def unexplained(self, tenures: dict[str, Counter[str]], leaves: list[Leave]) -> list[str]:
        """The events acted on more than once that no move of their partition explains: each action of
        an event must come from a tenure of its partition of its own (a claim), and one of the workers
        that acted on it must have had the partition leave it in one of the ``leaves`` given."""
        left = {(leave.partition_id, leave.worker) for leave in leaves}
        out = []
        for event_id, names in self.repeats().items():
            partition = self.partition_of[event_id]
            if not Counter(names) <= tenures.get(partition, Counter()) or not any(
                (partition, name) in left for name in names
            ):
                out.append(event_id)
        return out


@dataclass(frozen=True)
class Start:
    """One round of workers started together: what they acted on, which partitions each claimed and
    which left it, and when each partition first acted (seconds after the workers were started)."""

    published: frozenset[str]
    acted: Acted
    tenures: dict[str, Counter[str]]
    leaves: list[Leave]
    first_action: dict[str, float]

    @property
    def steals(self) -> list[Leave]:
        """The partitions taken by a peer."""
        return [leave for leave in self.leaves if leave.why in ("ownership_lost", "taken_at_stop")]

    def unexplained(self) -> list[str]:
        """The events acted on twice that no steal explains."""
        return self.acted.unexplained(self.tenures, self.steals)

    @property
    def repeated(self) -> int:
        """Actions repeated: every action beyond the first of its event."""
        return sum(len(names) - 1 for names in self.acted.repeats().values())


@dataclass
class Streamed:
    """A group of workers on a hub of their own, with a stream being published to it."""

    hub: LocalHub
    name: str
    azurite: Azurite
    container: str
    group: Group
    sending: asyncio.Task[None]

    async def owners(self) -> Counter[str]:
        """How many partitions each owner owns ("" counts the released ones)."""
        found = await owners(self.azurite, self.container, f"127.0.0.1:{self.hub.port}", self.name)
        return Counter(found.values())


@asynccontextmanager
async def streamed(
    root: Path,
    azurite: Azurite,
    name: str,
    *,
    partitions: int,
    published: list[mlevents.Delivery],
    per_second: float,
    settings: Mapping[str, object],
    storage: Azurite | None = None,
) -> AsyncIterator[Streamed]:
    """A hub of ``partitions`` with ``published`` streaming into it at ``per_second``, and a group of
    workers for it (none started yet), given ``storage`` (``azurite`` itself, or a way to it): every
    running worker is stopped at the end (SIGTERM)."""
    rules = root / "rules.yaml"
    rules.parent.mkdir(parents=True, exist_ok=True)
    rules.write_text(RULES)
    async with local_hub(name, partitions=partitions) as hub:
        container = f"{name}-{uuid.uuid4().hex[:12]}"
        group = Group(root, worker_env(hub, storage or azurite, container, rules, **settings))
        sending = asyncio.create_task(send_stream(hub, published, per_second))
        try:
            yield Streamed(hub, name, azurite, container, group, sending)
        finally:
            sending.cancel()
            await group.stop_all()


async def start_together(
    root: Path,
    azurite: Azurite,
    *,
    workers: int = 4,
    partitions: int = 8,
    count: int = 1200,
    per_second: float = 100.0,
    seed: int = 1,
    settings: Mapping[str, object] = MappingProxyType({}),
) -> Start:
    """``workers`` workers started at the same moment on a hub of ``partitions`` nobody has claimed,
    while ``count`` events are published at ``per_second``, the stream starting with them; returns once
    every event is acted on and the workers have stopped (SIGTERM). Their first balancing rounds come
    through a :class:`~tests.start_gate.StartGate`: one first, the others as soon as it has claimed."""
    published = events(count, seed=seed, duplicates=0)
    expected = ids_of(published)
    async with (
        start_gate(azurite, workers=workers, partitions=partitions) as (gate, storage),
        streamed(
            root,
            azurite,
            "together",
            partitions=partitions,
            published=published,
            per_second=per_second,
            settings=settings,
            storage=storage,
        ) as stream,
    ):
        group = stream.group
        await group.start(*(f"w{i}" for i in range(workers)))
        first = await _first_actions(group, partitions, within=120)
        assert gate.opened, "the workers acted before each had come to its first balancing round"
        await stream.sending

        async def all_acted() -> bool:
            return set(Acted.of(group).by_event) >= expected

        await wait_for(all_acted, 120, "every event to be acted on")
    acted = Acted.of(group)
    assert set(acted.by_event) == expected
    return Start(frozenset(expected), acted, group.tenures(), group.leaves(), first)


async def _first_actions(group: Group, partitions: int, within: float) -> dict[str, float]:
    """Watch the group's actions until every partition has acted: when each first did."""
    start = min(group.started.values())
    first: dict[str, float] = {}
    async with asyncio.timeout(within):
        while len(first) < partitions:
            for actions in group.actions().values():
                for line in actions.lines:
                    first.setdefault(str(line["partition_id"]), time.monotonic() - start)
            await asyncio.sleep(0.05)
    return first


async def join_running(
    root: Path,
    azurite: Azurite,
    *,
    partitions: int = 8,
    per_second: float = 50.0,
    seed: int = 1,
    settings: Mapping[str, object] = MappingProxyType({}),
) -> float:
    """A worker joining one that owns every partition of a hub with a stream: seconds from its start to
    its first action (on the partition it takes from the first)."""
    published = events(int(per_second * 600), seed=seed, duplicates=0)
    async with streamed(
        root, azurite, "joining", partitions=partitions, published=published, per_second=per_second, settings=settings
    ) as stream:
        group = stream.group
        await group.start("w0")
        await _first_actions(group, partitions, within=120)
        await group.start("w1")
        async with asyncio.timeout(120):
            while not Actions.read(root / "w1" / "actions.jsonl").lines:  # noqa: ASYNC110 - another process
                await asyncio.sleep(0.05)
        return time.monotonic() - group.started["w1"]


async def scale_out(
    root: Path,
    azurite: Azurite,
    *,
    workers: int = 8,
    partitions: int = 32,
    per_second: float = 50.0,
    settings: Mapping[str, object] = MappingProxyType({}),
) -> tuple[float, float]:
    """One worker owning every partition of a hub with a stream, then ``workers - 1`` more started at
    once: seconds from their start until every partition is spread evenly, and until every worker acts."""
    published = events(int(per_second * 600), seed=workers, duplicates=0)
    async with streamed(
        root, azurite, "scaling", partitions=partitions, published=published, per_second=per_second, settings=settings
    ) as stream:
        group = stream.group
        await group.start("w0")
        await _first_actions(group, partitions, within=120)
        joining = [f"w{i}" for i in range(1, workers)]
        await group.start(*joining)
        started = group.started[joining[0]]

        balanced: float | None = None
        acting: dict[str, float] = {}
        async with asyncio.timeout(600):
            while balanced is None or len(acting) < workers:
                now = time.monotonic() - started
                owned = await stream.owners()
                if balanced is None and len(owned) == workers and set(owned.values()) == {partitions // workers}:
                    balanced = now
                for name, actions in group.actions().items():
                    if actions.lines:
                        acting.setdefault(name, now)
                await asyncio.sleep(0.1)
        return balanced, max(acting.values())
