"""Live worker benchmark: ``worker run`` against a bare SDK consumer, on the local hub, in one run.

1. Throughput. N realistic ~1 KB events are published to a local hub; then a bare SDK consumer
   (``receive_batch``, prefetch 3,000, no checkpoints) and ``worker run`` (a 50-rule table with
   ``log`` actions, checkpoints to a local directory, the same prefetch) each read them all from the
   start, in turn, as subprocesses, for a few rounds. Printed: events/s of each, sustained (between
   the 10% and 90% marks of the stream: neither the start nor the reorder window's wait for the last
   events) and over the whole stream (the first event read to the last with an outcome), and their
   ratios. The worker's counts come from its /metrics, updated by the pipeline process four times a
   second: its marks are known to about a quarter of a second, hence the long default stream.
   Over the same stretch of the stream, the CPU per event of each process: the bare consumer's, and
   the worker's receiving process (the parent) and pipeline process (the child), each read from
   /proc as the stretch's first and last events passed it (user + system, all threads; the local
   hub's CPU is not counted), with the events/s each would reach on a core of its own. The
   receiving process reads ahead of the pipeline (by up to its prefetch and inboxes): its stretch
   is when it received those events, the pipeline process's when it finished them.
2. Steady stream. Events are published at 1,000 a second for a while to a second hub, read by
   ``worker run``: printed are the checkpoint writes per partition per minute, and the end-to-end
   latency (enqueued to action done) p50/p99, raw and beyond the reorder window (the wait the window
   imposes on purpose).
3. Expiries. Events are published at 200 a second for a while to a third hub; every registered model
   starts an expectation (``expect``, ``within`` 2 s) that nothing fulfils: printed is how long after
   its deadline plus the reorder window each expiry's action ran (p50, p99, the longest), which the
   docs bound at a second.
4. Idle cost. ``worker run`` owning the 8 partitions of an idle hub (no events), for a minute after
   it has claimed them all: the CPU (% of one core) and memory (RSS) of each of its processes.

The figures are ratios and percentiles measured in the same run: these machines are shared.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import orjson
from azure.eventhub import EventData
from azure.eventhub.aio import PartitionContext

from bench.bench_localhub import start_hub
from bench.processes import child_pid, cpu_seconds, rss_bytes
from bench.tables import base_filters, prefixed_filters, rules_yaml
from tests.servers import free_port
from worker.sending import mlevents
from worker.sending.publish import GenerateOptions, generated_events, plan, publish

ROOT = Path(__file__).resolve().parents[1]
PREFETCH = 3000
BATCH = 300
SCRAPE_SAMPLES = 20


@contextmanager
def local_hub(name: str, partitions: int, retention: int) -> Iterator[str]:
    """The local hub in a subprocess while the block runs; yields its connection string."""
    process, connection = start_hub(retention, name, partitions)
    try:
        yield connection
    finally:
        process.terminate()
        process.wait(10)


def bodies(count: int, seed: int) -> list[mlevents.Delivery]:
    events = generated_events(GenerateOptions(count, seed=seed, body_size=1000))
    return list(mlevents.deliveries(events, shuffle=0, duplicates=0.0, seed=seed))


async def publish_all(connection: str, deliveries: list[mlevents.Delivery]) -> None:
    await publish(connection, plan(deliveries, "subject"))


# --- the bare consumer (run as a subprocess: ``python -m bench.bench_worker --bare CONN N``) ------------


class Run(NamedTuple):
    """One reading of the stream: events/s, sustained and whole, and CPU seconds per event of each
    process that read it (over the sustained stretch)."""

    sustained: float
    whole: float
    cpu: tuple[float, ...]


async def bare_consumer(connection: str, count: int) -> None:
    from azure.eventhub.aio import EventHubConsumerClient  # noqa: PLC0415

    client = EventHubConsumerClient.from_connection_string(connection, consumer_group="$Default")
    marks = Marks(count, lambda: (cpu_seconds(os.getpid()),))
    seen, done = 0, asyncio.Event()

    async def on_batch(_context: PartitionContext, events: list[EventData]) -> None:
        nonlocal seen
        seen += len(events)
        marks.update(seen, time.perf_counter())
        if seen >= count:
            done.set()

    receiving = asyncio.create_task(
        client.receive_batch(on_batch, max_batch_size=BATCH, prefetch=PREFETCH, starting_position="-1")
    )
    await done.wait()
    print(orjson.dumps(tuple(marks.run())).decode(), flush=True)
    await client.close()
    receiving.cancel()


def _no_reading() -> tuple[float, ...]:
    return ()


class Marks:
    """When a count of events passed the first event, 10%, 90% and all of the stream; with the count
    seen then, and each measured process's CPU seconds then (``reading``, called as a mark passes)."""

    def __init__(self, count: int, reading: Callable[[], tuple[float, ...]] = _no_reading) -> None:
        self.count = count
        self.times: dict[float, float] = {}
        self.done: dict[float, float] = {}
        self.cpu: dict[float, tuple[float, ...]] = {}
        self._reading = reading

    def update(self, done: float, now: float) -> None:
        for mark in (0.0, 0.1, 0.9, 1.0):
            if mark not in self.times and done > 0 and done >= mark * self.count:
                self.times[mark], self.done[mark], self.cpu[mark] = now, done, self._reading()

    def next_mark(self, done: float) -> float:
        """The count of the next mark to pass."""
        return next((mark * self.count for mark in (0.1, 0.9, 1.0) if mark not in self.times), self.count) - done

    def stretch(self) -> float:
        """The events seen between the 10% and 90% marks (as counted when each was seen passed)."""
        if self.times[0.9] == self.times[0.1]:
            raise SystemExit("the 10% and 90% marks were seen passed at once: run a longer stream (--events)")
        return self.done[0.9] - self.done[0.1]

    def sustained(self) -> float:
        """Events per second between the 10% and 90% marks: the steady rate, without the start and the tail."""
        return self.stretch() / (self.times[0.9] - self.times[0.1])

    def whole(self) -> float:
        """Events per second from the first event to the last."""
        return self.count / (self.times[1.0] - self.times[0.0])

    def cpu_per_event(self) -> tuple[float, ...]:
        """Each process's CPU seconds per event between the 10% and 90% marks: the stretch of ``sustained``."""
        return tuple((end - start) / self.stretch() for start, end in zip(self.cpu[0.1], self.cpu[0.9], strict=True))

    def run(self) -> Run:
        return Run(self.sustained(), self.whole(), self.cpu_per_event())


def run_bare(connection: str, count: int) -> Run:
    out = subprocess.run(
        [sys.executable, "-m", "bench.bench_worker", "--bare", connection, str(count)],
        capture_output=True,
        check=True,
        cwd=ROOT,
        timeout=600,
    )
    sustained, whole, cpu = orjson.loads(out.stdout.splitlines()[-1])
    return Run(sustained, whole, tuple(cpu))


# --- the worker -----------------------------------------------------------------------------------


def worker_env(connection: str, work: Path, rules: Path, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_")}
    env.update(
        WORKER_EVENTHUB_CONNECTION_STRING=connection,
        WORKER_CHECKPOINT_DIR=str(work / "checkpoints"),
        WORKER_RULES=str(rules),
        WORKER_HTTP_HOST="127.0.0.1",
        WORKER_HTTP_PORT=str(port),
        WORKER_PREFETCH=str(PREFETCH),
        WORKER_BATCH_SIZE=str(BATCH),
        WORKER_DEAD_LETTERS=str(work / "dead-letters"),
        WORKER_LOG_FORMAT="json",
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


def scrape(port: int) -> dict[str, float]:
    """The worker's metrics, summed by name over their labels."""
    return summed(scrape_text(port))


def scrape_text(port: int) -> str:
    """The worker's /metrics page (empty while it does not answer)."""
    try:
        body: bytes = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
    except OSError:
        return ""
    return body.decode()


def summed(text: str) -> dict[str, float]:
    """The metrics of a /metrics page, summed by name over their labels."""
    out: dict[str, float] = {}
    for match in re.finditer(r"^(azml_worker_\w+)(?:\{[^}]*\})? (\S+)$", text, re.M):
        out[match[1]] = out.get(match[1], 0.0) + float(match[2])
    return out


def wait_acting(port: int, partitions: int) -> None:
    """Until the worker owns ``partitions`` partitions and none is settling: a partition just claimed
    holds its events for the settle time (``WORKER_SETTLE``), which a stream's latencies would count."""
    while True:
        metrics = scrape(port)
        if metrics.get("azml_worker_partitions_owned", 0.0) >= partitions and not metrics.get(
            "azml_worker_partitions_settling", 0.0
        ):
            return
        time.sleep(0.1)


def outcomes(metrics: dict[str, float]) -> float:
    return metrics.get("azml_worker_events_total", 0.0)


def received_messages(metrics: dict[str, float]) -> float:
    """The events the receiving process has received from the hub and handed on (one per message here)."""
    return metrics.get("azml_worker_messages_received_total", 0.0)


class WorkerRun(NamedTuple):
    """The worker's reading of the stream (CPU: the receiving process's, then the pipeline process's),
    and the share of the receiving process's CPU in the stretch that went to serving this benchmark's
    /metrics scrapes."""

    run: Run
    scraping: float


def pipeline_process(parent: int) -> int:
    """The pid of the worker's pipeline process (``python -m worker.live.child``, started by ``parent``)."""
    child = child_pid(parent, "worker.live.child")
    if child is None:
        raise SystemExit("the worker's pipeline process was not found (is WORKER_PIPELINE_PROCESS off?)")
    return child


def run_worker_throughput(connection: str, count: int, rules: Path, work: Path) -> WorkerRun:
    """The worker's rates, from its finished events (the marks ``finished`` passes); the receiving
    process's CPU over the stretch in which it received the stream's 10% to 90% (``received``: it
    reads ahead of the pipeline, by up to its prefetch and inboxes), the pipeline process's over the
    stretch in which it finished them."""
    port = free_port()
    env = worker_env(connection, work, rules, port, WORKER_LOG_LEVEL="warning", WORKER_REORDER_WINDOW="0.5")
    with (work / "throughput.log").open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "worker", "run"], env=env, cwd=work, stdout=log, stderr=log)
    child: int | None = None

    def pipeline_cpu() -> tuple[float, ...]:
        nonlocal child
        child = child or pipeline_process(process.pid)
        return (cpu_seconds(child),)

    try:
        received = Marks(count, lambda: (cpu_seconds(process.pid),))
        finished = Marks(count, pipeline_cpu)
        scrapes: dict[float, int] = {}
        deadline = time.monotonic() + 600
        for scraped in itertools.count(1):
            if time.monotonic() > deadline:
                raise SystemExit("the worker did not finish in time; see throughput.log")
            text = scrape_text(port)
            now = time.perf_counter()
            metrics = summed(text)
            if metrics.get("azml_worker_events_read_total", 0.0) and 0.0 not in finished.times:
                finished.times[0.0] = now
            if done := outcomes(metrics):
                finished.update(done, now)
            if got := received_messages(metrics):
                received.update(got, now)
                for mark in received.cpu.keys() - scrapes.keys():
                    scrapes[mark] = scraped
            if 1.0 in finished.times:
                break
            time.sleep(min(_poll(received, got, now), _poll(finished, done, now)))
        # What a scrape costs the receiving process, which serves /metrics: measured now, the stream read.
        before = cpu_seconds(process.pid)
        for _ in range(SCRAPE_SAMPLES):
            scrape_text(port)
        per_scrape = (cpu_seconds(process.pid) - before) / SCRAPE_SAMPLES
        (receiving,) = received.cpu_per_event()
        (pipeline,) = finished.cpu_per_event()
        scraping = (scrapes[0.9] - scrapes[0.1]) * per_scrape / (receiving * received.stretch())
        return WorkerRun(Run(finished.sustained(), finished.whole(), (receiving, pipeline)), scraping)
    finally:
        process.terminate()
        process.wait(60)


def _poll(marks: Marks, done: float, now: float) -> float:
    """Seconds to the next scrape: often near the marks, whose times are measured, and seldom between
    them, where a scrape would only take the worker's time (the /metrics page is large)."""
    started = marks.times.get(0.0)
    if 1.0 in marks.times:
        return 0.25
    if started is None or not done:
        return 0.01
    rate = done / max(now - started, 1e-3)
    return min(max(marks.next_mark(done) / rate / 4, 0.005), 0.25)


async def stream(connection: str, deliveries: list[mlevents.Delivery], per_second: int) -> dict[str, float]:
    """Publish at ``per_second``; return each event id's send time (wall clock, as the log's)."""
    from azure.eventhub.aio import EventHubProducerClient  # noqa: PLC0415

    from worker.sending.placement import partition_for_key  # noqa: PLC0415

    sent: dict[str, float] = {}
    tick = 0.05
    chunk = max(1, int(per_second * tick))
    async with EventHubProducerClient.from_connection_string(connection) as producer:
        ids = await producer.get_partition_ids()
        outgoing = list(plan(deliveries, "subject"))
        start = time.monotonic()
        for n, first in enumerate(range(0, len(outgoing), chunk)):
            groups: dict[str, list[EventData]] = {}
            block = outgoing[first : first + chunk]
            for message in block:
                assert message.partition_key is not None
                groups.setdefault(partition_for_key(message.partition_key, ids), []).append(EventData(message.body))
            for partition, group in groups.items():
                batch = await producer.create_batch(partition_id=partition)
                for event in group:
                    batch.add(event)
                await producer.send_batch(batch)
            now = time.time()
            for message in block:
                sent[str(orjson.loads(message.body)[0]["id"])] = now
            await asyncio.sleep(max(0.0, start + (n + 1) * tick - time.monotonic()))
    return sent


def run_steady(connection: str, partitions: int, rate: int, seconds: int, window: float, work: Path) -> None:
    rules = work / "rules-log.yaml"
    rules.write_text("rules:\n  - name: every-event\n    filter: {}\n    actions:\n      - type: log\n")
    port = free_port()
    env = worker_env(connection, work, rules, port, WORKER_LOG_LEVEL="info", WORKER_REORDER_WINDOW=str(window))
    log_path = work / "steady.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "worker", "run"], env=env, cwd=work, stdout=log, stderr=log)
    try:
        wait_acting(port, partitions)
        deliveries = bodies(rate * seconds, seed=9)
        started = time.monotonic()
        sent = asyncio.run(stream(connection, deliveries, rate))
        while outcomes(scrape(port)) < len(deliveries):
            time.sleep(0.05)
        minutes = (time.monotonic() - started) / 60
        writes = scrape(port).get("azml_worker_checkpoint_writes_total", 0.0)
    finally:
        process.terminate()
        process.wait(60)
    # The stream's last events wait for the idle release instead of later events: left out, so the
    # figures are the steady state's.
    tail = max(sent.values()) - (window + 2.0)
    latencies = []
    for line in log_path.read_bytes().splitlines():
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if entry.get("event") == "action.log" and sent.get(entry.get("event_id"), tail) < tail:
            done = datetime.fromisoformat(entry["timestamp"]).timestamp()
            latencies.append(done - sent[entry["event_id"]])
    if not latencies:
        raise SystemExit("no action finished before the stream's last seconds: run a longer stream (--seconds)")
    latencies.sort()
    p50, p99 = statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1]
    print(f"steady stream: {rate:,} events/s for {seconds} s on {partitions} partitions, reorder window {window:g} s")
    print(f"  checkpoint writes: {writes / partitions / minutes:.1f} per partition per minute")
    print(f"  latency enqueued -> action done: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
    print(
        f"  beyond the reorder window:       p50 {(p50 - window) * 1000:.0f} ms, p99 {(p99 - window) * 1000:.0f} ms"
        f"  ({len(latencies):,} actions)"
    )


#: An expectation each registered model starts, which nothing fulfils: it expires ``within`` after it.
EXPECT_RULES = f"""\
rules:
  - name: never-deployed
    filter: {{includedEventTypes: [{mlevents.MODEL_REGISTERED}]}}
    expect:
      within: WITHIN
      key: "{{{{ id }}}}"
      filter: {{includedEventTypes: [{mlevents.MODEL_DEPLOYED}], subjectBeginsWith: never/}}
    actions:
      - type: log
"""


def run_expiries(connection: str, partitions: int, rate: int, seconds: int, window: float, work: Path) -> None:
    """How long after deadline + window each expiry's action runs, on a stream of events."""
    within = 2.0
    rules = work / "rules-expect.yaml"
    rules.write_text(EXPECT_RULES.replace("WITHIN", f"{within:g}s"))
    port = free_port()
    env = worker_env(connection, work, rules, port, WORKER_LOG_LEVEL="info", WORKER_REORDER_WINDOW=str(window))
    log_path = work / "expiries.log"
    deliveries = bodies(rate * seconds, seed=11)
    events = [orjson.loads(delivery.body)[0] for delivery in deliveries]
    starting = {str(event["id"]) for event in events if event["eventType"] == mlevents.MODEL_REGISTERED}
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "worker", "run"], env=env, cwd=work, stdout=log, stderr=log)
    try:
        wait_acting(port, partitions)
        sent = asyncio.run(stream(connection, deliveries, rate))
        fired: dict[str, float] = {}
        deadline = time.monotonic() + within + window + 30
        while len(fired) < len(starting) and time.monotonic() < deadline:
            time.sleep(0.5)
            for line in log_path.read_bytes().splitlines():
                entry = orjson.loads(line) if line.startswith(b"{") else {}
                if entry.get("event") == "action.log" and entry.get("rule") == "never-deployed":
                    fired[str(entry["event_id"])] = datetime.fromisoformat(entry["timestamp"]).timestamp()
    finally:
        process.terminate()
        process.wait(60)
    if len(fired) < len(starting):
        raise SystemExit(f"{len(starting) - len(fired)} of {len(starting)} expectations did not expire in time")
    delays = sorted(fired[key] - (sent[key] + within + window) for key in starting)
    p50, p99 = statistics.median(delays), delays[int(len(delays) * 0.99) - 1]
    print(f"expiries: {len(delays):,} expectations ({within:g} s) on a stream of {rate:,} events/s for {seconds} s")
    print(
        f"  fired after deadline + reorder window ({window:g} s): p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
        f"longest {delays[-1] * 1000:.0f} ms (the docs' bound: 1,000 ms)"
    )


def report_throughput(rounds: list[tuple[Run, WorkerRun]]) -> None:
    """Print the medians over the rounds: of each figure, and of each ratio taken within a round."""
    bare = [bare for bare, _ in rounds]
    worker = [worker.run for _, worker in rounds]
    print("round by round: events/s sustained, and CPU per event over the same stretch, (a) then (b1) + (b2):")
    for n, (a, b) in enumerate(zip(bare, worker, strict=True), 1):
        print(
            f"  {n}: (a) {a.sustained:>7,.0f}/s {a.cpu[0] * 1e6:5.1f} us   "
            f"(b) {b.sustained:>7,.0f}/s {b.cpu[0] * 1e6:5.1f} + {b.cpu[1] * 1e6:5.1f} us"
        )
    print(
        "events/s, sustained (between the 10% and 90% marks) and over the whole stream (first to last), "
        f"median of {len(rounds)} rounds:"
    )
    for name, runs in (
        ("(a) bare SDK consumer (receive_batch):            ", bare),
        ("(b) worker run, 50 rules, log actions, checkpoints:", worker),
    ):
        print(f"{name} {_median(r.sustained for r in runs):>7,.0f}   {_median(r.whole for r in runs):>7,.0f}")
    print(
        f"(b) / (a): sustained {_median(b.sustained / a.sustained for a, b in zip(bare, worker, strict=True)):.0%}"
        " (target: at least 80%); whole stream "
        f"{_median(b.whole / a.whole for a, b in zip(bare, worker, strict=True)):.0%} (with the worker's start-up "
        "of its partitions and the reorder window's wait for the last events)"
    )
    print(
        "CPU per event over the same stretch of the stream (its 10% to 90%), and the events/s each process would"
        " reach on a core of its own (events / its CPU seconds), median of the rounds. Measured: user + system\n"
        "CPU seconds of each process (all its threads), read from /proc/PID/stat as the stretch's first and last"
        " events passed it: received by (a) and (b1) (counted by the consumer itself; by (b1)'s /metrics,\n"
        "its messages received), finished by (b2) (its /metrics outcomes). The local hub's CPU is"
        " not counted."
    )
    for name, per_event in (
        ("(a)  the bare SDK consumer's process", [a.cpu[0] for a in bare]),
        ("(b1) worker, receiving process (the parent: SDK client, handoff, /metrics)", [b.cpu[0] for b in worker]),
        ("(b2) worker, pipeline process (the child: decoding, rules, ordering, actions)", [b.cpu[1] for b in worker]),
        ("(b1) + (b2): the worker's two processes on one core", [sum(b.cpu) for b in worker]),
    ):
        cpu = _median(per_event)
        print(f"{name:<78} {cpu * 1e6:6.1f} us/event {1 / cpu:>9,.0f} events/s")
    scraping = _median(w.scraping for _, w in rounds)
    print(
        f"(b1) / (a):  {_median(b.cpu[0] / a.cpu[0] for a, b in zip(bare, worker, strict=True)):.2f} (target: at most"
        f" 1.25); of (b1), serving this benchmark's /metrics scrapes: {scraping:.1%}"
    )
    print(f"(b2) / (b1): {_median(b.cpu[1] / b.cpu[0] for b in worker):.2f} (target: at most 1)")


def _median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def run_idle(seconds: int, rules: Path, work: Path) -> None:
    """A worker owning the partitions of an idle hub: its processes' CPU and memory over ``seconds``,
    from when it has claimed them all (read from /proc, from the outside; nothing is scraped meanwhile)."""
    partitions = 8
    with local_hub("idle", partitions, 1000) as connection:
        env = worker_env(connection, work, rules, port := free_port())
        with (work / "idle.log").open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "worker", "run"], env=env, cwd=work, stdout=log, stderr=log
            )
        try:
            deadline = time.monotonic() + 120
            while scrape(port).get("azml_worker_partitions_owned", 0.0) < partitions:
                if time.monotonic() > deadline:
                    raise SystemExit(f"the worker did not claim the {partitions} partitions in time; see idle.log")
                time.sleep(0.1)
            pids = (process.pid, pipeline_process(process.pid))
            before = [cpu_seconds(pid) for pid in pids]
            started = time.monotonic()
            peaks = [0, 0, 0]  # each process's, and both at once
            while (left := started + seconds - time.monotonic()) > 0:
                rss = [rss_bytes(pid) for pid in pids]
                peaks = [max(peak, now) for peak, now in zip(peaks, [*rss, sum(rss)], strict=True)]
                time.sleep(min(1.0, left))
            elapsed = time.monotonic() - started
            cpu = [(cpu_seconds(pid) - start) / elapsed for start, pid in zip(before, pids, strict=True)]
            rss = [rss_bytes(pid) for pid in pids]
            owned = scrape(port).get("azml_worker_partitions_owned", 0.0)
        finally:
            process.terminate()
            process.wait(60)
    if owned < partitions:
        raise SystemExit(f"the worker owned {owned:.0f} of the {partitions} partitions at the end; see idle.log")
    print(
        f"idle: worker run owning the {partitions} partitions of an idle local hub (no events), for {seconds} s from"
        " when it had claimed them all (its /metrics);\n  CPU: user + system seconds from /proc/PID/stat over that"
        " time; memory: VmRSS from /proc/PID/status at the end (the highest, sampled every second)"
    )
    print("                                    CPU, % of one core   RSS, MiB (highest)")
    for name, share, now, peak in (
        ("receiving process (the parent):", cpu[0], rss[0], peaks[0]),
        ("pipeline process (the child):  ", cpu[1], rss[1], peaks[1]),
        ("both:                          ", sum(cpu), sum(rss), peaks[2]),
    ):
        print(f"  {name}        {share:>8.2%}        {now / 2**20:6.1f} ({peak / 2**20:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument(
        "--rounds", type=int, default=3, help="throughput rounds, each the bare consumer then the worker"
    )
    parser.add_argument("--rate", type=int, default=1000, help="events per second of the steady stream")
    parser.add_argument("--seconds", type=int, default=30, help="length of the steady stream")
    parser.add_argument("--window", type=float, default=1.0, help="reorder window of the steady stream")
    parser.add_argument("--expiry-seconds", type=int, default=15, help="length of the expiries' stream")
    parser.add_argument("--idle-seconds", type=int, default=60, help="how long the idle worker is measured (0: not)")
    parser.add_argument("--bare", nargs=2, metavar=("CONNECTION", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        asyncio.run(bare_consumer(args.bare[0], int(args.bare[1])))
        return

    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        rules = work / "rules-50.yaml"
        rules.write_text(rules_yaml(base_filters() + prefixed_filters(40)))
        with local_hub("bench", args.partitions, args.events) as connection:
            asyncio.run(publish_all(connection, bodies(args.events, seed=1)))
            print(
                f"{args.events:,} events of ~1 KB on {args.partitions} partitions; prefetch {PREFETCH}, batch {BATCH}"
            )
            rounds = []
            for n in range(args.rounds):
                (round_work := work / f"round-{n}").mkdir()
                bare = run_bare(connection, args.events)
                rounds.append((bare, run_worker_throughput(connection, args.events, rules, round_work)))
        report_throughput(rounds)
        with local_hub("steady", args.partitions, args.rate * args.seconds * 2) as connection:
            run_steady(connection, args.partitions, args.rate, args.seconds, args.window, work)
        with local_hub("expiries", args.partitions, 200 * args.expiry_seconds * 2) as connection:
            (expiry_work := work / "expiries").mkdir()
            run_expiries(connection, args.partitions, 200, args.expiry_seconds, args.window, expiry_work)
        if args.idle_seconds:
            (idle_work := work / "idle").mkdir()
            run_idle(args.idle_seconds, rules, idle_work)


if __name__ == "__main__":
    main()
