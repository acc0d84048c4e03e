"""The command line: ``python -m worker COMMAND`` (also installed as ``azml-worker``).

Exit codes: 0 success, 2 invalid input (rules, bodies, arguments), 1 unexpected failure. Each
command loads what it runs when it runs: ``validate`` and ``explain`` import no network library.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import sys
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar, cast, get_args

import orjson
import structlog

from worker.config import (
    ConnectionSettings,
    RunSettings,
    add_flags,
    env_name,
    load_azure_settings,
    load_connection_settings,
    load_settings,
)
from worker.errors import CaptureError, ChildProcessFailed, DeadLetterError, RulesError, SettingsError, SourceError
from worker.keys import split_key
from worker.log import configure as configure_logging
from worker.masking import MASKER, MaskedText
from worker.moments import StartPosition, parse_duration, parse_start
from worker.settings import ConsumerGroupSettings, CoreSettings, DriverSettings, LatePolicy, LogFormat

if TYPE_CHECKING:
    from worker.core.accounting import Tally
    from worker.core.rules import RulesTable
    from worker.replay.backtest import Backtest
    from worker.replay.pool import ReplayJob
    from worker.replay.run import ReplaySettings
    from worker.rulefiles.directories import Fingerprint

log = structlog.get_logger("worker.cli")

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
#: Realistic Azure ML events as Event Hubs Capture stores them (scripts/make_sample_capture.py).
SAMPLE_CAPTURE = Path(__file__).parent / "samples" / "capture"
#: The example scenarios, acting locally (log lines and a file).
DEFAULT_DEMO_RULES = Path(__file__).parent / "samples" / "demo-rules.yaml"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_INVALID
    # Everything a command prints goes through the masking of secrets, its errors included; but for the
    # local hub's connection string, whose key the hub does not check: printing it is the command's job.
    out = sys.stdout if args.command == "localhub" else MaskedText(sys.stdout)
    with contextlib.redirect_stderr(MaskedText(sys.stderr)):
        try:
            code: int = args.handler(args, out)
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
    validate.add_argument(
        "--skip-secrets",
        action="store_true",
        help="do not check that the environment holds the secrets the rules reference (${env:NAME})",
    )
    validate.set_defaults(command="validate", handler=_validate)

    why = commands.add_parser("explain", help="show which rules match the events of one message body, and why")
    why.add_argument("--rules", action="append", required=True, metavar="FILE", help="rules file (repeatable)")
    why.add_argument("body", metavar="BODY_FILE", help="a file holding one Event Hubs message body; '-' for stdin")
    why.set_defaults(command="explain", handler=_explain)

    check = commands.add_parser(
        "test",
        help="run rules tests: events in, the rules' matches and planned actions checked; exit 1 when a case fails",
        description="Run rules test files (YAML: the rules they test, and cases of events with what must happen: "
        "which rules match, the actions planned with their parameters rendered, expiries, group notifications). "
        "Nothing is executed and no secret is needed. Exit 0 when every case holds, 1 when one fails, 2 when a "
        "test file or its rules are invalid.",
    )
    check.add_argument("files", nargs="+", metavar="FILE", help="rules test files (*.test.yaml)")
    check.set_defaults(command="test", handler=_test)

    play = commands.add_parser(
        "replay",
        help="replay Event Hubs Capture files through the rules (backtest, or recovery after an outage)",
        description="Replay Event Hubs Capture files (.avro) through the rules and the pipeline, partition by "
        "partition in sequence-number order. Prints the counts at the end.",
    )
    play.add_argument("--rules", action="append", required=True, metavar="FILE", help="rules file (repeatable)")
    _replay_options(play)
    play.add_argument(
        "--from-dead-letters",
        action="store_true",
        help="the SOURCEs are dead-letter lanes: re-drive the actions they hold (after a fix), and only those",
    )
    play.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="a capture file, a directory, or a blob container URL [/prefix] (with --from-dead-letters: a "
        "dead-letter directory or container)",
    )
    play.set_defaults(command="replay", handler=_replay)

    live = commands.add_parser(
        "run",
        help="the live worker: consume the Event Hub, act on its events, checkpoint to Blob Storage",
        description="Consume the Event Hub the Azure ML workspace's Event Grid subscription feeds, sharing its "
        "partitions with the other workers of the consumer group. Every setting is a flag or a WORKER_* variable "
        "(the flag wins). SIGTERM/SIGINT stop cleanly; SIGHUP reloads the rules.",
    )
    add_flags(live)
    live.set_defaults(command="run", handler=_run)

    demo = commands.add_parser(
        "demo",
        help="the live worker on a local hub: publish realistic Azure ML events, act on them, print the counts",
        description="Starts a local hub in-process, publishes realistic Azure ML events to it as Event Grid delivers "
        "them (out of order, some twice, keyed by subject; a few from another workspace, some CloudEvents, one "
        "malformed body), and runs the worker with the demo rules (the example scenarios, acting locally) until "
        "everything is finished; checkpoints go to a local directory. With --capture, replays the bundled Event "
        "Hubs Capture sample instead (the replay options apply then).",
    )
    demo.add_argument(
        "--rules",
        action="append",
        metavar="FILE",
        help="rules file (default: the bundled demo rules, the example scenarios acting locally)",
    )
    demo.add_argument("--events", type=_positive, default=400, metavar="N", help="events to publish (default 400)")
    demo.add_argument(
        "--workdir", type=Path, default=Path("out/demo"), metavar="DIR", help="checkpoints and dead letters"
    )
    demo.add_argument("--capture", action="store_true", help="replay the bundled capture sample instead")
    _replay_options(demo)
    demo.set_defaults(command="demo", handler=_demo, sources=[str(SAMPLE_CAPTURE)])
    _localhub_command(commands)
    _send_command(commands)
    _dead_letters_command(commands)
    _checkpoints_command(commands)
    return parser


def _localhub_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    hub = commands.add_parser(
        "localhub",
        help="run a local Event Hubs-compatible hub (a development and test tool, not a product)",
        description="A local hub that speaks Event Hubs' AMQP 1.0 dialect well enough for the azure-eventhub SDK, "
        "for tests and laptops. A development and test tool, not a product: no TLS, events kept in memory with "
        "bounded retention; tokens are checked against one shared access key (--key-name, --key). Prints one line, "
        "the connection string, then serves until SIGINT or SIGTERM. Needs the localhub extra (python-qpid-proton).",
    )
    hub.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback)")
    hub.add_argument("--port", type=int, default=5672, help="port to listen on (0: any free port; default 5672)")
    hub.add_argument("--eventhub", default="ml-events", metavar="NAME", help="the event hub's name")
    hub.add_argument("--partitions", type=_positive, default=4, metavar="N", help="partition count (default 4)")
    hub.add_argument(
        "--consumer-group",
        action="append",
        metavar="CG",
        help="a consumer group besides $Default (repeatable); others are refused as the service refuses them",
    )
    hub.add_argument(
        "--retention-events", type=_positive, default=100_000, metavar="N", help="events kept per partition"
    )
    hub.add_argument("--retention-mb", type=_positive, default=64, metavar="MB", help="megabytes kept per partition")
    hub.add_argument(
        "--key-name",
        type=_key_part,
        metavar="NAME",
        help="the shared access key's name tokens must name (default: RootManageSharedAccessKey)",
    )
    hub.add_argument(
        "--key",
        type=_key_part,
        metavar="KEY",
        help="the shared access key tokens must be signed with (default: the public development key, "
        "printed in the connection string)",
    )
    hub.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    hub.set_defaults(command="localhub", handler=_localhub)


def _send_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    send = commands.add_parser(
        "send",
        help="publish events to an event hub (local or in Azure), from JSON files or generated",
        description="Publish events to an event hub, one event per message as Event Grid delivers them (Event Grid "
        "schema in a one-element array, CloudEvents as an object, with Event Grid's aeg-* properties): from JSON "
        "files (an event, an array of events, or JSON Lines) or generated realistic Azure ML events.",
    )
    send.add_argument(
        "--connection-string",
        default=os.environ.get("EVENTHUB_CONNECTION_STRING"),
        help="the event hub's connection string (default: $EVENTHUB_CONNECTION_STRING)",
    )
    send.add_argument("--eventhub", metavar="NAME", help="the event hub, when the connection string names none")
    send.add_argument("--generate", type=_positive, metavar="N", help="send N generated Azure ML events")
    send.add_argument(
        "--schema", choices=["eventgrid", "cloudevents", "both"], default="eventgrid", help="of generated events"
    )
    send.add_argument("--seed", type=int, default=7, help="seed of generated events, shuffling and duplicates")
    send.add_argument("--body-size", type=int, default=0, metavar="BYTES", help="pad generated bodies to about this")
    send.add_argument("--shuffle", type=int, default=0, metavar="N", help="let an event be overtaken by up to N later")
    send.add_argument(
        "--duplicates", type=float, default=0.0, metavar="P", help="chance that an event is delivered twice"
    )
    send.add_argument(
        "--partition-key",
        choices=["subject", "none"],
        default="subject",
        help="key each message by its event's subject (default), or send round-robin",
    )
    send.add_argument("--partition-id", metavar="ID", help="send every message to this partition")
    send.add_argument("files", nargs="*", metavar="FILE", help="JSON files of events")
    send.set_defaults(command="send", handler=_send)


def _dead_letters_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    letters = commands.add_parser(
        "dead-letters",
        help="look into a dead-letter lane: counts by rule, action type and reason, or one letter in full",
        description="Read a dead-letter lane, a directory or a blob container URL [/prefix], as replay "
        "--from-dead-letters takes it; nothing in it is changed. Blob credentials: a SAS token in the URL, else "
        "--connection-string, else DefaultAzureCredential.",
    )
    lane = argparse.ArgumentParser(add_help=False)
    lane.add_argument("lane", metavar="LANE", help="a dead-letter directory, or a blob container URL [/prefix]")
    lane.add_argument(
        "--connection-string",
        default=os.environ.get("WORKER_STORAGE_CONNECTION_STRING") or os.environ.get("AZURE_STORAGE_CONNECTION_STRING"),
        help="storage connection string for a container lane (default: $WORKER_STORAGE_CONNECTION_STRING, else "
        "$AZURE_STORAGE_CONNECTION_STRING; without one, DefaultAzureCredential)",
    )
    verbs = letters.add_subparsers(title="commands", metavar="COMMAND", required=True)
    listing = verbs.add_parser(
        "list",
        parents=[lane],
        help="count the letters by rule, action type and reason, with the oldest and newest of each",
        description="Count the lane's dead letters by rule, action type and reason (the last attempt's error "
        "kind: unavailable, rejected, render, circuit_open, failed), each group with its oldest and newest "
        "dead-letter time (the last attempt's), its newest letter's id and last error; then the total.",
    )
    listing.add_argument("--json", action="store_true", help="print one JSON document (groups and total)")
    listing.set_defaults(command="dead-letters", handler=_dead_letters_list)
    show = verbs.add_parser(
        "show",
        parents=[lane],
        help="print one dead letter in full, as JSON",
        description="Print one dead letter in full, as JSON (secrets masked).",
    )
    show.add_argument(
        "id",
        metavar="ID",
        help="the letter's file or blob name, with or without .json and without its folders (as list --json "
        "shows it in newest_letter), or its idempotency key",
    )
    show.set_defaults(command="dead-letters", handler=_dead_letters_show)


def _dead_letters_list(args: argparse.Namespace, out: TextIO) -> int:
    from worker.admin.dead_letters import summarize, summary_document, summary_table  # noqa: PLC0415
    from worker.replay.sources import letter_id, list_dead_letters, read_dead_letter  # noqa: PLC0415 - blob storage

    if args.connection_string:
        MASKER.add_connection_string(args.connection_string)
    try:
        with list_dead_letters([args.lane], connection_string=args.connection_string, allow_empty=True) as lane:
            found = summarize((letter_id(file), read_dead_letter(file)[1]) for file in lane.files)
    except SourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if args.json:
        out.write(orjson.dumps(summary_document(found), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        for line in summary_table(found):
            print(line, file=out)
    return EXIT_OK


def _dead_letters_show(args: argparse.Namespace, out: TextIO) -> int:
    from worker.jsontext import dumps  # noqa: PLC0415
    from worker.replay.sources import list_dead_letters, read_dead_letter  # noqa: PLC0415 - blob storage

    if args.connection_string:
        MASKER.add_connection_string(args.connection_string)
    try:
        with list_dead_letters([args.lane], connection_string=args.connection_string, allow_empty=True) as lane:
            found = lane.named(args.id)
            if len(found) != 1:
                which = ", ".join(file.name for file in found)
                why = f"{len(found)} dead letters answer to it ({which})" if found else "no such dead letter"
                print(f"error: {args.id}: {why} in {args.lane}", file=sys.stderr)
                return EXIT_INVALID
            document, _ = read_dead_letter(found[0])
    except SourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    out.write(dumps(document, indent=True).decode() + "\n")
    return EXIT_OK


def _checkpoints_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = commands.add_parser(
        "checkpoints",
        help="see where a consumer group stands, partition by partition, and move its checkpoints",
        description="Where the consumer group's checkpoints stand against the hub, partition by partition, and "
        "resets of them. The settings are run's connection settings, as WORKER_* variables or flags; the variables "
        "of run alone are ignored.",
    )
    verbs = group.add_subparsers(title="commands", metavar="COMMAND", required=True)
    show = verbs.add_parser(
        "show",
        help="each partition's checkpoint, last enqueued event, lag and owner",
        description="Per partition: the checkpoint's sequence number, offset and time of writing; the last "
        "enqueued sequence number and time; the lag between them (the whole partition when there is no "
        "checkpoint); the owner and the age of its claim, live or expired.",
    )
    show.add_argument("--json", action="store_true", help="print one JSON document")
    add_flags(show, ConnectionSettings)
    show.set_defaults(command="checkpoints", handler=_checkpoints_show)
    reset = verbs.add_parser(
        "reset",
        help="move the consumer group's checkpoints (and empty the pipeline state beside them)",
        description="Move the checkpoints of the given partitions (all by default) to the start of the partition, "
        "after its last enqueued event, or just before the first event enqueued at or after a time, and empty the "
        "pipeline state saved beside each. Refused while a worker holds one of them (a live claim), unless "
        "--force. Prints each move, from -> to.",
    )
    reset.add_argument(
        "--to",
        required=True,
        type=_start,
        metavar="WHERE",
        help="earliest, latest, an ISO 8601 time (2026-11-30T08:00:00Z) or a duration back from now (2h)",
    )
    reset.add_argument("--partition", action="append", metavar="ID", help="only this partition (repeatable)")
    reset.add_argument("--force", action="store_true", help="reset even partitions that a worker holds")
    reset.add_argument("--dry-run", action="store_true", help="show what would change; write nothing")
    add_flags(reset, ConnectionSettings)
    reset.set_defaults(command="checkpoints", handler=_checkpoints_reset)


def _start(text: str) -> StartPosition:
    try:
        return parse_start(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _checkpoints_show(args: argparse.Namespace, out: TextIO) -> int:
    from worker.admin.checkpoints import show  # noqa: PLC0415
    from worker.checkpoints.standing import document, table  # noqa: PLC0415 - the SDKs, for this command only

    settings = _consumer_group_settings(args)
    if settings is None:
        return EXIT_INVALID
    found, code = _consumer_group_call(show(settings))
    if found is None:
        return code
    scope = settings.scope
    if args.json:
        out.write(document(scope.namespace, scope.eventhub, scope.consumer_group, settings.expiry, found).decode())
        out.write("\n")
        return EXIT_OK
    print(
        f"event hub {scope.eventhub} ({scope.namespace}), consumer group {scope.consumer_group}; a claim lives "
        f"{settings.expiry:g}s unless renewed",
        file=out,
    )
    for line in table(found):
        print(line, file=out)
    return EXIT_OK


def _checkpoints_reset(args: argparse.Namespace, out: TextIO) -> int:
    from worker.admin.checkpoints import reset  # noqa: PLC0415 - the SDKs, for this command only

    settings = _consumer_group_settings(args)
    if settings is None:
        return EXIT_INVALID
    report, code = _consumer_group_call(
        reset(settings, args.to, tuple(args.partition or ()), force=args.force, dry_run=args.dry_run)
    )
    if report is None:
        return code
    for line in report.held:
        print(f"{'warning: forced' if args.force else 'error'}: {line}", file=sys.stderr)
    if report.held and not args.force:
        print(
            "error: refused: stop the consumer group's workers first (a clean stop releases their claims; a dead "
            f"worker's claim lapses {settings.expiry:g}s after its last renewal), or pass --force",
            file=sys.stderr,
        )
        return EXIT_FAILED
    for move in report.moves:
        print(move, file=out)
    for failure in report.failed:
        print(f"error: {failure}", file=sys.stderr)
    if args.dry_run:
        print("dry run: nothing was written", file=out)
    else:
        done = len(report.moves) - len(report.failed)
        print(f"reset {done} checkpoint{'s' * (done != 1)}, each with an empty pipeline state", file=out)
    return EXIT_FAILED if report.failed else EXIT_OK


def _consumer_group_settings(args: argparse.Namespace) -> ConsumerGroupSettings | None:
    try:
        settings = load_connection_settings({field: getattr(args, field) for field in ConnectionSettings.model_fields})
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    configure_logging("warning")
    return settings.consumer_group_settings()


_Result = TypeVar("_Result")


def _consumer_group_call(work: Coroutine[Any, Any, _Result]) -> tuple[_Result | None, int]:
    """Run a ``checkpoints`` command's work: its result, or None and the exit code after printing why."""
    from azure.core.exceptions import AzureError  # noqa: PLC0415 - the SDKs, for this command only
    from azure.eventhub.exceptions import EventHubError  # noqa: PLC0415

    try:
        return asyncio.run(work), EXIT_OK
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None, EXIT_INVALID
    except (EventHubError, AzureError) as exc:
        print(f"error: the Event Hub or the checkpoint store failed: {exc}", file=sys.stderr)
    except TimeoutError as exc:
        print(f"error: the Event Hub did not deliver the event asked for in time {exc}".rstrip(), file=sys.stderr)
    return None, EXIT_FAILED


def _validate(args: argparse.Namespace, out: TextIO) -> int:
    from worker.actions.secrets import Placeholders  # noqa: PLC0415 - each command loads what it runs
    from worker.rulefiles.directories import paths_of  # noqa: PLC0415
    from worker.rulefiles.loading import load_rules  # noqa: PLC0415

    files = paths_of(args.files)
    table = load_rules(files, env=Placeholders() if args.skip_secrets else None)
    for warning in table.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"ok: {len(table.rules)} rules in {len(files)} file{'s' * (len(files) != 1)}", file=out)
    return EXIT_OK


def _explain(args: argparse.Namespace, out: TextIO) -> int:
    from worker.actions.secrets import Placeholders  # noqa: PLC0415 - each command loads what it runs
    from worker.core.decoding import decode_body  # noqa: PLC0415
    from worker.core.rules import explain  # noqa: PLC0415
    from worker.events import InvalidEvent  # noqa: PLC0415
    from worker.rulefiles.directories import paths_of  # noqa: PLC0415
    from worker.rulefiles.loading import load_rules  # noqa: PLC0415

    table = load_rules(paths_of(args.rules), env=Placeholders())  # executes nothing: needs no secrets
    try:
        body = sys.stdin.buffer.read() if args.body == "-" else Path(args.body).read_bytes()
    except OSError as exc:
        print(f"error: cannot read the body file: {exc}", file=sys.stderr)
        return EXIT_INVALID
    invalid = 0
    for item in decode_body(body):
        if isinstance(item, InvalidEvent):
            invalid += 1
            where = "the body" if item.body_index is None else f"event #{item.body_index}"
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


def _test(args: argparse.Namespace, out: TextIO) -> int:
    from worker.rulefiles.testing import run_file  # noqa: PLC0415 - the partition core, for this command

    files = [run_file(path) for path in args.files]
    for file in files:
        for problem in file.problems:
            print(f"error: {problem}", file=sys.stderr)
        for result in file.results:
            for line in result.lines():
                print(line, file=out)
    results = [result for file in files for result in file.results]
    failed = sum(not result.ok for result in results)
    invalid = sum(bool(file.problems) for file in files)
    summary = f"{len(results)} case{'s' * (len(results) != 1)}: {len(results) - failed} ok, {failed} failed"
    if invalid:
        summary += f"; {invalid} invalid file{'s' * (invalid != 1)}"
    print(summary, file=out)
    return EXIT_INVALID if invalid else EXIT_FAILED if failed else EXIT_OK


def _replay_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true", help="execute nothing; report what would have fired")
    parser.add_argument("--report", type=Path, metavar="FILE", help="also write the counts to FILE as JSON")
    parser.add_argument(
        "--html",
        type=Path,
        metavar="FILE",
        help="with --dry-run: also write a backtest report to FILE, one self-contained HTML page (per rule: "
        "matches over time, what it matched and the actions it would have run, rendered)",
    )
    parser.add_argument("--partition", action="append", metavar="ID", help="only this partition (repeatable)")
    parser.add_argument(
        "--since", type=_moment, metavar="TIME", help="only events enqueued at or after TIME (ISO 8601)"
    )
    parser.add_argument("--until", type=_moment, metavar="TIME", help="only events enqueued before TIME")
    parser.add_argument(
        "--connection-string",
        default=os.environ.get("AZURE_STORAGE_CONNECTION_STRING"),
        help="storage connection string for blob sources (default: $AZURE_STORAGE_CONNECTION_STRING; "
        "without one, DefaultAzureCredential)",
    )
    parser.add_argument("--window", type=float, default=CoreSettings().window, help="reorder window in seconds")
    parser.add_argument(
        "--late", choices=[p.value for p in LatePolicy], default=LatePolicy.SKIP.value, help="late events"
    )
    parser.add_argument(
        "--sequencer",
        action="append",
        type=_sequencer,
        metavar="TYPE=KEY",
        help="order events of TYPE by the string at KEY (e.g. Microsoft.Storage.BlobCreated=data.sequencer); "
        "default: event time, then sequence number (repeatable)",
    )
    parser.add_argument(
        "--max-age",
        type=_duration,
        metavar="DURATION",
        help="rules without a max_age of their own do not act on older events (2h, 7d); counted as stale",
    )
    parser.add_argument(
        "--age-from",
        choices=["enqueued", "now"],
        default="enqueued",
        help="an event's age runs to its enqueued time (default: a backtest sees what a worker keeping up would "
        "have seen) or to now (a recovery after an outage)",
    )
    parser.add_argument("--concurrency", type=int, default=DriverSettings().concurrency, help="actions at once")
    parser.add_argument(
        "--processes",
        type=_positive,
        metavar="N",
        help="replay partitions in N processes at once (default: one per usable core, for a plan of 32 MB or "
        "more; never more than the partitions); 1: in this process",
    )
    parser.add_argument(
        "--dead-letters",
        default="dead-letters",
        metavar="DIR_OR_URL",
        help="where actions that fail for good go: a directory (default: dead-letters), or a blob container URL "
        "[/prefix] (credentials as for blob sources)",
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        help="trace the replay as the live worker does, to the exporter the standard variables name "
        "(OTEL_EXPORTER_OTLP_ENDPOINT, APPLICATIONINSIGHTS_CONNECTION_STRING; see docs/monitoring.md)",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def _sequencer(text: str) -> tuple[str, str]:
    event_type, sep, key = text.partition("=")
    if not sep or not event_type or split_key(key) is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not TYPE=KEY, such as Microsoft.Storage.BlobCreated=data.sequencer"
        )
    return event_type, key


def _duration(text: str) -> float:
    try:
        return parse_duration(text).total_seconds()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time, such as 2026-11-01T09:00:00Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _replay(args: argparse.Namespace, out: TextIO) -> int:
    from worker.actions.secrets import Placeholders  # noqa: PLC0415 - each command loads what it runs
    from worker.replay.backtest import Backtest  # noqa: PLC0415
    from worker.replay.pool import processes_for, replay_in_processes  # noqa: PLC0415
    from worker.replay.run import ReplaySettings, progress_for, replay  # noqa: PLC0415 - blob storage, for this command
    from worker.replay.sources import plan_replay  # noqa: PLC0415
    from worker.rulefiles.directories import fingerprint, paths_of  # noqa: PLC0415
    from worker.rulefiles.loading import load_rules  # noqa: PLC0415

    configure_logging(args.log_level)
    html: Path | None = getattr(args, "html", None)
    if html is not None and not args.dry_run:
        print("error: --html writes what a dry run would have done: it needs --dry-run", file=sys.stderr)
        return EXIT_INVALID
    try:
        azure = load_azure_settings()  # the actions reach Azure as `worker run` does: WORKER_AZURE_CLOUD...
        if args.trace:
            _check_tracing()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    loaded = fingerprint(args.rules)  # worker processes check that they load the same rules
    # A dry run executes nothing, so it needs no secrets.
    table = load_rules(paths_of(args.rules), env=Placeholders() if args.dry_run else None)
    settings = ReplaySettings(
        dry_run=args.dry_run,
        core=CoreSettings(
            window=args.window,
            late=LatePolicy(args.late),
            sequencers=tuple(args.sequencer or ()),
            max_age=args.max_age,
        ),
        age_from_now=args.age_from == "now",
        driver=DriverSettings(concurrency=args.concurrency),
        dead_letters=args.dead_letters,
        connection_string=args.connection_string,
        azure=azure,
        trace=args.trace,
    )
    partitions = set(args.partition) if args.partition else None
    backtest = Backtest() if html is not None else None
    observe = backtest.add if backtest is not None else None
    errors: list[str] = []
    failures: list[str] = []
    try:
        planned = plan_replay(
            args.sources,
            dead_letters=getattr(args, "from_dead_letters", False),
            connection_string=args.connection_string,
            partitions=partitions,
            since=args.since,
            until=args.until,
        )
        with planned as plan:
            processes = processes_for(plan, args.processes)
            if processes > 1:
                job = _replay_job(args, settings, loaded, frozenset(plan.partitions), backtest=backtest is not None)
                tally = replay_in_processes(job, plan, table, processes, progress_for(plan), backtest=backtest)
            else:
                tally = asyncio.run(replay(plan, table, settings, progress_for(plan), observe=observe))
    except* (SourceError, CaptureError, DeadLetterError) as group:
        errors += [str(exc) for exc in group.exceptions]
    except* ChildProcessFailed as group:
        failures = [str(exc) for exc in group.exceptions]
    if errors or failures:
        for error in errors or failures:
            print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID if errors else EXIT_FAILED
    if html is not None and backtest is not None:
        _write_html(html, backtest, tally, table, args)
    return _report(tally, args, out)


def _check_tracing() -> None:
    """``--trace`` needs an exporter: raise SettingsError when the environment names none."""
    from worker.telemetry.setup import tracing_settings  # noqa: PLC0415

    try:
        on = tracing_settings(os.environ).on
    except ValueError as exc:
        raise SettingsError([str(exc)]) from exc
    if not on:
        raise SettingsError(
            [
                "--trace: no exporter to send the spans to: set OTEL_EXPORTER_OTLP_ENDPOINT (an OTLP/HTTP "
                "collector), APPLICATIONINSIGHTS_CONNECTION_STRING (Azure Monitor) or OTEL_TRACES_EXPORTER=console"
            ]
        )


def _replay_job(
    args: argparse.Namespace,
    settings: ReplaySettings,
    loaded: Fingerprint,
    partitions: frozenset[str],
    *,
    backtest: bool,
) -> ReplayJob:
    """What each worker process of ``replay --processes N`` rebuilds its part of the replay from."""
    from worker.replay.pool import ReplayJob, log_format_of_parent  # noqa: PLC0415 - for this command

    return ReplayJob(
        rules=tuple(args.rules),
        rules_fingerprint=loaded,
        settings=settings,
        sources=tuple(args.sources),
        partitions=partitions,
        from_dead_letters=getattr(args, "from_dead_letters", False),
        since=args.since,
        until=args.until,
        backtest=backtest,
        log_level=args.log_level,
        log_format=log_format_of_parent(),
    )


def _write_html(path: Path, backtest: Backtest, tally: Tally, table: RulesTable, args: argparse.Namespace) -> None:
    """Write the backtest report page (masked as it is rendered)."""
    from worker.replay.backtest_page import render_html  # noqa: PLC0415 - the page's template, for this option

    page = render_html(backtest, tally, title=f"Backtest of {', '.join(args.rules)}", rules=table)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    log.info("replay.html", path=str(path), actions=backtest.total)


def _report(tally: Tally, args: argparse.Namespace, out: TextIO) -> int:
    """Print the counts, write them to ``--report``, and fail when they do not add up."""
    from worker.core.accounting import summary  # noqa: PLC0415 - each command loads what it runs

    report = tally.report()
    for line in summary(report):
        print(line, file=out)
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        masked = MASKER.mask_value({"dry_run": args.dry_run, **report})  # an event type is whatever was sent
        args.report.write_bytes(orjson.dumps(masked, option=orjson.OPT_INDENT_2))
    problems = tally.check()
    for problem in problems:
        print(f"error: the counts do not add up: {problem}", file=sys.stderr)
    return EXIT_FAILED if problems else EXIT_OK


def _run(args: argparse.Namespace, out: TextIO) -> int:
    from azure.core.exceptions import AzureError  # noqa: PLC0415 - the SDKs, for this command only
    from azure.eventhub.exceptions import EventHubError  # noqa: PLC0415

    from worker.core.accounting import summary  # noqa: PLC0415
    from worker.live.run import run_worker  # noqa: PLC0415

    # Whatever ends the worker is logged as worker.failed, in the format asked for: one stream of log lines.
    try:
        settings = load_settings({field: getattr(args, field) for field in RunSettings.model_fields})
    except SettingsError as exc:
        configure_logging(log_format=_log_format_asked(args))
        return _failed(EXIT_INVALID, "settings", str(exc), problems=list(exc.problems))
    configure_logging(settings.log_level, settings.log_format, settings.library_log_level)
    try:
        tally = asyncio.run(run_worker(settings))
    except SettingsError as exc:
        return _failed(EXIT_INVALID, "settings", str(exc), problems=list(exc.problems))
    except RulesError as exc:
        return _failed(EXIT_INVALID, "rules", str(exc), problems=[str(p) for p in exc.problems])
    except (EventHubError, AzureError) as exc:
        return _failed(EXIT_FAILED, "hub", f"the Event Hub or the checkpoint store failed: {exc}")
    except ChildProcessFailed as exc:
        return _failed(EXIT_FAILED, "pipeline_process", f"{exc}; what it had not finished is redone after a restart")
    except Exception as exc:
        log.exception("worker.failed", kind="unexpected", error=repr(exc))
        return EXIT_FAILED
    if settings.idle_exit:
        for line in summary(tally.report()):
            print(line, file=out)
    return EXIT_OK


def _failed(code: int, kind: str, error: str, **details: object) -> int:
    """Log why the live worker ends, a failure it knows (its message says it all: no traceback); ``code``."""
    log.error("worker.failed", kind=kind, error=error, **details)
    return code


def _log_format_asked(args: argparse.Namespace) -> LogFormat:
    """The log format the flag or the variable asks for, when the settings as a whole are invalid."""
    asked = str(args.log_format or os.environ.get(env_name("log_format"), "")).strip().lower()
    return cast(LogFormat, asked) if asked in get_args(LogFormat) else "auto"


def _positive(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return number


def _key_part(text: str) -> str:
    """A shared access key or key name: it goes into a connection string as printed."""
    if not text or text != text.strip() or ";" in text:
        raise argparse.ArgumentTypeError(f"{text!r} is empty, or has spaces at an end or a ';' (it ends a field)")
    return text


def _localhub(args: argparse.Namespace, out: TextIO) -> int:
    configure_logging(args.log_level)
    if (missing := _local_hub_missing()) is not None:
        print(f"error: {missing}", file=sys.stderr)
        return EXIT_INVALID
    from worker.localhub.serve import HubSettings, serve  # noqa: PLC0415 - an optional extra

    settings = HubSettings(
        host=args.host,
        port=args.port,
        eventhub=args.eventhub,
        partitions=args.partitions,
        consumer_groups=("$Default", *(args.consumer_group or ())),
        retention_events=args.retention_events,
        retention_bytes=args.retention_mb * 1024 * 1024,
    )
    if args.key_name is not None:
        settings = dataclasses.replace(settings, key_name=args.key_name)
    if args.key is not None:
        settings = dataclasses.replace(settings, key=args.key)
    try:
        asyncio.run(serve(settings, out))
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    return EXIT_OK


def _send(args: argparse.Namespace, out: TextIO) -> int:
    from worker.sending import mlevents, publish  # noqa: PLC0415 - loads the SDK only for this command

    if not args.connection_string:
        print(
            "error: no connection string: pass --connection-string or set EVENTHUB_CONNECTION_STRING", file=sys.stderr
        )
        return EXIT_INVALID
    if bool(args.generate) == bool(args.files):
        print("error: give either --generate N or JSON files of events", file=sys.stderr)
        return EXIT_INVALID
    if args.generate:
        events = publish.generated_events(
            publish.GenerateOptions(args.generate, args.schema, seed=args.seed, body_size=args.body_size)
        )
    else:
        events = publish.events_from_files([Path(name) for name in args.files])
    deliveries = mlevents.deliveries(events, shuffle=args.shuffle, duplicates=args.duplicates, seed=args.seed)
    messages = publish.plan(deliveries, args.partition_key)
    try:
        report = asyncio.run(
            publish.publish(args.connection_string, messages, eventhub=args.eventhub, partition_id=args.partition_id)
        )
    except SourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    spread = ", ".join(f"{pid}: {n}" for pid, n in sorted(report.by_partition.items()))
    print(f"sent {report.sent} messages in {report.batches} batches to {report.eventhub} ({spread})", file=out)
    return EXIT_OK


def _local_hub_missing() -> str | None:
    """Why the local hub cannot run here, or None when it can."""
    try:
        import worker.localhub.server  # noqa: F401, PLC0415 - an optional extra (proton, wsproto)
    except ImportError as exc:
        return (
            f"the local hub is not installed here ({exc}): it is a development and test tool, which the "
            "container image leaves out; in a checkout, `make setup` installs it (the localhub extra: "
            "pip install 'azureml-events-worker[localhub]')"
        )
    return None


def _demo(args: argparse.Namespace, out: TextIO) -> int:
    args.rules = args.rules or [str(DEFAULT_DEMO_RULES)]
    if args.capture:
        return _replay(args, out)
    if args.html is not None:
        print("error: --html is a backtest report: it needs --capture --dry-run", file=sys.stderr)
        return EXIT_INVALID
    configure_logging(args.log_level)
    if (missing := _local_hub_missing()) is not None:
        print(f"error: the demo runs on a local hub; {missing} (`demo --capture` needs none)", file=sys.stderr)
        return EXIT_INVALID
    from worker.localhub.demo import DemoSettings, live_demo  # noqa: PLC0415

    settings = DemoSettings(tuple(Path(name) for name in args.rules), args.workdir, args.events)
    tally = asyncio.run(live_demo(settings))
    return _report(tally, args, out)
