"""The local hub under a real SDK consumer: events per second, and whether the hub is the bottleneck.

In one run: the hub in a subprocess (``python -m worker localhub``, one partition); N ~1 KB
Azure ML events published to it; then one azure-eventhub async consumer (``receive_batch``,
prefetch 3,000) reads them all from the start. Prints the consumer's events per second (once
receiving, and including connecting), the CPU
seconds per 10,000 events of the hub (from /proc, during the read only) and of the consumer, and
their ratio (target: the hub at most half the consumer's CPU per event).

    python -m bench.bench_localhub [--events N] [--prefetch P]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import subprocess
import sys
import time
from pathlib import Path

from azure.eventhub import EventData
from azure.eventhub.aio import EventHubConsumerClient, PartitionContext

from bench.processes import cpu_seconds
from worker.sending import mlevents
from worker.sending.publish import Outgoing, publish

ROOT = Path(__file__).resolve().parents[1]


def start_hub(events: int, name: str = "bench", partitions: int = 1) -> tuple[subprocess.Popen[bytes], str]:
    """The local hub in a subprocess on any free port, keeping ``events`` per partition; its connection string."""
    command = [sys.executable, "-m", "worker", "localhub", "--port", "0", "--eventhub", name]
    command += ["--partitions", str(partitions), "--retention-events", str(events), "--retention-mb", "1024"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, cwd=ROOT)
    assert process.stdout is not None
    line = process.stdout.readline().decode().strip()
    if not line:
        raise SystemExit("the local hub did not start")
    return process, line


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def fill(connection_string: str, events: int) -> None:
    bodies = mlevents.bodies(events, mlevents.Options(seed=3, body_size=1_000))
    await publish(connection_string, (Outgoing(body, {}, None) for body in bodies), partition_id="0")


async def consume(connection_string: str, events: int, prefetch: int) -> tuple[float, float]:
    """Read ``events`` from the start; the seconds it took, in all and from the first batch on."""
    received = 0
    first: tuple[float, int] | None = None
    done = asyncio.Event()
    client = EventHubConsumerClient.from_connection_string(connection_string, "$Default", load_balancing_interval=0.5)

    async def on_batch(context: PartitionContext, batch: list[EventData]) -> None:
        nonlocal received, first
        if first is None:
            first = (time.perf_counter(), len(batch))
        received += len(batch)
        if received >= events:
            done.set()

    start = time.perf_counter()
    async with client:
        task = asyncio.create_task(
            client.receive_batch(
                on_batch, partition_id="0", starting_position="-1", prefetch=prefetch, max_batch_size=prefetch
            )
        )
        await asyncio.wait_for(done.wait(), 600)
        end = time.perf_counter()
        await client.close()
        await task
    assert first is not None
    steady = (end - first[0]) * events / (events - first[1])  # the first batch's events at the steady rate
    return end - start, steady


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--prefetch", type=int, default=3_000)
    args = parser.parse_args()

    hub, connection_string = start_hub(args.events)
    try:
        fill_start = time.perf_counter()
        asyncio.run(fill(connection_string, args.events))
        fill_rate = args.events / (time.perf_counter() - fill_start)
        hub_before, own_before = cpu_seconds(hub.pid), own_cpu_seconds()
        elapsed, steady = asyncio.run(consume(connection_string, args.events, args.prefetch))
        hub_cpu, own_cpu = cpu_seconds(hub.pid) - hub_before, own_cpu_seconds() - own_before
    finally:
        hub.terminate()
        hub.wait(10)
        if hub.stdout is not None:
            hub.stdout.close()
    per_10k = 10_000 / args.events
    print(f"{args.events:,} events of ~1 KB on one partition (published at {fill_rate:,.0f} events/s)")
    print(f"consumer (receive_batch, prefetch {args.prefetch:,}): {args.events / steady:10,.0f} events/s")
    print(f"  (including connecting and the first batch: {args.events / elapsed:,.0f} events/s)")
    print(f"hub CPU per 10,000 events delivered:      {hub_cpu * per_10k:6.3f} s")
    print(f"consumer CPU per 10,000 events received:  {own_cpu * per_10k:6.3f} s")
    print(f"hub / consumer CPU per event: {hub_cpu / own_cpu:.2f} (target: at most 0.50)")


if __name__ == "__main__":
    main()
