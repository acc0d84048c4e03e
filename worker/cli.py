"""The command line: ``python -m worker COMMAND`` (also installed as ``azml-worker``).

Exit codes: 0 success, 2 invalid input (rules, bodies, arguments), 1 unexpected failure.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import orjson

from worker import mlevents
from worker.errors import RulesError
from worker.events import Event, InvalidEvent, Message, Position, decode, decode_body
from worker.rules import Outcome, RulesTable, explain
from worker.rulesfile import load_rules, paths_of

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
DEFAULT_DEMO_RULES = Path("rules/examples.yaml")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_INVALID
    try:
        code: int = args.handler(args, sys.stdout)
    except RulesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="azml-worker",
        description="Turn Azure Machine Learning events (Event Grid -> Event Hubs) into actions.",
    )
    parser.set_defaults(command=None)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    validate = commands.add_parser("validate", help="check rules files; exit 0 when valid, 2 otherwise")
    validate.add_argument("files", nargs="+", metavar="FILE", help="rules files or directories of *.yaml")
    validate.set_defaults(command="validate", handler=_validate)

    why = commands.add_parser("explain", help="show which rules match the events of one message body, and why")
    why.add_argument("--rules", action="append", required=True, metavar="FILE", help="rules file (repeatable)")
    why.add_argument("body", metavar="BODY_FILE", help="a file holding one Event Hubs message body; '-' for stdin")
    why.set_defaults(command="explain", handler=_explain)

    demo = commands.add_parser("demo", help="evaluate rules against generated Azure ML events and print what fires")
    demo.add_argument("--rules", action="append", metavar="FILE", help=f"rules file (default: {DEFAULT_DEMO_RULES})")
    demo.add_argument("--count", type=int, default=40, help="events to generate (default: 40)")
    demo.add_argument("--seed", type=int, default=7, help="random seed (default: 7)")
    demo.set_defaults(command="demo", handler=_demo)
    return parser


def _validate(args: argparse.Namespace, out: TextIO) -> int:
    files = paths_of(args.files)
    table = load_rules(files)
    for warning in table.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"ok: {len(table.rules)} rules in {len(files)} file{'s' * (len(files) != 1)}", file=out)
    return EXIT_OK


def _explain(args: argparse.Namespace, out: TextIO) -> int:
    table = load_rules(paths_of(args.rules))
    try:
        body = sys.stdin.buffer.read() if args.body == "-" else Path(args.body).read_bytes()
    except OSError as exc:
        print(f"error: cannot read the body file: {exc}", file=sys.stderr)
        return EXIT_INVALID
    invalid = 0
    for item in decode_body(body):
        if isinstance(item, InvalidEvent):
            invalid += 1
            where = "the body" if item.index is None else f"event #{item.index}"
            print(f"error: {args.body}: {where} is invalid ({item.error.reason}): {item.error}", file=sys.stderr)
            continue
        for result in explain(table, item):
            line = {
                "event_id": item.id,
                "event_type": item.type,
                "subject": item.subject,
                "rule": result.rule,
                "matched": result.matched,
                "reason": result.reason,
            }
            out.write(orjson.dumps(line).decode() + "\n")
        if not table.handles(item.type):
            print(f"note: event {item.id}: no rule names event type {item.type!r}", file=sys.stderr)
    return EXIT_INVALID if invalid else EXIT_OK


def _demo(args: argparse.Namespace, out: TextIO) -> int:
    table = load_rules(paths_of(args.rules or [DEFAULT_DEMO_RULES]))
    messages = _demo_messages(args.count, args.seed)
    outcomes: Counter[str] = Counter()
    fired: Counter[str] = Counter()
    print(f"Evaluating {len(table.rules)} rules against {len(messages)} sample messages\n", file=out)
    for message in messages:
        for item in decode(message):
            outcome = _show_one(table, item, out)
            outcomes[outcome] += 1
            if isinstance(item, Event) and outcome == Outcome.MATCHED:
                fired.update(rule.name for rule in table.evaluate(item).rules)
    print("\nOutcomes:", ", ".join(f"{name} {count}" for name, count in sorted(outcomes.items())), file=out)
    print("Rules fired:", ", ".join(f"{name} {count}" for name, count in sorted(fired.items())) or "none", file=out)
    return EXIT_OK


def _show_one(table: RulesTable, item: Event | InvalidEvent, out: TextIO) -> str:
    if isinstance(item, InvalidEvent):
        print(f"  invalid   seq {item.position.sequence_number}: {item.error}", file=out)
        return "invalid"
    verdict = table.evaluate(item)
    short = item.type.removeprefix(mlevents.PREFIX)
    if verdict.outcome is Outcome.MATCHED:
        for action in verdict.plan(item):
            params = action.spec.params.model_dump(exclude_none=True, mode="json")
            detail = params.get("message") or params.get("path") or ""
            print(
                f"  fire      {short:<20} {item.subject}\n            -> {action.rule}: {action.spec.type} {detail}",
                file=out,
            )
    else:
        print(f"  {verdict.outcome.value:<9} {short:<20} {item.subject}", file=out)
    return verdict.outcome.value


def _demo_messages(count: int, seed: int) -> list[Message]:
    bodies = list(mlevents.bodies(count, mlevents.Options(seed=seed)))
    foreign = mlevents.Options(seed=seed + 1, topic=mlevents.DEFAULT_TOPIC.replace("ml-prod", "ml-sandbox"))
    bodies.extend(mlevents.bodies(2, foreign))
    bodies.extend(mlevents.bodies(2, mlevents.Options(seed=seed + 2, schema="cloudevents", pascal_case=True)))
    bodies.append(b'{"not": "an event"}')
    return [Message(body, Position("0", str(i * 1024), i)) for i, body in enumerate(bodies)]
