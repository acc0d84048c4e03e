"""Replay throughput against the raw limit, and replay memory for 100,000 vs 1,000,000 events.

In one run, on the same generated capture file (~1 KB Event Grid events; a 50-rule table):

(a) the raw limit: fastavro reading the file plus ``orjson.loads`` of every body;
(b) ``replay --dry-run`` end to end (the CLI in-process: plan, read, decode, guard, dedupe,
    reorder, evaluate, account, report);

and their ratio. Between them it prints three stages of (b) measured alone, so the cost of each
part is visible: reading the file into the worker's message records, decoding them into event
records (orjson included), and the rules table's verdict on each event. The last is the floor of
any replay that applies the rules: no dedupe, ordering, accounting or checkpoint tracking, which
(b) adds; (b)'s time per event against the floor's is the replay's own cost (target: at most 1.5x). Then the peak
memory (max RSS) of ``replay --dry-run`` in a fresh process over 100,000 and over 1,000,000 events
(target: within 20 MB of each other).

Then the replay on every core: ``replay --dry-run`` of a capture of 4 partitions in one process
(``--processes 1``) and in one process per usable core (at most 4), alternating, round after round;
it prints the cores used, each one's median events per second (start-up, planning and report
included) and the median ratio of the rounds (target: at least 0.8 x the cores).

    python -m bench.bench_replay [--events N] [--large N] [--repeat R] [--parallel-events N] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from pathlib import Path

import fastavro
import orjson

from bench.tables import base_filters, prefixed_filters, rules_yaml
from worker.cli import main as cli_main
from worker.core.decoding import decode
from worker.core.rules import RulesTable
from worker.events import Event
from worker.replay.capture import number_messages, read_capture, write_capture
from worker.replay.pool import usable_cores
from worker.rulefiles.loading import load_rules
from worker.sending import mlevents

_PEAK = """
import resource, sys
from worker.cli import main
code = main(sys.argv[1:])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(code)
"""


def write_file(path: Path, count: int, seed: int, partition: str = "0") -> Path:
    """A capture file of ``count`` ~1 KB Event Grid events under the default layout."""
    path = path / "bench" / "ml-events" / partition / "2026" / "11" / "01" / "09" / "00" / "00.avro"
    path.parent.mkdir(parents=True, exist_ok=True)
    bodies = mlevents.bodies(count, mlevents.Options(seed=seed, body_size=1_000))
    start = mlevents.Options().start
    messages = number_messages(bodies, start=start, step=timedelta(milliseconds=300), partition_id=partition)
    with path.open("wb") as stream:
        write_capture(stream, messages)
    return path


def raw_limit(path: Path) -> int:
    count = 0
    with path.open("rb") as stream:
        for record in fastavro.reader(stream):
            orjson.loads(record["Body"])  # type: ignore[call-overload,index]
            count += 1
    return count


def read_records(path: Path) -> int:
    """Stage: the capture file into message records (fastavro, positions, enqueued times)."""
    count = 0
    with path.open("rb") as stream:
        for _ in read_capture(stream, partition_id="0", name=path.name):
            count += 1
    return count


def decode_records(path: Path) -> int:
    """Stage: message records decoded into event records (orjson and the envelope checks)."""
    count = 0
    with path.open("rb") as stream:
        for message in read_capture(stream, partition_id="0", name=path.name):
            count += len(decode(message))
    return count


def evaluate_records(table: RulesTable, path: Path) -> int:
    """Stage: event records evaluated against the rules table (the matches found, nothing else done)."""
    count = 0
    evaluate = table.evaluate
    with path.open("rb") as stream:
        for message in read_capture(stream, partition_id="0", name=path.name):
            for event in decode(message):
                if isinstance(event, Event):
                    evaluate(event)
                count += 1
    return count


def replay_args(rules: Path, source: Path, processes: int = 1) -> list[str]:
    options = ["--dry-run", "--log-level", "warning", "--processes", str(processes)]
    return ["replay", *options, "--rules", str(rules), str(source)]


def dry_run(rules: Path, source: Path, processes: int = 1) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        code = cli_main(replay_args(rules, source, processes))
    if code != 0:
        raise SystemExit(f"replay failed with exit code {code}")


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def peak_rss_mb(rules: Path, source: Path) -> float:
    done = subprocess.run(
        [sys.executable, "-c", _PEAK, *replay_args(rules, source)], check=True, capture_output=True, text=True
    )
    return int(done.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--large", type=int, default=1_000_000, help="events for the second memory reading")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--parallel-events", type=int, default=480_000, help="events of the 4-partition capture (all cores)"
    )
    parser.add_argument("--workdir", type=Path, help="keep the generated files here (default: a temporary folder)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        work = args.workdir or Path(scratch)
        rules = work / "rules-50.yaml"
        work.mkdir(parents=True, exist_ok=True)
        rules.write_text(rules_yaml(base_filters() + prefixed_filters(40)))
        small = write_file(work / "small", args.events, seed=1)
        size_mb = small.stat().st_size / 1e6
        print(f"{args.events} events, {size_mb:.1f} MB capture file (null codec); 50-rule table; best of {args.repeat}")

        raw_rate = args.events / best(lambda: raw_limit(small), args.repeat)
        stages = (
            ("  stage: into message records", read_records),
            ("  stage: + decoded into event records", decode_records),
            ("  stage: + the rules' verdicts (floor)", partial(evaluate_records, load_rules([rules]))),
        )
        rates = [(label, args.events / best(partial(fn, small), args.repeat)) for label, fn in stages]
        full_rate = args.events / best(lambda: dry_run(rules, small), args.repeat)
        rows = [("(a) raw limit: fastavro + orjson.loads", raw_rate), *rates, ("(b) replay --dry-run", full_rate)]
        for label, rate in rows:
            print(f"{label:<40} {rate:>10,.0f} events/s  ({1e6 / rate:6.2f} us/event, {rate / raw_rate:4.0%} of (a))")
        floor = rates[-1][1]
        print(
            f"(b) / (a): {full_rate / raw_rate:.0%} (the floor, with nothing of the replay but the rules' "
            f"verdicts, reaches {floor / raw_rate:.0%})"
        )
        print(f"(b) / floor, per event: {floor / full_rate:.2f}x the floor's time (target: at most 1.5x)")

        large = write_file(work / "large", args.large, seed=2)
        small_peak, large_peak = peak_rss_mb(rules, small), peak_rss_mb(rules, large)
        print(f"peak memory of replay --dry-run: {args.events:>9,} events {small_peak:7.1f} MB")
        print(f"                                 {args.large:>9,} events {large_peak:7.1f} MB")
        print(f"difference: {large_peak - small_peak:+.1f} MB (target: within 20 MB)")

        every_core(rules, work / "partitioned", args.parallel_events, args.repeat)


def every_core(rules: Path, root: Path, events: int, rounds: int) -> None:
    """``replay --dry-run`` of 4 partitions: one process against one per usable core, alternating."""
    partitions = 4
    for partition in range(partitions):
        write_file(root, events // partitions, seed=10 + partition, partition=str(partition))
    os.sync()  # the files on disk before the clock starts: writing them back would take a core meanwhile
    cores = min(usable_cores(), partitions)
    print(f"replay, all cores, on a capture of {partitions} partitions: {events:,} events; cores used: {cores}")
    if cores < 2:
        print("  one usable core: nothing to compare")
        return
    one: list[float] = []
    every: list[float] = []
    for _ in range(rounds):
        one.append(events / best(lambda: dry_run(rules, root, 1), 1))
        every.append(events / best(lambda: dry_run(rules, root, cores), 1))
    ratios = [b / a for a, b in zip(one, every, strict=True)]
    print(f"  one process (--processes 1)      {statistics.median(one):>10,.0f} events/s")
    print(f"  all cores (--processes {cores})       {statistics.median(every):>10,.0f} events/s")
    print(
        f"  all cores / one process: {statistics.median(ratios):.2f} (median of {rounds}; rounds "
        f"{', '.join(f'{r:.2f}' for r in ratios)}; target: at least {0.8 * cores:.1f}, 0.8 x {cores} cores)"
    )


if __name__ == "__main__":
    main()
