"""Rules evaluation cost per event, for tables of 10, 50 and 10,000 rules over the same events.

Prints the mean cost per event of ``RulesTable.evaluate`` and, as the baseline measured in the
same run, the cost of ``orjson.loads`` on the same bodies. Targets: the 10,000-rule table within
3x of the 10-rule table; a typical 50-rule table under 10 microseconds per event.

    python -m bench.bench_rules [--events N] [--repeat R]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import orjson

from bench.tables import Filter, base_filters, prefixed_filters
from worker.actions import ActionSpec
from worker.actions.log import LogParams
from worker.events import Event, decode_body
from worker.filters import compile_filter
from worker.mlevents import bodies
from worker.rules import Rule, RulesTable

_LOG = (ActionSpec("log", 0, LogParams()),)


def _rule(name: str, raw: Filter) -> Rule:
    problems: list[str] = []
    compiled = compile_filter(raw, ("rules", 0, "filter"), lambda _at, message: problems.append(message))
    if compiled is None:
        raise ValueError(f"{name}: {problems}")
    return Rule(name, compiled, _LOG)


def measure(fn: Callable[[], object], count: int, repeat: int) -> float:
    """Best mean seconds per item over ``repeat`` runs (the least disturbed run)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - start) / count)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
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


if __name__ == "__main__":
    main()
