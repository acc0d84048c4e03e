"""Rules evaluation cost per event, for tables of 10, 50 and 10,000 rules over the same events.

Prints the mean cost per event of ``RulesTable.evaluate`` and, as the baseline measured in the
same run, the cost of ``orjson.loads`` on the same bodies. Targets: the 10,000-rule table within
3x of the 10-rule table; a typical 50-rule table under 10 microseconds per event.

Then what rules that remember cost: the same stream of generated events (runs reporting Running,
then completing or failing; failures of several experiments) fed through a partition's core
(``PartitionCore.receive``, every released work's actions counted as a dry run counts them, and
finished) with the 10-rule table, and with the same table plus an ``expect`` rule (a run that does
not end within 30 minutes) and a ``group`` rule (failed runs by experiment). The two alternate,
round after round (the order swapped each round), so that a noisy machine weighs on both alike;
it prints the median cost per event of each and the median of the rounds' ratios.

    python -m bench.bench_rules [--events N] [--repeat R] [--stream N] [--rounds R]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import timedelta

import orjson

from bench.tables import Filter, base_filters, leaf, prefixed_filters
from worker.actions import ActionSpec
from worker.actions.base import ActionFate
from worker.actions.log import LogParams
from worker.actions.templates import Template
from worker.core.accounting import Tally
from worker.core.decoding import decode_body
from worker.core.filters import CompiledFilter, compile_filter
from worker.core.partition import PartitionCore
from worker.core.rules import Expect, Group, Rule, RulesTable
from worker.events import Event, Message
from worker.replay.capture import number_messages
from worker.sending.mlevents import RUN_COMPLETED, RUN_STATUS_CHANGED, Options, bodies

_LOG = (ActionSpec("log", 0, LogParams()),)


def _rule(name: str, raw: Filter, *, expect: Expect | None = None, group: Group | None = None) -> Rule:
    return Rule(name, _compiled(name, raw), _LOG, expect=expect, group=group)


def _compiled(name: str, raw: Filter) -> CompiledFilter:
    problems: list[str] = []
    compiled = compile_filter(raw, ("rules", 0, "filter"), lambda _at, message: problems.append(message))
    if compiled is None:
        raise ValueError(f"{name}: {problems}")
    return compiled


def measure(fn: Callable[[], object], count: int, repeat: int) -> float:
    """Best mean seconds per item over ``repeat`` runs (the least disturbed run)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - start) / count)
    return best


def remembering_rules() -> list[Rule]:
    """An ``expect`` rule (a run that reports Running and does not end within 30 minutes) and a
    ``group`` rule (failed runs, one notification per experiment every 10 minutes at most)."""
    status = "data.runStatus"
    ended: Filter = {
        "any": [
            {"includedEventTypes": [RUN_COMPLETED]},
            {
                "includedEventTypes": [RUN_STATUS_CHANGED],
                "advancedFilters": [leaf("StringIn", status, ["Completed", "Failed", "Canceled"])],
            },
        ]
    }
    running = {"includedEventTypes": [RUN_STATUS_CHANGED], "advancedFilters": [leaf("StringIn", status, ["Running"])]}
    failed = {"includedEventTypes": [RUN_STATUS_CHANGED], "advancedFilters": [leaf("StringIn", status, ["Failed"])]}
    expect = Expect(30 * 60.0, "30m", _compiled("run-stuck", ended), Template.compile("{{ subject }}"))
    group = Group(Template.compile("{{ data.experimentName }}"), 2 * 60.0, 10 * 60.0)
    return [_rule("run-stuck", running, expect=expect), _rule("failed-runs", failed, group=group)]


def drive(table: RulesTable, messages: Sequence[Message]) -> tuple[float, Tally]:
    """Seconds to feed ``messages`` through a fresh core for ``table``, and its counts.

    Every released work is handled as a dry run handles it: its actions counted as planned, then the
    work finished; the source's end releases what the reorder buffer still holds."""
    core = PartitionCore("0", table)
    receive, finish, count = core.receive, core.finish, core.tally.count_action
    gc.collect()
    start = time.perf_counter()
    for message in messages:
        for work in receive(message):
            for rule in work.rules:
                for spec in rule.actions:
                    count(rule.name, spec.type, ActionFate.PLANNED)
            finish(work)
    for work in core.release_all():
        finish(work)
    return time.perf_counter() - start, core.counts()


def compare_remembering(base: list[Rule], count: int, rounds: int) -> None:
    """The core's cost per event with ``base``, and with ``base`` and the rules that remember."""
    start = Options().start
    messages = list(number_messages(bodies(count), start=start, step=timedelta(seconds=1)))
    tables = {"plain": RulesTable.build(base), "remembering": RulesTable.build(base + remembering_rules())}
    seconds: dict[str, list[float]] = {name: [] for name in tables}
    ratios: list[float] = []
    tallies: dict[str, Tally] = {}
    for round_ in range(rounds):
        for name in list(tables) if round_ % 2 == 0 else reversed(tables):
            elapsed, tallies[name] = drive(tables[name], messages)
            seconds[name].append(elapsed)
        ratios.append(seconds["remembering"][-1] / seconds["plain"][-1])
    tally = tallies["remembering"]
    print(
        f"{len(messages)} generated Azure ML events through a partition's core "
        f"(receive, dry-run actions, finish), {rounds} alternating rounds, medians"
    )
    costs = {name: statistics.median(runs) / len(messages) for name, runs in seconds.items()}
    print(f"core  10 rules                         {costs['plain'] * 1e9:7.0f} ns/event")
    print(f"core  10 rules + expect + group        {costs['remembering'] * 1e9:7.0f} ns/event")
    print(
        f"      remembering / plain: {statistics.median(ratios):.2f}x "
        f"(rounds: {min(ratios):.2f}x to {max(ratios):.2f}x)"
    )
    print(
        f"      run-stuck: started {tally.expect_started['run-stuck']}, "
        f"fulfilled {tally.expect_fulfilled['run-stuck']}, expired {tally.expect_expired['run-stuck']}; "
        f"failed-runs: joined {tally.group_joined['failed-runs']}, notified {tally.group_notified['failed-runs']}; "
        f"pending at the end: {sum(tally.pending.values())}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--stream", type=int, default=20_000, help="events of the core's comparison")
    parser.add_argument("--rounds", type=int, default=9, help="alternating rounds of the core's comparison")
    args = parser.parse_args()

    raw_bodies = list(bodies(args.events))
    events = [e for b in raw_bodies for e in decode_body(b) if isinstance(e, Event)]
    base = [_rule(n, f) for n, f in base_filters()]
    tables = {
        "10 rules": RulesTable.build(base),
        "50 rules": RulesTable.build(base + [_rule(n, f) for n, f in prefixed_filters(40)]),
        "10,000 rules": RulesTable.build(base + [_rule(n, f) for n, f in prefixed_filters(9_990)]),
    }

    def parse_all() -> None:
        for body in raw_bodies:
            orjson.loads(body)

    parse = measure(parse_all, len(raw_bodies), args.repeat)
    print(f"{len(events)} generated Azure ML events, best of {args.repeat} runs")
    print(f"baseline  orjson.loads of the body  {parse * 1e6:7.2f} us/event")
    costs = {}
    for name, table in tables.items():
        evaluate = table.evaluate

        def run(evaluate: Callable[[Event], object] = evaluate) -> None:
            for event in events:
                evaluate(event)

        costs[name] = measure(run, len(events), args.repeat)
        matched = sum(1 for e in events if table.evaluate(e).rules)
        print(
            f"evaluate  {name:<12}  {costs[name] * 1e6:7.2f} us/event  "
            f"({costs[name] / parse:4.2f}x the parse; {matched} events matched)"
        )
    ratio = costs["10,000 rules"] / costs["10 rules"]
    print(f"10,000 rules / 10 rules: {ratio:.2f}x (target: at most 3x)")
    print(f"50 rules: {costs['50 rules'] * 1e6:.2f} us/event (target: under 10 us)")
    print()
    compare_remembering(base, args.stream, args.rounds)


if __name__ == "__main__":
    main()
