"""Live worker benchmark: ``worker run`` against a bare SDK consumer, on the local hub, in one run.

1. Throughput. N realistic ~1 KB events are published to a local hub; then a bare SDK consumer
   (``receive_batch``, prefetch 3,000, no checkpoints) and ``worker run`` (a 50-rule table with
   ``log`` actions, checkpoints to a local directory, the same prefetch) each read them all from the
   start, in turn, as subprocesses. Printed: events/s of each, sustained (between the 10% and 90%
   marks of the stream: neither the start nor the reorder window's wait for the last events) and
   over the whole stream (the first event read to the last with an outcome), and their ratios. The
   worker's counts come from its /metrics, updated by the pipeline process four times a second:
   its marks are known to about a quarter of a second, hence the long default stream.
2. Steady stream. Events are published at 1,000 a second for a while to a second hub, read by
   ``worker run``: printed are the checkpoint writes per partition per minute, and the end-to-end
   latency (enqueued to action done) p50/p99, raw and beyond the reorder window (the wait the window
   imposes on purpose).

The figures are ratios and percentiles measured in the same run: these machines are shared.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import orjson
from azure.eventhub import EventData
from azure.eventhub.aio import PartitionContext

from bench.bench_localhub import start_hub
from bench.tables import base_filters, prefixed_filters, rules_yaml
from tests.servers import free_port
from worker import mlevents
from worker.publish import GenerateOptions, generated_events, plan, publish

ROOT = Path(__file__).resolve().parents[1]
PREFETCH = 3000
BATCH = 300


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


async def bare_consumer(connection: str, count: int) -> None:
    from azure.eventhub.aio import EventHubConsumerClient  # noqa: PLC0415

    client = EventHubConsumerClient.from_connection_string(connection, consumer_group="$Default")
    marks = Marks(count)
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
    print(orjson.dumps({"sustained": marks.sustained(), "whole": marks.whole()}).decode(), flush=True)
    await client.close()
    receiving.cancel()


class Marks:
    """When a count of events passed the first event, 10%, 90% and all of the stream."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.times: dict[float, float] = {}

    def update(self, done: float, now: float) -> None:
        for mark in (0.0, 0.1, 0.9, 1.0):
            if mark not in self.times and done > 0 and done >= mark * self.count:
                self.times[mark] = now

    def next_mark(self, done: float) -> float:
        """The count of the next mark to pass."""
        return next((mark * self.count for mark in (0.1, 0.9, 1.0) if mark not in self.times), self.count) - done

    def sustained(self) -> float:
        """Events per second between the 10% and 90% marks: the steady rate, without the start and the tail."""
        return 0.8 * self.count / (self.times[0.9] - self.times[0.1])

    def whole(self) -> float:
        """Events per second from the first event to the last."""
        return self.count / (self.times[1.0] - self.times[0.0])


def run_bare(connection: str, count: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.bench_worker", "--bare", connection, str(count)],
        capture_output=True,
        check=True,
        cwd=ROOT,
        timeout=600,
    )
    result: dict[str, float] = orjson.loads(out.stdout.splitlines()[-1])
    return result


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
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for match in re.finditer(r"^(azml_worker_\w+)(?:\{[^}]*\})? (\S+)$", text, re.M):
        out[match[1]] = out.get(match[1], 0.0) + float(match[2])
    return out


def outcomes(metrics: dict[str, float]) -> float:
    return metrics.get("azml_worker_events_total", 0.0)


def run_worker_throughput(connection: str, count: int, rules: Path, work: Path) -> dict[str, float]:
    port = free_port()
    env = worker_env(connection, work, rules, port, WORKER_LOG_LEVEL="warning", WORKER_REORDER_WINDOW="0.5")
    with (work / "throughput.log").open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "worker", "run"], env=env, cwd=work, stdout=log, stderr=log)
    try:
        marks = Marks(count)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            metrics = scrape(port)
            now = time.perf_counter()
            if metrics.get("azml_worker_events_read_total", 0.0) and 0.0 not in marks.times:
                marks.times[0.0] = now
            done = outcomes(metrics)
            if done:
                marks.update(done, now)
            if 1.0 in marks.times:
                return {"sustained": marks.sustained(), "whole": marks.whole()}
            time.sleep(_poll(marks, done, now))
        raise SystemExit("the worker did not finish in time; see throughput.log")
    finally:
        process.terminate()
        process.wait(60)


def _poll(marks: Marks, done: float, now: float) -> float:
    """Seconds to the next scrape: often near the marks, whose times are measured, and seldom between
    them, where a scrape would only take the worker's time (the /metrics page is large)."""
    started = marks.times.get(0.0)
    if started is None or not done:
        return 0.01
    rate = done / max(now - started, 1e-3)
    return min(max(marks.next_mark(done) / rate / 4, 0.005), 0.25)


async def stream(connection: str, deliveries: list[mlevents.Delivery], per_second: int) -> dict[str, float]:
    """Publish at ``per_second``; return each event id's send time (wall clock, as the log's)."""
    from azure.eventhub.aio import EventHubProducerClient  # noqa: PLC0415

    from worker.placement import partition_for_key  # noqa: PLC0415

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
        while not scrape(port).get("azml_worker_partitions_owned"):
            time.sleep(0.1)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rate", type=int, default=1000, help="events per second of the steady stream")
    parser.add_argument("--seconds", type=int, default=30, help="length of the steady stream")
    parser.add_argument("--window", type=float, default=1.0, help="reorder window of the steady stream")
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
            bare = run_bare(connection, args.events)
            worker = run_worker_throughput(connection, args.events, rules, work)
        print("events/s, sustained (between the 10% and 90% marks) and over the whole stream (first to last):")
        for name, rates in (
            ("(a) bare SDK consumer (receive_batch):            ", bare),
            ("(b) worker run, 50 rules, log actions, checkpoints:", worker),
        ):
            print(f"{name} {rates['sustained']:>7,.0f}   {rates['whole']:>7,.0f}")
        print(
            f"(b) / (a): sustained {worker['sustained'] / bare['sustained']:.0%} (target: at least 80%); "
            f"whole stream {worker['whole'] / bare['whole']:.0%} (with the worker's start-up of its partitions and "
            "the reorder window's wait for the last events)"
        )
        with local_hub("steady", args.partitions, args.rate * args.seconds * 2) as connection:
            run_steady(connection, args.partitions, args.rate, args.seconds, args.window, work)


if __name__ == "__main__":
    main()
