"""The reorder buffer, sequencer keys, bounded memory and the checkpoint position, directly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import decode_one
from worker.core.bounded import RecentMap, RecentSet
from worker.core.ordering import BY_SEQUENCER, BY_TIME, ReorderBuffer, Sequencers
from worker.core.positions import PositionTracker
from worker.events import Position

STORAGE_CREATED = "Microsoft.Storage.BlobCreated"


def _event(event_type: str, data: object, time: str = "2026-11-01T09:00:00Z") -> object:
    return decode_one(
        {"id": "e1", "eventType": event_type, "subject": "s", "eventTime": time, "data": data, "dataVersion": ""}
    )


# --- sequencer keys ---------------------------------------------------------------------------------


def test_events_without_a_sequencer_order_by_time():
    early = _event("T", {}, "2026-11-01T09:00:00.000001Z")
    late = _event("T", {}, "2026-11-01T09:00:00.000002Z")
    keys = Sequencers()
    assert keys.key(early)[0] == BY_TIME  # type: ignore[arg-type]
    assert keys.key(early) < keys.key(late)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("low", "high"),
    [
        ("00000000000004420000000000028963", "00000000000004420000000000028964"),
        ("0000000000000442000000000002896A", "0000000000000442000000000002896B"),
        ("1", "2"),
        ("10", "9"),  # strings, not numbers: "10" < "9"
    ],
)
def test_a_configured_sequencer_orders_as_strings(low, high):
    keys = Sequencers({STORAGE_CREATED: "data.sequencer"})
    a = keys.key(_event(STORAGE_CREATED, {"sequencer": low}, "2026-11-01T10:00:00Z"))  # type: ignore[arg-type]
    b = keys.key(_event(STORAGE_CREATED, {"sequencer": high}, "2026-11-01T09:00:00Z"))  # type: ignore[arg-type]
    assert a[0] == b[0] == BY_SEQUENCER
    assert a < b  # the later time of ``a`` does not matter


def test_a_missing_sequencer_falls_back_to_time():
    keys = Sequencers({STORAGE_CREATED.upper(): "data.sequencer"})  # types compare ignoring case
    assert keys.key(_event(STORAGE_CREATED, {"sequencer": 5}))[0] == BY_TIME  # type: ignore[arg-type]
    assert keys.key(_event(STORAGE_CREATED, {"Sequencer": "5"}))[0] == BY_SEQUENCER  # type: ignore[arg-type]


def test_a_malformed_sequencer_key_is_refused():
    with pytest.raises(ValueError, match=r"'data\.\.sequencer'"):
        Sequencers({STORAGE_CREATED: "data..sequencer"})


# --- the reorder buffer -----------------------------------------------------------------------------


def _key(n: int) -> tuple[int, int, int, int]:
    return (BY_TIME, n, n, 0)


def test_an_event_waits_for_the_window_then_leaves_with_the_earlier_ones_of_its_subject():
    buffer: ReorderBuffer[str] = ReorderBuffer(window=10, capacity=100)
    assert buffer.push("s2", "s", _key(2), enqueued=100) == []
    assert buffer.push("s1", "s", _key(1), enqueued=101) == []  # earlier key, enqueued later
    assert buffer.push("x", "other", _key(3), enqueued=105) == []
    # the watermark reaches 100: s2 ripens, and s1 (a lower key of its subject) leaves first
    assert buffer.push("y", "other", _key(4), enqueued=110) == ["s1", "s2"]
    assert len(buffer) == 2
    assert buffer.release_all() == ["x", "y"]
    assert len(buffer) == 0


def test_a_zero_window_releases_on_arrival():
    buffer: ReorderBuffer[int] = ReorderBuffer(window=0, capacity=10)
    assert buffer.push(1, "s", _key(1), enqueued=1) == [1]
    assert buffer.push(2, "s", _key(2), enqueued=None) == [2]


def test_the_capacity_releases_the_earliest_early_and_counts_it():
    buffer: ReorderBuffer[int] = ReorderBuffer(window=1_000, capacity=2)
    assert buffer.push(1, "a", _key(1), enqueued=1) == []
    assert buffer.push(2, "b", _key(2), enqueued=2) == []
    assert buffer.push(3, "c", _key(3), enqueued=3) == [1]
    assert buffer.forced == 1
    assert len(buffer) == 2


@pytest.mark.parametrize(("window", "capacity"), [(-1, 1), (1, 0)])
def test_bad_buffer_settings_are_refused(window, capacity):
    with pytest.raises(ValueError, match="must"):
        ReorderBuffer(window=window, capacity=capacity)


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[float, list[tuple[int, str, int, float]]]:
    """Events (serial, subject, key, enqueued) whose delays stay under the window, in arrival order."""
    window = draw(st.sampled_from([0.0, 1.0, 5.0]))
    count = draw(st.integers(0, 60))
    subjects = draw(st.lists(st.sampled_from("abcd"), min_size=count, max_size=count))
    gaps = draw(st.lists(st.sampled_from([0.0, 0.25, 1.0, 3.0]), min_size=count, max_size=count))
    delays = draw(st.lists(st.floats(0, max(window - 0.001, 0)), min_size=count, max_size=count))
    # arrival (enqueued) time = publication time + a delay shorter than the window
    published = [sum(gaps[: i + 1]) for i in range(count)]
    events = [(i, subjects[i], i, published[i] + delays[i]) for i in range(count)]
    events.sort(key=lambda e: e[3])
    return window, events


@settings(max_examples=300, deadline=None)
@given(deliveries(), st.integers(1, 80))
def test_within_the_window_every_subject_leaves_in_order_and_nothing_is_lost_or_doubled(case, capacity):
    window, events = case
    buffer: ReorderBuffer[tuple[int, str, int]] = ReorderBuffer(window, capacity)
    released: list[tuple[int, str, int]] = []
    for serial, subject, key, enqueued in events:
        released += buffer.push((serial, subject, key), subject, _key(key), enqueued)
        assert len(buffer) <= capacity
    released += buffer.release_all()
    assert sorted(r[0] for r in released) == sorted(e[0] for e in events)  # each exactly once
    if buffer.forced == 0:
        for subject in "abcd":
            keys = [r[2] for r in released if r[1] == subject]
            assert keys == sorted(keys)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([0.0, 1.0, 5.0]),
    st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 30), st.floats(0, 40)), max_size=60),
    st.integers(1, 80),
)
def test_stragglers_and_enqueued_times_out_of_order_lose_or_double_nothing(window, events, capacity):
    """Keys that repeat or come after their subject has moved on, and enqueued times that go back."""
    buffer: ReorderBuffer[int] = ReorderBuffer(window, capacity)
    released: list[int] = []
    for serial, (subject, key, enqueued) in enumerate(events):
        released += buffer.push(serial, subject, _key(key), enqueued)
        assert len(buffer) <= capacity
        assert len(buffer) + len(released) == serial + 1
    released += buffer.release_all()
    assert sorted(released) == list(range(len(events)))
    assert len(buffer) == 0


def test_an_event_behind_one_that_left_leaves_once():
    buffer: ReorderBuffer[str] = ReorderBuffer(window=1, capacity=10)
    buffer.push("five", "s", _key(5), enqueued=10)
    assert buffer.push("x", "other", _key(6), enqueued=12) == ["five"]
    assert buffer.push("three", "s", _key(3), enqueued=12) == []  # a straggler: late, held all the same
    assert buffer.push("y", "other", _key(7), enqueued=14) == ["x", "three"]
    assert buffer.release_all() == ["y"]


# --- bounded memory ---------------------------------------------------------------------------------


def test_recent_set_forgets_the_oldest_and_counts():
    ids = RecentSet[str](2, ["a", "b"])
    ids.add("a")  # refreshes a
    ids.add("c")
    assert list(ids) == ["a", "c"]
    assert "b" not in ids
    assert ids.evicted == 1


def test_recent_map_forgets_the_least_recently_set_and_counts():
    keys = RecentMap[str, int](2, [("a", 1), ("b", 2)])
    keys["a"] = 3
    keys["c"] = 4
    assert list(keys.items()) == [("a", 3), ("c", 4)]
    assert keys.get("b") is None
    assert keys.evicted == 1
    assert len(keys) == 2


@pytest.mark.parametrize("kind", [RecentSet, RecentMap])
def test_bounded_collections_need_room_for_one(kind):
    with pytest.raises(ValueError, match="at least 1"):
        kind(0)


# --- the checkpoint position ------------------------------------------------------------------------


def _at(sequence: int) -> Position:
    return Position("0", str(sequence * 100), sequence, datetime(2026, 11, 1, tzinfo=UTC) + timedelta(seconds=sequence))


def test_the_checkpoint_waits_for_the_first_unfinished_message():
    tracker = PositionTracker()
    first, second, third = tracker.open(_at(1), 2), tracker.open(_at(2), 1), tracker.open(_at(3), 1)
    tracker.finish(second, "b")
    tracker.finish(third, "c")
    assert tracker.checkpoint is None
    assert list(tracker.finished_beyond()) == ["b", "c"]
    tracker.finish(first, "a1")
    assert tracker.checkpoint is None  # one event of the first message is still unfinished
    tracker.finish(first, "a2")
    assert tracker.checkpoint == _at(3)
    assert list(tracker.finished_beyond()) == []
    assert len(tracker) == 0


def test_a_message_without_events_moves_the_checkpoint_at_once():
    tracker = PositionTracker(_at(0))
    tracker.open(_at(1), 0)
    assert tracker.checkpoint == _at(1)


def test_finishing_an_event_twice_is_refused():
    tracker = PositionTracker()
    ticket = tracker.open(_at(1), 1)
    tracker.finish(ticket)
    with pytest.raises(ValueError, match="already finished"):
        tracker.finish(ticket)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(1, 3), max_size=30), st.randoms(use_true_random=False))
def test_the_checkpoint_never_passes_an_unfinished_event(sizes, rng):
    tracker = PositionTracker()
    tickets = [tracker.open(_at(i), n) for i, n in enumerate(sizes)]
    events = [(i, t) for i, t in enumerate(tickets) for _ in range(t.remaining)]
    rng.shuffle(events)
    unfinished = {i: t.remaining for i, t in enumerate(tickets)}
    for i, ticket in events:
        tracker.finish(ticket)
        unfinished[i] -= 1
        first_pending = min((j for j, n in unfinished.items() if n), default=len(sizes))
        # the checkpoint is the last message before the first one with an unfinished event
        assert tracker.checkpoint == (_at(first_pending - 1) if first_pending else None)
