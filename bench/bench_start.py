"""Workers started together: what settling a claimed partition saves, and what it costs.

1. Start. Four ``worker run`` subprocesses started at the same moment on a local hub of 8 partitions
   nobody has claimed, while events are published at a steady rate from that moment, checkpoints on
   the test bed's Blob Storage (Azurite behind its strict layer), every setting at its default
   (balancing interval 10 s), their first balancing rounds let through together by the test bed's
   start gate (tests/start_gate.py); each round run twice, with the settle time at its default (one
   and a half balancing intervals) and off (``WORKER_CLAIM_SETTLE=0``). Printed per round: the actions repeated
   (an event acted on by two workers), the partitions that moved at the start, and whether each
   repeat is explained by one of those steals; then, over the rounds, when the first action came and
   when every partition had acted (seconds after the workers started), with the settle time and
   without: the cost.
2. Scale-out by one. A worker joining one that owns every partition of a hub with a stream: seconds
   from its start to its first action, with the settle time and without.
3. Scale-out 1 -> 8. Seven workers started at once beside one that owns all 32 partitions of a hub:
   seconds until the partitions are spread evenly (4 each), and until every worker acts.

The figures are compared within the same run: these machines are shared.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
from pathlib import Path

from tests.servers import Azurite, start_azurite, stop
from tests.together import Start, join_running, scale_out, start_together
from worker.log import configure

MODES = {"settle (default)": {}, "settle off": {"claim_settle": 0}}
#: Each mode's directory name.
NAMES = {"settle (default)": "settle", "settle off": "off"}


def _row(mode: str, number: int, start: Start) -> str:
    moved = start.steals
    acted_before = sum(1 for leave in moved if leave.settled)
    unexplained = len(start.unexplained())
    return (
        f"  {mode:<17} round {number:>2}: {len(start.published):>5} events, {start.repeated:>4} actions repeated "
        f"({unexplained} not explained by a steal); {len(moved)} partitions moved at the start, {acted_before} of them "
        f"after acting; first action {min(start.first_action.values()):5.1f} s, every partition "
        f"{max(start.first_action.values()):5.1f} s"
    )


async def main(arguments: argparse.Namespace) -> None:
    # The live test bed's short intervals are its own: here every setting is the worker's default.
    settings: dict[str, object] = {
        "load_balancing_interval": arguments.interval,
        "checkpoint_interval": 10.0,
        "reorder_window": 5.0,
        "max_wait": 1.0,
    }
    configure("warning", "console")  # the local hubs run in this process: only their warnings
    with contextlib.ExitStack() as stack:
        if arguments.keep:
            root = Path(tempfile.mkdtemp(prefix="bench-start-"))
            print(f"the workers' directories, kept: {root}")
        else:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-start-")))
        azurite = start_azurite(root / "azurite")
        try:
            await _starts(root, azurite, arguments, settings)
            await _joins(root, azurite, arguments.joins, settings)
            await _scaling(root, azurite, arguments.scale, settings)
        finally:
            stop(azurite)


async def _starts(root: Path, azurite: Azurite, arguments: argparse.Namespace, settings: dict[str, object]) -> None:
    if not arguments.rounds:
        return
    print(
        f"start: 4 workers at once on 8 unclaimed partitions, {arguments.events} events at {arguments.rate:g}/s, "
        f"balancing interval {arguments.interval:g} s"
    )
    starts: dict[str, list[Start]] = {mode: [] for mode in MODES}
    for number in range(1, arguments.rounds + 1):
        for mode, changes in MODES.items():
            start = await start_together(
                root / f"start-{number}-{NAMES[mode]}",
                azurite,
                count=arguments.events,
                per_second=arguments.rate,
                seed=number,
                settings=settings | changes,
            )
            starts[mode].append(start)
            print(_row(mode, number, start), flush=True)
    for mode, done in starts.items():
        repeated = [s.repeated for s in done]
        print(
            f"  {mode:<17}: actions repeated {sum(repeated)} in {len(done)} rounds (per round "
            f"{min(repeated)}..{max(repeated)}); first action median "
            f"{statistics.median(min(s.first_action.values()) for s in done):.1f} s, every partition "
            f"median {statistics.median(max(s.first_action.values()) for s in done):.1f} s"
        )


async def _joins(root: Path, azurite: Azurite, joins: int, settings: dict[str, object]) -> None:
    if not joins:
        return
    print("scale-out by one: a worker joining one that owns all 8 partitions, time to its first action")
    for mode, changes in MODES.items():
        delays = [
            await join_running(root / f"join-{number}-{NAMES[mode]}", azurite, seed=number, settings=settings | changes)
            for number in range(joins)
        ]
        print(
            f"  {mode:<17}: median {statistics.median(delays):.1f} s ({', '.join(f'{d:.1f}' for d in delays)})",
            flush=True,
        )


async def _scaling(root: Path, azurite: Azurite, rounds: int, settings: dict[str, object]) -> None:
    if not rounds:
        return
    print("scale-out 1 -> 8: seven workers joining one that owns all 32 partitions")
    for mode, changes in MODES.items():
        for number in range(rounds):
            balanced, acting = await scale_out(
                root / f"scale-{number}-{NAMES[mode]}", azurite, settings=settings | changes
            )
            print(
                f"  {mode:<17}: partitions spread evenly after {balanced:.1f} s, every worker acting after "
                f"{acting:.1f} s",
                flush=True,
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="start rounds in each mode")
    parser.add_argument("--joins", type=int, default=3, help="scale-out rounds in each mode")
    parser.add_argument("--events", type=int, default=2000, help="events published in each start round")
    parser.add_argument("--rate", type=float, default=80.0, help="events a second")
    parser.add_argument("--scale", type=int, default=1, help="scale-out 1 -> 8 rounds in each mode")
    parser.add_argument("--interval", type=float, default=10.0, help="the balancing interval (the default: 10 s)")
    parser.add_argument("--keep", action="store_true", help="keep the workers' directories (their logs)")
    asyncio.run(main(parser.parse_args()))
