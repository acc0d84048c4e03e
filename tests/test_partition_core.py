"""One partition's core, without I/O: order, dedupe, lateness, checkpoint position, state, accounting."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import compile_ok
from worker.actions import ActionSpec
from worker.actions.log import LogParams
from worker.core.accounting import FOREIGN_TOPICS_KEPT, Fate, Skip, Tally
from worker.core.partition import PartitionCore, Work
from worker.core.rules import Rule, RulesTable
from worker.core.state import SavedState
from worker.errors import StateError
from worker.events import Message, Position
from worker.settings import CoreSettings, LatePolicy

WORKSPACE = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws1"
RUN_COMPLETED = "Microsoft.MachineLearningServices.RunCompleted"
T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
LOG = ActionSpec("log", 0, LogParams())


def table(*, topics: tuple[str, ...] = (WORKSPACE,), rules: tuple[Rule, ...] | None = None) -> RulesTable:
    if rules is None:
        rules = (
            Rule(
                "runs",
                compile_ok(
                    {
                        "includedEventTypes": [RUN_COMPLETED],
                        "not": {
                            "advancedFilters": [{"operatorType": "BoolEquals", "key": "data.quiet", "value": True}]
                        },
                    }
                ),
                (LOG,),
            ),
        )
    return RulesTable.build(rules, topics)


@dataclass(frozen=True)
class Published:
    id: str
    subject: str
    time: datetime
    #: No rule acts on a quiet event (it is unmatched).
    quiet: bool = False


def body(event: Published, *, topic: str = WORKSPACE, event_type: str = RUN_COMPLETED) -> bytes:
    return orjson.dumps(
        [
            {
                "id": event.id,
                "topic": topic,
                "subject": event.subject,
                "eventType": event_type,
                "eventTime": event.time.isoformat(),
                "data": {"quiet": event.quiet},
                "dataVersion": "2",
            }
        ]
    )


def message(sequence: int, enqueued: datetime, payload: bytes, partition: str = "0") -> Message:
    return Message(payload, Position(partition, str(sequence * 1000), sequence, enqueued))


def ids(works: list[Work]) -> list[str]:
    return [w.event.id for w in works]


# --- examples ---------------------------------------------------------------------------------------


def test_events_of_a_subject_leave_in_time_order_once_the_window_has_passed():
    core = PartitionCore("0", table(), CoreSettings(window=5))
    second = Published("b", "runs/1", T0 + timedelta(seconds=1))
    first = Published("a", "runs/1", T0)
    other = Published("c", "runs/2", T0 + timedelta(seconds=2))
    assert core.receive(message(1, T0 + timedelta(seconds=1), body(second))) == []
    assert core.receive(message(2, T0 + timedelta(seconds=2), body(first))) == []
    assert core.buffered == 2
    out = core.receive(message(3, T0 + timedelta(seconds=7), body(other)))  # watermark: T0 + 2 s
    assert ids(out) == ["a", "b"]
    assert core.checkpoint is None  # nothing is finished yet
    for work in out:
        core.finish(work)
    assert core.checkpoint == Position("0", "2000", 2, T0 + timedelta(seconds=2))
    assert ids(core.release_all()) == ["c"]


def test_what_the_buffer_holds_when_the_partition_closes_is_handed_over():
    core = PartitionCore("0", table(), CoreSettings(window=60))
    core.receive(message(1, T0, body(Published("a", "s1", T0))))
    later = T0 + timedelta(seconds=61)
    [released] = core.receive(message(2, later, body(Published("b", "s2", later))))  # the watermark passes "a"
    core.finish(released)
    core.receive(message(3, later, body(Published("c", "s3", later))))
    assert core.buffered == 2
    assert core.hand_over() == 2
    counts = core.counts()
    assert counts.read == 3
    assert counts.fates == {Fate.MATCHED: 1, Fate.HANDED_OVER: 2}
    assert counts.check() == []
    assert core.checkpoint == Position("0", "1000", 1, T0)  # never past what was handed over
    # Their next owner reads them again from the checkpoint: they are not duplicates there.
    state = core.state()
    assert set(state.recent_ids) == {"a"}
    assert state.finished_beyond == ()
    after = PartitionCore("0", table(), CoreSettings(window=0), state=state, checkpoint=core.checkpoint)
    again = [
        *after.receive(message(2, later, body(Published("b", "s2", later)))),
        *after.receive(message(3, later, body(Published("c", "s3", later)))),
    ]
    assert ids(again) == ["b", "c"]


def test_the_partition_going_idle_releases_the_buffer():
    core = PartitionCore("0", table(), CoreSettings(window=5))
    core.receive(message(1, T0, body(Published("a", "s", T0))), now=100.0)
    assert core.release_idle(now=104.9) == []
    assert ids(core.release_idle(now=105.0)) == ["a"]


@pytest.mark.parametrize(
    ("payload", "fate", "reason"),
    [
        (b"\xff\xfe", Fate.INVALID, "not_utf8"),
        (b"{not json", Fate.INVALID, "not_json"),
        (b'{"a": 1}', Fate.INVALID, "not_an_event"),
        (body(Published("x", "s", T0), topic=WORKSPACE.replace("ws1", "ws2")), Fate.SKIPPED, Skip.FOREIGN_TOPIC),
        (body(Published("x", "s", T0), event_type="Other.Type"), Fate.SKIPPED, Skip.UNHANDLED_TYPE),
        (body(Published("x", "s", T0, quiet=True)), Fate.UNMATCHED, None),
    ],
)
def test_what_is_not_acted_on_is_counted_and_finished_at_once(payload, fate, reason):
    core = PartitionCore("7", table(), CoreSettings(window=0))
    assert core.receive(message(1, T0, payload)) == []
    counts = core.counts()
    assert counts.fates == {fate: 1}
    assert counts.by_partition == {"7": {fate: 1}}
    if fate is Fate.INVALID:
        assert counts.invalid == {reason: 1}
    elif fate is Fate.SKIPPED:
        assert counts.skipped == {reason: 1}
    assert core.checkpoint is not None
    assert core.checkpoint.sequence_number == 1
    assert counts.check() == []


def test_a_matched_rule_without_actions_counts_as_matched_and_finishes():
    rules = (Rule("watch", compile_ok({}), ()),)
    core = PartitionCore("0", table(rules=rules), CoreSettings(window=0))
    assert core.receive(message(1, T0, body(Published("a", "s", T0)))) == []
    assert core.counts().fates == {Fate.MATCHED: 1}
    assert core.counts().rule_matches == {"watch": 1}
    assert core.checkpoint is not None


def test_duplicates_are_skipped_and_counted():
    core = PartitionCore("0", table(), CoreSettings(window=0))
    event = Published("a", "s", T0)
    assert ids(core.receive(message(1, T0, body(event)))) == ["a"]
    assert core.receive(message(2, T0, body(event))) == []
    assert core.counts().skipped == {Skip.DUPLICATE: 1}


@pytest.mark.parametrize("policy", list(LatePolicy))
def test_a_late_event_follows_the_policy(policy):
    core = PartitionCore("0", table(), CoreSettings(window=0, late=policy))
    later = Published("b", "s", T0 + timedelta(seconds=1))
    earlier = Published("a", "s", T0)
    [first] = core.receive(message(1, T0, body(later)))
    out = core.receive(message(2, T0, body(earlier)))
    counts = core.counts()
    if policy is LatePolicy.SKIP:
        assert out == []
        assert counts.skipped == {Skip.LATE: 1}
    else:
        assert ids(out) == ["a"]
        assert out[0].late
        assert all(action.late for action in out[0].actions)
        assert counts.late_processed == 1
        assert counts.fates == {Fate.MATCHED: 2}
    assert not first.late


def test_a_message_holding_several_events_is_finished_when_all_are():
    core = PartitionCore("0", table(), CoreSettings(window=0))
    events = [Published(f"e{i}", f"s{i}", T0) for i in range(3)]
    payload = orjson.dumps([orjson.loads(body(e))[0] for e in events])
    works = core.receive(message(1, T0, payload))
    assert ids(works) == ["e0", "e1", "e2"]
    core.finish(works[0])
    core.finish(works[2])
    assert core.checkpoint is None
    assert set(core.state().finished_beyond) == {"e0", "e2"}
    core.finish(works[1])
    assert core.checkpoint is not None
    assert core.state().finished_beyond == ()


def test_memory_caps_count_what_they_forget():
    core = PartitionCore("0", table(), CoreSettings(window=1_000, max_buffered=2, max_subjects=2, max_ids=2))
    for i in range(4):
        core.receive(message(i, T0, body(Published(f"e{i}", f"s{i}", T0 + timedelta(seconds=i)))))
    evictions = core.counts().evictions
    assert evictions["reorder_buffer_released_early"] == 2
    assert evictions["ids_forgotten"] == 2
    core.release_all()
    assert core.counts().evictions["subjects_forgotten"] == 2


def test_state_round_trips_through_json():
    state = SavedState(
        last_keys=(("runs/1", (0, 12, 3, 0)), ("blobs/x", (1, "0000A", 4, 1))),
        recent_ids=("a", "b"),
        finished_beyond=("c",),
    )
    assert SavedState.from_json(state.to_json(), "p0") == state


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"nope", "unreadable"),
        (b"[]", "unreadable"),
        (b'{"version": 1, "last_keys": [["s", [0, 1]]], "recent_ids": [], "finished_beyond": []}', "list of 4"),
        (b'{"version": 1, "recent_ids": [], "finished_beyond": []}', "unreadable"),
        (b'{"version": 9, "last_keys": [], "recent_ids": [], "finished_beyond": []}', "version 9"),
    ],
)
def test_unreadable_state_is_a_clear_error(data, fragment):
    with pytest.raises(StateError, match=fragment) as caught:
        SavedState.from_json(data, "checkpoint/0")
    assert "checkpoint/0" in str(caught.value)


# --- properties -------------------------------------------------------------------------------------


@st.composite
def streams(draw: st.DrawFn) -> tuple[float, list[tuple[datetime, bytes, str]]]:
    """Deliveries (enqueued time, body, event id) in arrival order: delays under the window, duplicates."""
    window = draw(st.sampled_from([0.0, 2.0, 10.0]))
    count = draw(st.integers(1, 40))
    published: list[Published] = []
    moment = T0
    for i in range(count):
        moment += timedelta(seconds=draw(st.sampled_from([0, 0.5, 1, 4])))
        quiet = draw(st.integers(0, 3)) == 0
        published.append(Published(f"id-{i}", f"runs/{draw(st.integers(0, 3))}", moment, quiet))
    deliveries = []
    for event in published:
        copies = 1 + draw(st.integers(0, 2)) * draw(st.booleans())
        for copy in range(copies):
            # the first copy arrives within the window; copies may come at any time later
            limit = max(window - 0.01, 0) if copy == 0 else 60.0
            delay = timedelta(seconds=draw(st.floats(0, limit)))
            deliveries.append((event.time + delay, body(event), event.id))
    deliveries.sort(key=lambda d: d[0])
    return window, deliveries


def _quiet(payload: bytes) -> bool:
    return bool(orjson.loads(payload)[0]["data"]["quiet"])


def _acted(deliveries: list[tuple[datetime, bytes, str]]) -> set[str]:
    return {event_id for _, payload, event_id in deliveries if not _quiet(payload)}


def _run(
    core: PartitionCore,
    deliveries: list[tuple[datetime, bytes, str]],
    rng: random.Random,
    first_sequence: int = 0,
    stop_after: int | None = None,
    done: frozenset[str] = frozenset(),
) -> tuple[list[Work], list[Work]]:
    """Feed ``deliveries`` and finish work in a random order that keeps each subject's order.

    Checks after every step that the checkpoint never passes an unfinished event (``done``: ids
    finished before a restart). Returns the work finished and the work still pending (released,
    unfinished) when stopped.
    """
    pending: dict[str, list[Work]] = defaultdict(list)
    finished: list[Work] = []
    unfinished_sequences: dict[str, int] = {}  # event id -> sequence number, until finished
    seen: set[str] = set(done)

    def release(works: list[Work]) -> None:
        for work in works:
            pending[work.subject].append(work)

    def finish_some() -> None:
        while pending and rng.random() < 0.7:
            subject = rng.choice(sorted(pending))
            work = pending[subject].pop(0)
            if not pending[subject]:
                del pending[subject]
            core.finish(work)
            finished.append(work)
            unfinished_sequences.pop(work.event.id)

    def check() -> None:
        checkpoint = core.checkpoint
        if checkpoint is not None and unfinished_sequences:
            assert checkpoint.sequence_number is not None
            assert checkpoint.sequence_number < min(unfinished_sequences.values())

    for step, (enqueued, payload, event_id) in enumerate(deliveries):
        if step == stop_after:
            return finished, [w for ws in pending.values() for w in ws]
        sequence = first_sequence + step
        if event_id not in seen:
            seen.add(event_id)
            if not _quiet(payload):  # the model follows the acted-on events; quiet ones finish inside
                unfinished_sequences[event_id] = sequence
        release(core.receive(message(sequence, enqueued, payload)))
        check()
        finish_some()
        check()
    release(core.release_all())
    while pending:
        finish_some()
        check()
    return finished, []


@settings(max_examples=200, deadline=None)
@given(streams(), st.randoms(use_true_random=False))
def test_any_arrival_order_within_the_window_keeps_subject_order_and_loses_nothing(stream, rng):
    window, deliveries = stream
    core = PartitionCore("0", table(), CoreSettings(window=window))
    finished, _ = _run(core, deliveries, rng)
    unique = {event_id for _, _, event_id in deliveries}
    acted = _acted(deliveries)
    # every event acted on exactly once
    assert sorted(ids(finished)) == sorted(acted)
    # each subject released in sequencer order (finishing keeps it, so check the finished order)
    by_subject: dict[str, list[tuple[int, int | str, int, int]]] = defaultdict(list)
    for work in finished:
        by_subject[work.subject].append(work.key)
    for keys in by_subject.values():
        assert keys == sorted(keys)
    counts = core.counts()
    assert counts.check() == []
    assert counts.read == len(deliveries)
    assert counts.fates[Fate.MATCHED] == len(acted)
    assert counts.fates[Fate.UNMATCHED] == len(unique) - len(acted)
    assert counts.skipped == ({Skip.DUPLICATE: len(deliveries) - len(unique)} if len(deliveries) > len(unique) else {})
    assert core.checkpoint is not None
    assert core.checkpoint.sequence_number == len(deliveries) - 1
    assert core.state().finished_beyond == ()


@settings(max_examples=200, deadline=None)
@given(streams(), st.randoms(use_true_random=False), st.data())
def test_a_restart_from_the_checkpoint_and_state_neither_repeats_nor_loses(stream, rng, data):
    window, deliveries = stream
    crash_at = data.draw(st.integers(0, len(deliveries)))
    core = PartitionCore("0", table(), CoreSettings(window=window))
    before, _ = _run(core, deliveries, rng, stop_after=crash_at)
    checkpoint = core.checkpoint
    saved = SavedState.from_json(core.state().to_json(), "p0")
    # what a restarted worker reads: everything after the checkpoint
    resume = 0 if checkpoint is None else checkpoint.sequence_number + 1  # type: ignore[operator]
    restarted = PartitionCore("0", table(), CoreSettings(window=window), state=saved, checkpoint=checkpoint)
    after, _ = _run(restarted, deliveries[resume:], rng, first_sequence=resume, done=frozenset(ids(before)))
    done_before, done_after = ids(before), ids(after)
    assert not set(done_before) & set(done_after), "an action finished before the crash was repeated"
    assert sorted(done_before + done_after) == sorted(_acted(deliveries))


def test_the_tally_check_names_what_does_not_add_up():
    tally = Tally()
    tally.read = 2
    tally.count_skip("0", "T", Skip.LATE)
    tally.count("0", "T", Fate.SKIPPED)  # a skip without its reason
    tally.rule_matches["r"] = 1
    problems = tally.check()
    assert any("skip reasons" in p for p in problems)
    assert any("a rule matched more events" in p for p in problems)
    assert not any("events were read" in p for p in problems)
    tally.read = 4
    assert "outcomes add up to 2, but 4 events were read" in tally.check()


def test_work_of_a_subject_must_finish_in_release_order():
    core = PartitionCore("0", table(), CoreSettings(window=0))
    first = core.receive(message(1, T0, body(Published("a", "s", T0))))
    second = core.receive(message(2, T0, body(Published("b", "s", T0 + timedelta(seconds=1)))))
    with pytest.raises(ValueError, match="out of its release order"):
        core.finish(second[0])
    core.finish(first[0])
    core.finish(second[0])
    assert core.checkpoint is not None
    assert core.checkpoint.sequence_number == 2


def test_the_persisted_state_can_be_capped_to_the_newest_but_keeps_what_prevents_repeats():
    core = PartitionCore("0", table(), CoreSettings(window=0))
    works = []
    for n in range(6):
        works += core.receive(message(n, T0 + timedelta(seconds=n), body(Published(f"e{n}", f"runs/{n}", T0))))
    works += core.release_all()
    for work in works[1:]:  # e0 stays in flight: the checkpoint cannot move, e1..e5 finish beyond it
        core.finish(work)
    full = core.state()
    capped = core.state(max_ids=2, max_subjects=3)
    assert full.recent_ids == ("e1", "e2", "e3", "e4", "e5")
    assert capped.recent_ids == ("e4", "e5")  # the newest
    assert [subject for subject, _ in capped.last_keys] == [subject for subject, _ in full.last_keys][-3:]
    assert capped.finished_beyond == full.finished_beyond == ("e1", "e2", "e3", "e4", "e5")
    assert core.state(max_ids=0, max_subjects=0).last_keys == ()


# --- too old to act on --------------------------------------------------------------------------------


def aged(name: str, max_age: float | None, *, actions: bool = True) -> Rule:
    return Rule(name, compile_ok({"includedEventTypes": [RUN_COMPLETED]}), (LOG,) if actions else (), max_age=max_age)


def test_a_rule_does_not_act_on_an_event_older_than_its_max_age():
    core = PartitionCore("0", table(rules=(aged("recent", 3600), aged("audit", None))), CoreSettings(window=0))
    old = Published("old", "runs/1", T0 - timedelta(hours=2))
    fresh = Published("fresh", "runs/2", T0 - timedelta(minutes=5))
    wall = T0.timestamp()
    out = core.receive(message(1, T0, body(old)), wall=wall) + core.receive(message(2, T0, body(fresh)), wall=wall)
    assert [(w.event.id, [r.name for r in w.rules]) for w in out] == [
        ("old", ["audit"]),
        ("fresh", ["recent", "audit"]),
    ]
    assert core.tally.rule_stale == {"recent": 1}
    assert core.tally.rule_matches == {"recent": 1, "audit": 2}
    assert core.tally.fates[Fate.MATCHED] == 2


def test_an_event_all_of_whose_matching_rules_are_stale_is_skipped_as_stale():
    core = PartitionCore(
        "0",
        table(rules=(aged("recent", None), aged("counted", None, actions=False))),
        CoreSettings(window=0, max_age=3600),
    )
    old = Published("old", "runs/1", T0 - timedelta(hours=2))
    assert core.receive(message(1, T0, body(old)), wall=T0.timestamp()) == []
    assert core.tally.skipped[Skip.STALE] == 1
    assert core.tally.rule_stale == {"recent": 1, "counted": 1}
    assert core.tally.rule_matches == {}
    assert core.tally.check() == []
    assert core.checkpoint == Position("0", "1000", 1, T0)  # finished at once


def test_an_events_age_runs_to_its_enqueued_time_unless_a_wall_clock_is_given():
    settings = CoreSettings(window=0, max_age=3600)
    late_retry = Published("retry", "runs/1", T0 - timedelta(days=1))  # Event Grid's retry, a day late
    prompt = Published("prompt", "runs/2", T0 - timedelta(seconds=3))
    for wall, acted in ((None, ["prompt"]), ((T0 + timedelta(days=2)).timestamp(), [])):
        core = PartitionCore("0", table(rules=(aged("runs", None),)), settings)
        out = core.receive(message(1, T0, body(late_retry)), wall=wall)
        out += core.receive(message(2, T0, body(prompt)), wall=wall)
        assert ids(out) == acted
        assert core.tally.skipped[Skip.STALE] == 2 - len(acted)


def test_a_rules_own_max_age_wins_over_the_default_and_no_limit_means_none():
    rules = (aged("long", 7 * 86_400), aged("default", None))
    old = Published("old", "runs/1", T0 - timedelta(days=2))
    for default, acting in ((3600.0, ["long"]), (None, ["long", "default"])):
        core = PartitionCore("0", table(rules=rules), CoreSettings(window=0, max_age=default))
        (work,) = core.receive(message(1, T0, body(old)), wall=T0.timestamp())
        assert [r.name for r in work.rules] == acting


def test_foreign_topics_are_counted_by_topic_up_to_a_cap():
    core = PartitionCore("0", table(), CoreSettings(window=0))
    for i in range(FOREIGN_TOPICS_KEPT + 5):
        core.receive(message(i, T0, body(Published(f"e{i}", "runs/1", T0), topic=f"/workspaces/other-{i}")))
    core.receive(message(99, T0, body(Published("again", "runs/1", T0), topic="/workspaces/other-0")))
    tally = core.counts()
    assert tally.skipped[Skip.FOREIGN_TOPIC] == FOREIGN_TOPICS_KEPT + 6
    assert len(tally.foreign_topics) == FOREIGN_TOPICS_KEPT
    assert tally.foreign_topics["/workspaces/other-0"] == 2
    merged = Tally()
    merged.add(tally)
    assert merged.foreign_topics == tally.foreign_topics
