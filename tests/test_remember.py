"""Rules that remember, in the pure core: expectations, groups, their clock, caps and saved state."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from tests.support import START, TOPIC
from worker.core.accounting import Fate, Skip
from worker.core.memos import Expiry, Notification
from worker.core.partition import PartitionCore, Work
from worker.core.rules import RulesTable
from worker.core.state import SavedState
from worker.errors import RulesError
from worker.events import Message, Position
from worker.rulefiles.loading import load_rules
from worker.settings import CoreSettings

ML = "Microsoft.MachineLearningServices."
RULES = f"""
rules:
  - name: run-stuck
    filter:
      includedEventTypes: [{ML}RunStatusChanged]
      advancedFilters: [{{operatorType: StringIn, key: data.runStatus, values: [Running]}}]
    expect:
      within: 1h
      filter:
        any:
          - includedEventTypes: [{ML}RunCompleted]
          - includedEventTypes: [{ML}RunStatusChanged]
            advancedFilters: [{{operatorType: StringIn, key: data.runStatus, values: [Completed, Failed]}}]
    actions:
      - type: log
        message: "run {{{{ data.runId }}}} running for {{{{ expectation.within }}}}"
  - name: digest
    filter:
      includedEventTypes: [{ML}RunStatusChanged]
      advancedFilters: [{{operatorType: StringIn, key: data.runStatus, values: [Failed]}}]
    group: {{by: "{{{{ data.experimentName }}}}", wait: 2m, interval: 10m}}
    actions:
      - type: log
        message: "{{{{ group.count }}}} failed in {{{{ group.key }}}}"
"""


def table_of(tmp_path: Path, text: str = RULES) -> RulesTable:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return load_rules([path])


class Feed:
    """A partition fed event by event at given minutes past START, each released at once."""

    def __init__(self, core: PartitionCore) -> None:
        self.core = core
        self.sequence = 0
        self.fired: list[Work] = []
        self.acted: list[Work] = []

    def send(self, minute: float, event_id: str, subject: str, event_type: str, **data: object) -> None:
        at = START + timedelta(minutes=minute)
        body = {
            "id": event_id,
            "topic": TOPIC,
            "subject": subject,
            "eventType": ML + event_type,
            "eventTime": at.isoformat(),
            "data": data,
            "dataVersion": "2",
        }
        self.sequence += 1
        position = Position(self.core.partition_id, str(self.sequence * 100), self.sequence, at)
        self.take(self.core.receive(Message(orjson.dumps([body]), position)) + self.core.release_all())

    def advance(self, minute: float) -> None:
        self.take(self.core.advance((START + timedelta(minutes=minute)).timestamp()))

    def take(self, works: list[Work]) -> None:
        for work in works:
            (self.fired if work.memo is not None else self.acted).append(work)
            self.core.finish(work)

    def running(self, minute: float, run: str, event_id: str | None = None) -> None:
        event_id = event_id or f"{run}-running"
        self.send(minute, event_id, f"runs/{run}", "RunStatusChanged", runId=run, runStatus="Running")

    def completed(self, minute: float, run: str) -> None:
        self.send(minute, f"{run}-done", f"runs/{run}", "RunCompleted", runId=run)

    def failed(self, minute: float, run: str, experiment: str) -> None:
        self.send(
            minute, f"{run}-failed", f"runs/{run}", "RunStatusChanged", runId=run, runStatus="Failed",
            experimentName=experiment,
        )  # fmt: skip


def expiries(feed: Feed) -> list[tuple[str, str]]:
    return [(m.key, m.event.id) for w in feed.fired if isinstance(m := w.memo, Expiry)]


def notifications(feed: Feed) -> list[tuple[str, list[str], int]]:
    return [(m.key, [e.id for e in m.events], m.total) for w in feed.fired if isinstance(m := w.memo, Notification)]


def test_an_expectation_is_fulfilled_in_time_or_expires_once_the_clock_passes_its_deadline(tmp_path: Path) -> None:
    feed = Feed(PartitionCore("0", table_of(tmp_path)))
    feed.running(0, "a")
    feed.running(1, "b")
    feed.running(2, "c")
    feed.completed(30, "a")  # in time
    feed.advance(60)  # a was fulfilled; b is due at 61, c at 62
    assert expiries(feed) == []
    feed.advance(61)
    assert expiries(feed) == [("runs/b", "b-running")]
    feed.completed(62, "c")  # after c's deadline (62): it expires first, the late completion fulfils nothing
    assert expiries(feed) == [("runs/b", "b-running"), ("runs/c", "c-running")]
    tally = feed.core.counts()
    assert tally.expect_started["run-stuck"] == 3
    assert tally.expect_fulfilled["run-stuck"] == 1
    assert tally.expect_expired["run-stuck"] == 2
    assert feed.acted == []  # the starting events' own actions never run
    assert tally.check() == []


def test_a_second_start_does_not_move_the_deadline_and_a_duplicate_starts_nothing(tmp_path: Path) -> None:
    feed = Feed(PartitionCore("0", table_of(tmp_path)))
    feed.running(0, "a")
    feed.running(0.5, "a")  # the same event again: a duplicate
    feed.running(30, "a", event_id="a-running-again")  # a new start for the pending key
    feed.advance(60)
    assert expiries(feed) == [("runs/a", "a-running")]
    assert feed.core.counts().skipped[Skip.DUPLICATE] == 1


def test_an_expiry_renders_its_expectation_and_has_a_stable_idempotency_key(tmp_path: Path) -> None:
    feed = Feed(PartitionCore("0", table_of(tmp_path)))
    feed.running(0, "a")
    feed.advance(90)
    (work,) = feed.fired
    (action,) = work.actions
    assert isinstance(action.memo, Expiry)
    assert action.memo.context() == {"key": "runs/a", "deadline": "2026-11-01T10:00:00Z", "within": "1h"}
    again = Feed(PartitionCore("0", table_of(tmp_path)))
    again.running(0, "a")
    again.advance(90)
    assert again.fired[0].actions[0].idempotency_key == action.idempotency_key
    assert action.idempotency_key != again.fired[0].event.id


def test_an_event_only_an_expectation_names_is_handled_and_counted_matched(tmp_path: Path) -> None:
    feed = Feed(PartitionCore("0", table_of(tmp_path)))
    feed.running(0, "a")
    feed.completed(5, "a")  # RunCompleted: no rule's filter names it, an expect.filter does
    tally = feed.core.counts()
    assert tally.fates[Fate.MATCHED] == 2
    assert tally.skipped[Skip.UNHANDLED_TYPE] == 0
    assert tally.check() == []


def test_a_group_notifies_after_wait_then_once_per_interval_and_ends_when_quiet(tmp_path: Path) -> None:
    feed = Feed(PartitionCore("0", table_of(tmp_path)))
    feed.failed(0, "r1", "exp-a")
    feed.failed(0.5, "r2", "exp-a")
    feed.failed(1, "r3", "exp-b")
    feed.failed(1.5, "r4", "exp-a")
    feed.advance(2)  # exp-a's wait ends at 2: r1 r2 r4; exp-b's at 3
    assert notifications(feed) == [("exp-a", ["r1-failed", "r2-failed", "r4-failed"], 3)]
    feed.failed(5, "r5", "exp-a")
    feed.failed(6, "r6", "exp-a")
    feed.advance(11)
    assert notifications(feed)[1:] == [("exp-b", ["r3-failed"], 1)]
    feed.advance(12)  # exp-a's interval: 2 + 10
    assert notifications(feed)[2:] == [("exp-a", ["r5-failed", "r6-failed"], 2)]
    feed.advance(22)  # nothing joined: exp-a ends; a new failure starts a new group
    feed.failed(23, "r7", "exp-a")
    feed.advance(25)
    assert notifications(feed)[3:] == [("exp-a", ["r7-failed"], 1)]
    (action,) = feed.fired[-1].actions
    memo = action.memo
    assert isinstance(memo, Notification)
    assert memo.context()["count"] == 1
    assert feed.core.counts().group_notified["digest"] == 4


def test_a_group_lists_at_most_its_cap_and_counts_the_rest(tmp_path: Path) -> None:
    feed = Feed(PartitionCore("0", table_of(tmp_path), CoreSettings(max_group_events=2)))
    for i in range(5):
        feed.failed(i * 0.1, f"r{i}", "exp-a")
    feed.advance(3)
    assert notifications(feed) == [("exp-a", ["r0-failed", "r1-failed"], 5)]
    assert feed.core.counts().evictions["group_events_unlisted"] == 3


def test_pending_past_the_cap_is_forgotten_and_counted(tmp_path: Path) -> None:
    feed = Feed(PartitionCore("0", table_of(tmp_path), CoreSettings(max_pending=2)))
    for run in "abc":
        feed.running(0, run)
    feed.failed(0.5, "r1", "exp-a")
    tally = feed.core.counts()
    assert tally.evictions["expectations_forgotten"] == 1
    assert tally.evictions["groups_forgotten"] == 1
    assert tally.pending == {("run-stuck", "expect"): 2}


def test_what_is_pending_is_saved_and_taken_up_after_a_restart_and_fires_late(tmp_path: Path) -> None:
    table = table_of(tmp_path)
    first = Feed(PartitionCore("0", table))
    first.running(0, "a")
    first.running(1, "b")
    first.failed(1.5, "r1", "exp-a")
    state = SavedState.from_json(first.core.state().to_json(), "test")
    assert [(p.kind, p.key) for p in state.pending] == [("group", "exp-a"), ("expect", "runs/a"), ("expect", "runs/b")]
    second = Feed(PartitionCore("0", table, state=state, checkpoint=first.core.checkpoint))
    second.completed(10, "b")
    second.advance(70)
    assert expiries(second) == [("runs/a", "a-running")]
    assert notifications(second) == [("exp-a", ["r1-failed"], 1)]
    assert all(w.memo is not None and w.memo.late for w in second.fired)  # they fell due while none ran
    # The restored event is the event: its data and position came through the state.
    (expired,) = [w.event for w in second.fired if isinstance(w.memo, Expiry)]
    assert expired.data == {"runId": "a", "runStatus": "Running"}
    assert expired.position.sequence_number == 1


def test_a_fired_memo_not_finished_fires_again_after_a_restart_with_the_same_key(tmp_path: Path) -> None:
    table = table_of(tmp_path)
    core = PartitionCore("0", table)
    feed = Feed(core)
    feed.running(0, "a")
    fired = core.advance((START + timedelta(hours=2)).timestamp())  # not finished
    (work,) = fired
    key = work.actions[0].idempotency_key
    state = SavedState.from_json(core.state().to_json(), "test")
    assert [p.kind for p in state.pending] == ["expiry"]
    again = PartitionCore("0", table, state=state, checkpoint=core.checkpoint)
    (refired,) = again.fire_due()
    assert refired.actions[0].idempotency_key == key
    again.finish(refired)
    assert again.state().pending == ()
    core.finish(work)
    assert core.state().pending == ()


def test_pending_entries_of_a_removed_rule_are_dropped_and_counted(tmp_path: Path) -> None:
    first = Feed(PartitionCore("0", table_of(tmp_path)))
    first.running(0, "a")
    state = first.core.state()
    other = table_of(tmp_path, RULES.replace("run-stuck", "run-stuck-renamed"))
    second = PartitionCore("0", other, state=state, checkpoint=first.core.checkpoint)
    assert second.advance((START + timedelta(hours=2)).timestamp()) == []
    assert second.counts().evictions["pending_of_removed_rules"] == 1


def test_by_the_wall_clock_an_expiry_waits_the_window_too(tmp_path: Path) -> None:
    core = PartitionCore("0", table_of(tmp_path), CoreSettings(clock="wall", window=5))
    feed = Feed(core)
    feed.running(0, "a")
    deadline = (START + timedelta(hours=1)).timestamp()
    assert core.memory_due == deadline + 5
    assert core.fire_due(deadline + 4.9) == []
    (work,) = core.fire_due(deadline + 5)
    assert isinstance(work.memo, Expiry)


def test_a_version_1_state_reads_as_nothing_pending() -> None:
    state = SavedState.from_json(b'{"version": 1, "last_keys": [], "recent_ids": ["x"], "finished_beyond": []}', "t")
    assert state.pending == ()
    assert state.recent_ids == ("x",)


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ("expect: {within: 6x, filter: {}}", "'within': '6x' is not a duration"),
        ("expect: {filter: {}}", "'within' is required"),
        ("expect: {within: 1h}", "'expect' needs a 'filter'"),
        ("expect: {within: 1h, filter: {}, key: '{{ subject '}", "'key': template"),
        ("expect: {within: 1h, filter: {}, keys: x}", "unknown field 'keys' of 'expect' (did you mean 'key'?)"),
        ("group: {by: '{{ subject }}', wait: 2, interval: 1m}", "'wait' must be a duration"),
        ("group: {wait: 1m, interval: 1m}", "'group' needs 'by'"),
        ("group: {by: '{{ nothing }}', wait: 1m, interval: 1m}", "nothing"),
        ("group: [1]", "'group' must be a mapping"),
        (
            "expect: {within: 1h, filter: {}}\n    group: {by: x, wait: 1m, interval: 1m}",
            "'expect' or 'group', not both",
        ),
    ],
)
def test_validate_names_what_is_wrong_with_expect_and_group_and_where(
    tmp_path: Path, snippet: str, message: str
) -> None:
    text = f"rules:\n  - name: r\n    filter: {{}}\n    {snippet}\n    actions: [{{type: log}}]\n"
    with pytest.raises(RulesError) as caught:
        table_of(tmp_path, text)
    found = str(caught.value)
    assert message in found
    assert "rules.yaml:4:" in found or "rules.yaml:5:" in found


@pytest.mark.parametrize(
    ("by", "data", "key"),
    [
        ("{{ data.experimentName }}", {"experimentName": "exp-a"}, "exp-a"),
        ("{{ data.ExperimentName }}", {"experimentName": "exp-a"}, "exp-a"),  # members as filter keys find them
        ("{{ data.attempt }}", {"attempt": 3}, "3"),  # not a string: rendered
        ("{{ data.tags.team }}", {"tags": {"team": "vision"}}, "vision"),
        ("{{ data.experimentName | upper }}", {"experimentName": "exp-a"}, "EXP-A"),
        ("{{ data.missing }}", {}, None),  # does not render: counted, neither started nor joined
        ("{{ data.tags.team }}", {"tags": "flat"}, None),
    ],
)
def test_a_key_reads_as_its_template_renders(tmp_path: Path, by: str, data: dict[str, object], key: str | None) -> None:
    text = f"""
rules:
  - name: grouped
    filter: {{includedEventTypes: [{ML}RunStatusChanged]}}
    group: {{by: "{by}", wait: 1m, interval: 1m}}
    actions: [{{type: log}}]
"""
    feed = Feed(PartitionCore("0", table_of(tmp_path, text)))
    feed.send(0, "e1", "runs/a", "RunStatusChanged", **data)
    feed.advance(5)
    tally = feed.core.counts()
    if key is None:
        assert tally.key_failed["grouped"] == 1
        assert feed.fired == []
    else:
        assert notifications(feed) == [(key, ["e1"], 1)]
