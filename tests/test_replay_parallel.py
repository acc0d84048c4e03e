"""A replay on every core (``replay --processes N``): the same counts, report, actions, dead letters,
backtest page and failures as one process; and the pieces it rests on (merging backtests, how many
processes a plan gets)."""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from bench.processes import child_pid
from tests.lifecycles import generate, write_capture, write_rules
from tests.support import START, TOPIC, capture, make_event
from tests.targets import HttpTarget, Received
from worker.actions.base import PlannedAction
from worker.actions.secrets import Placeholders
from worker.cli import main
from worker.core.rules import RulesTable
from worker.replay.backtest import MAX_BUCKETS, WIDTHS, Backtest, Histogram
from worker.replay.pool import SMALL_PLAN, processes_for, usable_cores
from worker.replay.sources import CaptureFile, Plan
from worker.rulefiles.loading import load_rules
from worker.sending import mlevents

#: A generated scenario of Azure ML lifecycles on four partitions (rules that act and that remember).
SEED = 10
#: A rule whose ``file`` action cannot write (its path is a directory): every action dead-lettered.
UNWRITABLE = """\
rules:
  - name: unwritable
    filter: {includedEventTypes: [Microsoft.MachineLearningServices.ModelRegistered]}
    actions:
      - {type: file, path: DIRECTORY, retry: {attempts: 1}}
"""


@pytest.fixture(scope="module")
def lifecycles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The scenario's capture files: one per partition and hour."""
    scenario = generate(SEED)
    assert sorted(scenario.partitions) == ["0", "1", "2", "3"]
    root = tmp_path_factory.mktemp("lifecycles")
    write_capture(scenario, root)
    return root


class Run:
    """One replay's outputs: exit code, what it printed, its report, its ``file`` lines, dead letters."""

    def __init__(self, work: Path, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err
        report, actions, dead = work / "report.json", work / "actions.jsonl", work / "dead"
        self.report: dict[str, Any] = orjson.loads(report.read_bytes()) if report.exists() else {}
        lines = [orjson.loads(line) for line in actions.read_bytes().splitlines()] if actions.exists() else []
        self.lines_by_partition = _by_partition(lines, "partition_id")
        self.letters = {path.name: orjson.loads(path.read_bytes()) for path in dead.glob("*.json")}
        self.logs = [orjson.loads(line) for line in err.splitlines() if line.startswith("{")]

    def errors(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("error:")]


def _by_partition(items: list[dict[str, Any]], key: str) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        found.setdefault(str(item[key]), []).append(item)
    return found


def replay(work: Path, capfd: pytest.CaptureFixture[str], processes: int, *args: str) -> Run:
    """``replay`` in ``work`` (its ``file`` actions, report and dead letters there), in ``processes``."""
    work.mkdir(parents=True)
    capfd.readouterr()
    code = main(
        [
            *("replay", "--processes", str(processes), "--report", str(work / "report.json")),
            *("--dead-letters", str(work / "dead"), *args),
        ]
    )
    out, err = capfd.readouterr()
    return Run(work, code, out, err)


# --- in worker processes -------------------------------------------------------------------------------


@pytest.mark.integration
def test_four_processes_act_count_and_dead_letter_as_one(
    tmp_path: Path, lifecycles: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    runs = {}
    for processes in (1, 4):
        work = tmp_path / f"p{processes}"
        rules = write_rules(tmp_path / f"rules-{processes}.yaml", work / "actions.jsonl")
        unwritable = tmp_path / f"unwritable-{processes}.yaml"
        unwritable.write_text(UNWRITABLE.replace("DIRECTORY", str(tmp_path)))
        options = ("--log-level", "debug", "--rules", str(rules), "--rules", str(unwritable), str(lifecycles))
        runs[processes] = replay(work, capfd, processes, *options)
    one, four = runs[1], runs[4]
    assert (one.code, four.code) == (0, 0), four.err
    assert four.report == one.report
    assert four.out == one.out
    assert one.report["events"] > 0
    # The actions of each partition, in the same order; every partition acted.
    assert four.lines_by_partition == one.lines_by_partition
    assert sorted(one.lines_by_partition) == ["0", "1", "2", "3"]
    # The same dead letters (their attempts aside: circuits are per partition), from several partitions.
    assert sorted(four.letters) == sorted(one.letters)
    assert {name: _without_attempts(letter) for name, letter in four.letters.items()} == {
        name: _without_attempts(letter) for name, letter in one.letters.items()
    }
    assert len({letter["position"]["partition_id"] for letter in one.letters.values()}) > 1
    # The workers log to the same stream, in the same format: the `log` actions' lines, per partition.
    logged = {processes: _by_partition(_action_logs(run.logs), "partition_id") for processes, run in runs.items()}
    assert logged[4] == logged[1]
    assert logged[1]
    assert any(line.get("event") == "replay.processes" and line["processes"] == 4 for line in four.logs)
    # Once the action can write, its dead letters are re-driven alike in one process and in four.
    redriven = {}
    for processes in (1, 4):
        written = tmp_path / f"redriven-{processes}.jsonl"
        fixed = tmp_path / f"fixed-{processes}.yaml"
        fixed.write_text(UNWRITABLE.replace("DIRECTORY", str(written)))
        lane = str(tmp_path / "p1" / "dead")
        redrive = ("--from-dead-letters", "--log-level", "warning", "--rules", str(fixed), lane)
        run = replay(tmp_path / f"redrive-{processes}", capfd, processes, *redrive)
        assert run.code == 0, run.err
        lines = [orjson.loads(line) for line in written.read_bytes().splitlines()]
        redriven[processes] = (run.report, _by_partition(lines, "partition_id"))
    assert redriven[4] == redriven[1]
    assert sum(map(len, redriven[1][1].values())) == len(one.letters)


def _without_attempts(letter: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in letter.items() if key != "attempts"}


def _action_logs(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {key: value for key, value in line.items() if key != "timestamp"}
        for line in logs
        if line["event"] == "action.log"
    ]


@pytest.mark.integration
def test_four_processes_write_the_backtest_page_of_one(
    tmp_path: Path, lifecycles: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    rules = write_rules(tmp_path / "rules.yaml", tmp_path / "never-written.jsonl")
    pages, reports = {}, {}
    for processes in (1, 4):
        page = tmp_path / f"backtest-{processes}.html"
        options = ("--log-level", "warning", "--dry-run", "--html", str(page), "--rules", str(rules), str(lifecycles))
        run = replay(tmp_path / f"p{processes}", capfd, processes, *options)
        assert run.code == 0, run.err
        pages[processes] = re.sub(r"Written [^<]*", "Written (time)", page.read_text(encoding="utf-8"))
        reports[processes] = run.report
    assert pages[4] == pages[1]
    assert reports[4] == reports[1]
    assert "Written (time)" in pages[1]
    assert "expectation" in pages[1] or "expiry" in pages[1]
    assert not (tmp_path / "never-written.jsonl").exists()


@pytest.mark.integration
def test_a_corrupt_file_fails_four_processes_as_it_fails_one(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "capture"
    for partition in "0123":
        capture(source, partition, list(mlevents.bodies(50, mlevents.Options(seed=int(partition)))))
    corrupt = source / "ns" / "hub" / "2" / "2026" / "11" / "01" / "10" / "00" / "00.avro"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"Obj\x01 not really an Avro file " * 20)
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - name: all\n    filter: {}\n    actions: [{type: log, level: debug}]\n")
    runs = {
        processes: replay(tmp_path / f"p{processes}", capfd, processes, "--rules", str(rules), str(source))
        for processes in (1, 4)
    }
    assert runs[1].code == 2
    (error,) = runs[1].errors()
    assert str(corrupt) in error
    assert (runs[4].code, runs[4].errors()) == (runs[1].code, runs[1].errors())
    assert runs[4].report == {}


@pytest.mark.integration
async def test_a_failing_partition_stops_the_others_and_cancels_their_actions(
    tmp_path: Path, http_target: HttpTarget, capfd: pytest.CaptureFixture[str]
) -> None:
    """Partition 0's one action is refused, and its dead letter cannot be written: the run fails. In
    three processes, the actions of partitions 1 (replayed by the parent, the largest) and 2 (by a
    worker process) are held by the target, never answered, when that happens: they are cancelled,
    and the run ends as one process's does, which never reaches them."""
    source = tmp_path / "capture"
    capture(source, "0", [_body("p0-0")])
    capture(source, "1", [_body(f"p1-{n}") for n in range(20)])
    capture(source, "2", [_body(f"p2-{n}") for n in range(10)])
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n  - name: hook\n    filter: {}\n    actions:\n"
        f"      - {{type: webhook, url: '{http_target.url}/hook', timeout: 600, retry: {{attempts: 1}}}}\n"
    )
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    held = {"1": asyncio.Event(), "2": asyncio.Event()}
    release = asyncio.Event()

    def responder(wait_for_held: bool) -> Callable[[Received], Any]:
        async def respond(received: Received) -> web.StreamResponse | None:
            partition = str(received.json()["id"])[1]
            if partition in held:
                held[partition].set()
                await release.wait()
                return web.json_response({})
            if wait_for_held:
                for event in held.values():
                    await event.wait()
            return web.json_response({"error": "refused"}, status=400)

        return respond

    args = ["--log-level", "error", "--dead-letters", str(blocker / "lane"), "--rules", str(rules), str(source)]
    results = {}
    try:
        for processes in (1, 3):
            for event in held.values():
                event.clear()
            http_target.respond = responder(wait_for_held=processes > 1)
            capfd.readouterr()
            code = await asyncio.to_thread(main, ["replay", "--processes", str(processes), *args])
            errors = [line for line in capfd.readouterr().err.splitlines() if line.startswith("error:")]
            results[processes] = (code, errors)
            # One process stops at partition 0; three had partitions 1 and 2's actions in flight.
            assert [event.is_set() for event in held.values()] == [processes > 1] * 2
    finally:
        release.set()
    assert results[1][0] == 2
    (error,) = results[1][1]
    assert str(blocker) in error
    assert results[3] == results[1]


@pytest.mark.integration
async def test_a_worker_process_that_dies_ends_the_run_with_an_error_and_stops_the_parent(
    tmp_path: Path, http_target: HttpTarget, capfd: pytest.CaptureFixture[str]
) -> None:
    """Killed as the kernel kills a process out of memory, mid-partition: the run fails naming it, and
    the parent's own partition, whose action the target holds, stops rather than hang."""
    source = tmp_path / "capture"
    capture(source, "1", [_body(f"p1-{n}") for n in range(20)])  # the largest: the parent's
    capture(source, "2", [_body(f"p2-{n}") for n in range(10)])  # a worker process's
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n  - name: hook\n    filter: {}\n    actions:\n"
        f"      - {{type: webhook, url: '{http_target.url}/hook', timeout: 600, retry: {{attempts: 1}}}}\n"
    )
    held = {"1": asyncio.Event(), "2": asyncio.Event()}
    release = asyncio.Event()
    answered: list[str] = []

    async def respond(received: Received) -> web.StreamResponse:
        held[str(received.json()["id"])[1]].set()
        await release.wait()
        answered.append(str(received.json()["id"]))
        return web.json_response({})

    http_target.respond = respond
    capfd.readouterr()
    args = ["replay", "--processes", "2", "--log-level", "error", "--rules", str(rules), str(source)]
    run = asyncio.create_task(asyncio.to_thread(main, args))
    try:
        for event in held.values():
            await event.wait()
        # The worker process multiprocessing spawned (not its resource tracker).
        worker = child_pid(os.getpid(), "--multiprocessing-fork")
        assert worker is not None
        os.kill(worker, signal.SIGKILL)
        code = await run
        assert answered == []  # the run ended with the parent's actions still held: cancelled
    finally:
        release.set()
    errors = [line for line in capfd.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 1
    (error,) = errors
    assert error.startswith("error: a replay process exited unexpectedly while replaying partition 2 (killed,")
    assert "replay again, with fewer --processes" in error


def _body(event_id: str) -> bytes:
    envelope = {
        "id": event_id,
        "topic": TOPIC,
        "subject": f"experiments/e/runs/{event_id}",
        "eventType": "Microsoft.MachineLearningServices.RunCompleted",
        "eventTime": START.isoformat(),
        "data": {},
        "dataVersion": "2",
    }
    return orjson.dumps([envelope])


# --- merging -----------------------------------------------------------------------------------------


def _table(tmp_path: Path) -> RulesTable:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "rules:\n  - name: registered\n    filter: {}\n    actions:\n"
        "      - {type: log, message: '{{ subject }}'}\n      - {type: file, path: out.jsonl}\n"
        "  - name: also\n    filter: {}\n    actions: [{type: log}]\n"
    )
    return load_rules([path], env=Placeholders())


def _actions(table: RulesTable, partition: str, count: int) -> list[PlannedAction]:
    actions = []
    for number in range(count):
        event = make_event(f"{partition}-{number}", partition=partition, sequence_number=number)
        for rule in table.rules if partition != "2" else table.rules[1:]:
            actions += [PlannedAction(rule.name, spec, event) for spec in rule.actions]
    return actions


def test_backtests_merged_in_partition_order_are_the_backtest_of_one_run(tmp_path: Path) -> None:
    table = _table(tmp_path)
    partitions = {"2": _actions(table, "2", 2), "0": _actions(table, "0", 2), "1": _actions(table, "1", 4)}
    whole = Backtest(rows_per_rule=5)
    for actions in partitions.values():
        for action in actions:
            whole.add(action)
    merged = Backtest(rows_per_rule=5)
    for actions in partitions.values():
        part = Backtest(rows_per_rule=5)
        for action in actions:
            part.add(action)
        merged.merge(part)
    assert list(merged.rules) == list(whole.rules) == ["also", "registered"]
    for name, record in whole.rules.items():
        got = merged.rules[name]
        assert (got.rows, got.unlisted, got.occurrences, got.actions) == (
            record.rows,
            record.unlisted,
            record.occurrences,
            record.actions,
        ), name
        assert (got.times.width, got.times.buckets, got.times.untimed) == (
            record.times.width,
            record.times.buckets,
            record.times.untimed,
        )
    assert [row.event_id for row in merged.rules["registered"].rows] == ["0-0", "0-1", "1-0", "1-1", "1-2"]
    assert merged.rules["registered"].unlisted == 1
    assert merged.total == whole.total == 1 * 2 + 3 * 2 + 3 * 4


def test_histograms_merged_count_in_the_buckets_of_one() -> None:
    rng = random.Random(3)
    base = START.timestamp()
    # Three parts: narrow, then one wide enough to widen the buckets, then one with untimed counts.
    parts: list[list[float | None]] = [
        [base + rng.uniform(0, 600) for _ in range(50)],
        [base + i * WIDTHS[0] * 1.5 for i in range(MAX_BUCKETS + 200)],
        [*(base + rng.uniform(0, 86_400 * 30) for _ in range(300)), None, None],
    ]
    whole, merged = Histogram(), Histogram()
    for moments in parts:
        part = Histogram()
        for moment in moments:
            whole.add(moment)
            part.add(moment)
        merged.merge(part)
    assert whole.width > WIDTHS[0]
    assert (merged.width, merged.buckets, merged.untimed) == (whole.width, whole.buckets, whole.untimed)


# --- how many processes ------------------------------------------------------------------------------


def _plan(sizes: dict[str, int]) -> Plan:
    def opener() -> Any:
        raise AssertionError("not read")

    return Plan({p: (CaptureFile(f"{p}.avro", p, size, None, opener),) for p, size in sizes.items()})


def test_a_plan_gets_the_processes_asked_for_at_most_one_per_partition() -> None:
    big = SMALL_PLAN // 2 + 1
    assert processes_for(_plan({"0": 10, "1": 10}), None) == 1  # small: starting processes costs more
    assert processes_for(_plan({"0": big, "1": big}), None) == min(usable_cores(), 2)
    assert processes_for(_plan({"0": 10, "1": 10, "2": 10}), 8) == 3
    assert processes_for(_plan({"0": 10, "1": 10, "2": 10}), 2) == 2
    assert processes_for(_plan({"0": big * 4}), 4) == 1
    assert processes_for(_plan({}), None) == 1
    assert usable_cores() >= 1


def test_processes_is_a_positive_number(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["replay", "--processes", "0", "--rules", "rules.yaml", "x.avro"])
    assert exited.value.code == 2
    assert "not a positive whole number" in capsys.readouterr().err
