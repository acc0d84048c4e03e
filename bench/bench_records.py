"""What the named-tuple records buy: building the records made per event, against frozen dataclasses.

The core builds a ``Position``, a ``Message`` and an ``Event`` for every event it reads, and a
``Work`` for every matched one. They are named tuples (``worker.events``, ``worker.core.partition``).
In one run this prints the cost of building each, next to a frozen slotted dataclass with the same
fields (made here with ``dataclasses.make_dataclass``: what the records would otherwise be) and to
``orjson.loads`` of a typical event body, the baseline every event pays anyway.

    python -m bench.bench_records [--count N] [--repeat R]
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from functools import partial
from typing import Any

import orjson

from bench.bench_rules import measure
from worker.core.decoding import decode
from worker.core.partition import Work
from worker.events import Event, Message, Position
from worker.sending import mlevents


def _frozen_twin(record: type) -> type:
    """A frozen slotted dataclass with the fields of the named tuple ``record``, in its order."""
    fields = [(name, object) for name in record._fields]  # type: ignore[attr-defined]
    twin: type = dataclasses.make_dataclass(f"Frozen{record.__name__}", fields, frozen=True, slots=True)
    return twin


def _best(build: Callable[[], object], count: int, repeat: int) -> float:
    """Best mean seconds per call of ``build`` over ``repeat`` runs of ``count`` calls."""

    def calls() -> None:
        for _ in range(count):
            build()

    return measure(calls, count, repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    body = next(mlevents.bodies(1, mlevents.Options(seed=7, body_size=1_000)))
    (event,) = decode(Message(body, Position("0", "0", 0, None)))
    assert isinstance(event, Event)
    samples: dict[type, tuple[Any, ...]] = {
        Position: tuple(event.position),
        Message: tuple(event.message),
        Event: tuple(event),
        Work: (event, (), event.subject or "", (0, 0, 0, 0), False, None, None, None),
    }
    parse = _best(lambda: orjson.loads(body), args.count, args.repeat)
    print(f"{args.count:,} builds of each record, best of {args.repeat} runs")
    print(f"baseline  orjson.loads of a ~1 KB event body   {parse * 1e9:7.0f} ns")
    saved = 0.0
    for record, values in samples.items():
        twin = _frozen_twin(record)
        named = _best(partial(record, *values), args.count, args.repeat)
        frozen = _best(partial(twin, *values), args.count, args.repeat)
        saved += frozen - named
        print(
            f"{record.__name__:<9} named tuple {named * 1e9:5.0f} ns   frozen dataclass {frozen * 1e9:5.0f} ns   "
            f"({named / frozen:4.0%} of it)"
        )
    print(
        f"saved per matched event: {saved * 1e9:.0f} ns, {saved / parse:.0%} of the body's parse "
        "(Position, Message, Event and Work together)"
    )


if __name__ == "__main__":
    main()
