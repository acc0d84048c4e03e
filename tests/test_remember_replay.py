"""Rules that remember, replayed: generated capture files of Azure ML lifecycles through ``replay``,
their expiries and group notifications compared line by line with an oracle of their own
(:mod:`tests.lifecycles`), which follows the semantics as written, not the worker's code."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.lifecycles import (
    EXPECT_RULES,
    FAILED_RUNS,
    GROUP_RULES,
    MAX_GROUP_EVENTS,
    MODEL_NOT_DEPLOYED,
    RUN_STUCK,
    Builder,
    Fired,
    Outcome,
    Scenario,
    fired_of_lines,
    generate,
    moment,
    oracle,
    write_capture,
    write_rules,
)
from worker.actions.base import idempotency_key
from worker.cli import main

#: Seeds whose scenarios have 2, 3 and 4 partitions.
SEEDS = (1, 7, 10)
ACTION_INDEX = {rule.name: rule.action_index for rule in (*EXPECT_RULES, *GROUP_RULES)}


def replay(tmp_path: Path, source: Path, name: str) -> tuple[bytes, dict[str, Any]]:
    """Replay ``source`` with the scenario's rules; the ``file`` actions' output and the report."""
    work = tmp_path / name
    work.mkdir()
    actions, report = work / "actions.jsonl", work / "report.json"
    rules = write_rules(work / "rules.yaml", actions)
    dead = work / "dead-letters"
    code = main(
        [
            *("replay", "--log-level", "warning", "--report", str(report)),
            *("--dead-letters", str(dead), "--rules", str(rules), str(source)),
        ]
    )
    assert code == 0
    assert not dead.exists() or not any(dead.iterdir()), "an action was dead-lettered"
    return (actions.read_bytes() if actions.exists() else b""), orjson.loads(report.read_bytes())


def lines_of(output: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in output.splitlines()]


def explain(want: list[Fired], got: list[Fired], scenario: Scenario, outcome: Outcome) -> str:
    """What differs, with the times that decide it, for a failure message."""
    events = scenario.events()
    missing, extra = Counter(want) - Counter(got), Counter(got) - Counter(want)

    def describe(fired: Fired) -> str:
        due = outcome.due.get((fired.partition, fired.rule, fired.key, fired.event_id))
        when = "" if due is None else f" due {datetime.fromtimestamp(due, UTC).isoformat()}"
        start = events.get(fired.event_id)
        at = "" if start is None else f" (event at {start.at.isoformat()})"
        return f"{fired}{when}{at}"

    return "\n".join(
        [f"missing (the oracle fires it, the replay did not): {describe(f)}" for f in missing]
        + [f"extra (the replay fired it, the oracle does not): {describe(f)}" for f in extra]
    )


def check_lines(lines: list[dict[str, Any]], scenario: Scenario, outcome: Outcome) -> None:
    """Exactly the oracle's expiries and notifications, each line describing its memo correctly."""
    got, want = sorted(fired_of_lines(lines)), sorted(outcome.fired)
    assert got == want, explain(want, got, scenario, outcome)
    events = scenario.events()
    for line in lines:
        rule, event_id = line["rule"], line["event_id"]
        memo = "expiry" if line.get("expired") is True else "group"
        key = line["expectation_key"] if memo == "expiry" else line["group"]
        assert line["action_index"] == ACTION_INDEX[rule]
        assert line["idempotency_key"] == idempotency_key(f"{memo}\x1f{key}\x1f{event_id}", rule, ACTION_INDEX[rule])
        # ``event`` is the starting event, or the notification's first event.
        event = events[event_id]
        assert datetime.fromisoformat(line["event_time"]) == event.time
        assert line["subject"] == event.event["subject"]
        assert line["event_type"] == event.event["eventType"]
        assert line["late"] is False
        if memo == "group":
            assert line["event_ids"][0] == event_id
    assert len({line["idempotency_key"] for line in lines}) == len(lines)


def check_report(report: dict[str, Any], outcome: Outcome) -> None:
    """The report's counts of rules that remember, their actions, and what is pending, as the oracle
    has them."""
    rules = report["rules"]
    fired = Counter(fired.rule for fired in outcome.fired)
    for name in ACTION_INDEX:
        actions = rules.get(name, {}).get("actions", {})
        want_actions = {"file": {"done": fired[name]}} if fired[name] else {}
        if name == MODEL_NOT_DEPLOYED and fired[name]:
            want_actions["log"] = {"done": fired[name]}
        assert actions == want_actions, name
    for rule in EXPECT_RULES:
        entry = rules.get(rule.name, {})
        counts = {name: entry.get(name, 0) for name in ("started", "fulfilled", "expired")}
        want = {
            "started": outcome.started[rule.name],
            "fulfilled": outcome.fulfilled[rule.name],
            "expired": outcome.expired[rule.name],
        }
        assert counts == want, rule.name
    for group in GROUP_RULES:
        entry = rules.get(group.name, {})
        counts = {name: entry.get(name, 0) for name in ("joined", "notified")}
        assert counts == {"joined": outcome.joined[group.name], "notified": outcome.notified[group.name]}, group.name
    pending = {name: sum(entry.get("pending", {}).values()) for name, entry in rules.items() if entry.get("pending")}
    want_pending: Counter[str] = Counter()
    for (rule_name, _), n in outcome.pending.items():
        want_pending[rule_name] += n
    assert pending == dict(want_pending), f"idle groups (notified, nothing joined since): {dict(outcome.idle_groups)}"
    assert report["skipped"]["duplicate"] == outcome.duplicates
    assert report["evictions"].get("group_events_unlisted", 0) == outcome.unlisted
    assert report["skipped"]["late"] == 0
    assert sum(report["outcomes"].values()) == report["events"]


@pytest.mark.parametrize("seed", SEEDS)
def test_a_generated_replay_fires_exactly_the_expiries_and_notifications_the_semantics_say(
    tmp_path: Path, seed: int
) -> None:
    scenario = generate(seed)
    outcome = oracle(scenario)
    # The scenario exercises what it is for (a seed that does not fails here, not in silence).
    assert outcome.tight == []
    kinds = Counter((fired.rule, fired.kind) for fired in outcome.fired)
    assert all(kinds[rule.name, "expiry"] > 0 and outcome.fulfilled[rule.name] > 0 for rule in EXPECT_RULES), kinds
    notifications = Counter((f.partition, f.key) for f in outcome.fired if f.kind == "group")
    assert max(notifications.values()) >= 3, notifications
    assert outcome.restarts[RUN_STUCK] > 0
    assert outcome.duplicates > 0
    assert outcome.fulfilled_across_files > 0
    assert all(outcome.pending_by_partition[p] > 0 for p in scenario.partitions), outcome.pending_by_partition
    source = tmp_path / "capture"
    write_capture(scenario, source)

    output, report = replay(tmp_path, source, "first")
    lines = lines_of(output)
    check_lines(lines, scenario, outcome)
    check_report(report, outcome)

    again, report_again = replay(tmp_path, source, "second")
    assert again == output
    assert report_again == report


def test_an_expectation_is_fulfilled_by_an_event_of_a_later_capture_file(tmp_path: Path) -> None:
    builder = Builder(1)
    done, stuck = builder.run("churn-training"), builder.run("churn-training")
    builder.run_status(done, "Running", moment(230))  # 09:50, in the 09:00 file; due 12:50
    stuck_start = builder.run_status(stuck, "Running", moment(235))  # due 12:55
    builder.run_completed(done, moment(260))  # 10:20, in the 10:00 file
    for minute in range(0, 481, 20):  # until 14:00
        builder.run_status(builder.run("demand-forecast"), "Queued", moment(minute + 7))
    scenario = builder.scenario()
    assert len(write_capture(scenario, tmp_path / "capture")) == 9  # one an hour, 06:00 to 14:00
    want = [Fired("0", RUN_STUCK, "expiry", str(stuck_start["subject"]), str(stuck_start["id"]))]
    outcome = oracle(scenario)
    assert (outcome.fired, outcome.tight, outcome.fulfilled_across_files) == (want, [], 1)

    output, report = replay(tmp_path, tmp_path / "capture", "replay")
    check_lines(lines_of(output), scenario, outcome)
    assert sorted(fired_of_lines(lines_of(output))) == want
    check_report(report, outcome)


def test_a_duplicate_starts_nothing_and_a_second_start_does_not_move_the_deadline(tmp_path: Path) -> None:
    builder = Builder(1)
    twice, again = builder.run("fraud-detection"), builder.run("fraud-detection")
    first = builder.run_status(twice, "Running", moment(60))  # 07:00: due 10:00
    builder.redeliver(first, moment(60.2))  # the same event, delivered again
    builder.run_status(twice, "Running", moment(120))  # a new event for the pending key: due stays 10:00
    started = builder.run_status(again, "Running", moment(70))
    builder.run_status(again, "Completed", moment(100))
    builder.redeliver(started, moment(110))  # after its expectation was fulfilled
    for minute in range(0, 271, 15):  # until 10:30: past 10:00, not 11:00
        builder.run_status(builder.run("demand-forecast"), "Queued", moment(minute + 3))
    scenario = builder.scenario()
    write_capture(scenario, tmp_path / "capture")
    want = [Fired("0", RUN_STUCK, "expiry", str(first["subject"]), str(first["id"]))]
    outcome = oracle(scenario)
    assert (outcome.fired, outcome.tight, outcome.duplicates, outcome.restarts[RUN_STUCK]) == (want, [], 2, 1)
    assert outcome.pending == Counter()

    output, report = replay(tmp_path, tmp_path / "capture", "replay")
    check_lines(lines_of(output), scenario, outcome)
    assert sorted(fired_of_lines(lines_of(output))) == want
    check_report(report, outcome)
    assert report["rules"][RUN_STUCK]["started"] == 2


def test_a_group_notifies_every_interval_while_events_join_then_ends(tmp_path: Path) -> None:
    builder = Builder(1)
    failed = [
        builder.run_status(builder.run("image-segmentation"), "Failed", moment(60 + minute))
        for minute in (0, 5, 13, 25, 45, 80, 150)
    ]
    other = builder.run_status(builder.run("pricing-elasticity"), "Failed", moment(62))
    for minute in range(0, 216, 10):  # until 09:35
        builder.run_status(builder.run("demand-forecast"), "Queued", moment(minute + 1))
    scenario = builder.scenario()
    write_capture(scenario, tmp_path / "capture")
    ids = [str(event["id"]) for event in failed]
    # Due at +10 (0, 5), then every 30 minutes: +40 (13, 25), +70 (45), +100 (80); +130 ends it
    # (nothing joined); 150 starts a new group, due at +160, after the end (+151): pending.
    want = sorted(
        [
            Fired("0", FAILED_RUNS, "group", "image-segmentation", ids[0], (ids[0], ids[1]), 2),
            Fired("0", FAILED_RUNS, "group", "image-segmentation", ids[2], (ids[2], ids[3]), 2),
            Fired("0", FAILED_RUNS, "group", "image-segmentation", ids[4], (ids[4],), 1),
            Fired("0", FAILED_RUNS, "group", "image-segmentation", ids[5], (ids[5],), 1),
            Fired("0", FAILED_RUNS, "group", "pricing-elasticity", str(other["id"]), (str(other["id"]),), 1),
        ]
    )
    outcome = oracle(scenario)
    assert (sorted(outcome.fired), outcome.tight) == (want, [])
    assert outcome.pending == Counter({(FAILED_RUNS, "group"): 1})

    output, report = replay(tmp_path, tmp_path / "capture", "replay")
    check_lines(lines_of(output), scenario, outcome)
    assert sorted(fired_of_lines(lines_of(output))) == want
    check_report(report, outcome)


def test_a_notification_lists_at_most_max_group_events_and_counts_the_rest(tmp_path: Path) -> None:
    builder = Builder(1)
    total = MAX_GROUP_EVENTS + 5
    failed = [
        builder.run_status(builder.run("image-segmentation"), "Failed", moment(60 + i * 0.05)) for i in range(total)
    ]
    for minute in range(0, 121, 10):  # until 08:00: past the notification (07:10) and the group's end (07:40)
        builder.run_status(builder.run("demand-forecast"), "Queued", moment(minute + 4))
    scenario = builder.scenario()
    write_capture(scenario, tmp_path / "capture")
    ids = tuple(str(event["id"]) for event in failed)
    want = [Fired("0", FAILED_RUNS, "group", "image-segmentation", ids[0], ids[:MAX_GROUP_EVENTS], total)]
    outcome = oracle(scenario)
    assert (outcome.fired, outcome.tight, outcome.unlisted) == (want, [], 5)

    output, report = replay(tmp_path, tmp_path / "capture", "replay")
    check_lines(lines_of(output), scenario, outcome)
    assert list(fired_of_lines(lines_of(output))) == want
    check_report(report, outcome)


def test_an_event_of_a_type_only_an_expectation_names_is_unmatched_when_it_fulfils_nothing(tmp_path: Path) -> None:
    # RunCompleted and ModelDeployed are named only by expectations' filters: an event of either
    # that fulfils nothing is unmatched, like any event no rule matches, not skipped as of a type
    # that no rule names.
    builder = Builder(1)
    builder.run_completed(builder.run("churn-training"), moment(10))
    builder.model_deployed(builder.service("fraud-scorer"), "fraud-scorer:3", moment(20))
    builder.run_status(builder.run("churn-training"), "Queued", moment(30))
    scenario = builder.scenario()
    write_capture(scenario, tmp_path / "capture")
    assert oracle(scenario).fired == []

    output, report = replay(tmp_path, tmp_path / "capture", "replay")
    assert output == b""
    assert report["skipped"]["unhandled_type"] == 0
    assert report["outcomes"]["unmatched"] == 3


def test_an_expectation_runs_from_the_enqueued_time_of_its_starting_event(tmp_path: Path) -> None:
    builder = Builder(1)
    delayed, prompt = builder.run("churn-training"), builder.run("churn-training")
    # Event Grid delivered this one 20 minutes after it happened: due at 10:20, not 10:00.
    builder.run_status(delayed, "Running", moment(60), enqueued=moment(80))
    started = builder.run_status(prompt, "Running", moment(61))  # due at 10:01
    for minute in range(0, 251, 10):  # until 10:15
        builder.run_status(builder.run("demand-forecast"), "Queued", moment(minute + 5))
    scenario = builder.scenario()
    write_capture(scenario, tmp_path / "capture")
    want = [Fired("0", RUN_STUCK, "expiry", str(started["subject"]), str(started["id"]))]
    outcome = oracle(scenario)
    assert (outcome.fired, outcome.tight, outcome.pending) == (want, [], Counter({(RUN_STUCK, "expiry"): 1}))

    output, report = replay(tmp_path, tmp_path / "capture", "replay")
    check_lines(lines_of(output), scenario, outcome)
    assert sorted(fired_of_lines(lines_of(output))) == want
    check_report(report, outcome)
