"""Where a consumer group stands and where a reset moves it: the lag, claims, the table, the targets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.checkpoints.standing import (
    Claim,
    Move,
    PartitionEnd,
    Standing,
    Stored,
    Target,
    at_time,
    claim_state,
    document,
    earliest,
    lag,
    latest,
    refusals,
    rows,
    table,
    unknown_partitions,
)

NOW = datetime(2026, 11, 30, 8, 0, 0, tzinfo=UTC)
EXPIRY = 60.0


def end(
    partition: str = "0", begin: int = 0, last: int = 41, offset: str = "4100", *, empty: bool = False
) -> PartitionEnd:
    return PartitionEnd(partition, begin, last, offset, None if empty else NOW - timedelta(minutes=1), empty)


def claimed(owner: str, seconds_ago: float) -> Claim:
    return Claim(owner, NOW - timedelta(seconds=seconds_ago))


@pytest.mark.parametrize(
    ("claim", "state"),
    [
        (None, "none"),
        (claimed("", 1), "released"),  # the SDK empties the owner on a clean stop
        (claimed("w1", 5), "live"),
        (claimed("w1", 59.9), "live"),
        (claimed("w1", 60), "expired"),  # as the SDK decides: claimed + expiry > now is live
        (claimed("w1", 3600), "expired"),
        (Claim("w1", None), "expired"),
    ],
)
def test_a_claim_is_live_while_younger_than_the_expiry(claim: Claim | None, state: str) -> None:
    assert claim_state(claim, NOW, EXPIRY) == state


@pytest.mark.parametrize(
    ("partition", "checkpoint", "expected"),
    [
        (end(last=41), None, 42),  # no checkpoint: the whole partition
        (end(begin=100, last=141), None, 42),  # what retention kept of it
        (end(last=-1, offset="-1", empty=True), None, 0),
        (end(last=41), Stored("3000", 30), 11),
        (end(last=41), Stored("4100", 41), 0),
        (end(last=41), Stored("-1", -1), 42),  # reset to the start: KEDA counts every event
        (end(last=41), Stored("9000", 90), 0),  # the hub's answer older than the checkpoint
    ],
)
def test_the_lag_is_keda_s_count(partition: PartitionEnd, checkpoint: Stored | None, expected: int) -> None:
    assert lag(Standing(partition, checkpoint, None)) == expected


ends = st.builds(
    lambda begin, count: PartitionEnd("0", begin, begin + count - 1, "-1" if count == 0 else "123", None, count == 0),
    st.integers(0, 10**9),
    st.integers(0, 10**6),
)


@given(ends)
def test_a_reset_to_the_start_counts_the_whole_partition_and_to_the_end_nothing(partition: PartitionEnd) -> None:
    """What KEDA reads from the checkpoints a reset writes: the lag of a partition not checkpointed yet,
    and none."""
    start, last = earliest(partition), latest(partition)
    assert start.offset == "-1"
    assert lag(Standing(partition, Stored(start.offset, start.sequence_number), None)) == lag(
        Standing(partition, None, None)
    )
    assert lag(Standing(partition, Stored(last.offset, last.sequence_number), None)) == 0


def test_latest_is_the_last_enqueued_event_or_the_start_of_a_partition_never_written() -> None:
    assert latest(end(last=41, offset="4100")) == Target("4100", 41, "after the last enqueued event")
    never = latest(end(last=-1, offset="-1", empty=True))
    assert (never.offset, never.sequence_number) == ("-1", -1)


@pytest.mark.parametrize(
    ("first", "before", "expected"),
    [
        (20, Stored("1900", 19), ("1900", 19)),  # just before the first event at or after the time
        (0, None, ("-1", -1)),  # the first event of the partition: its start
        (100, None, ("-1", 99)),  # the first that retention kept
        (20, Stored("1500", 15), ("-1", 19)),  # what came back is not its predecessor (gone since): the start
        (None, None, ("4100", 41)),  # nothing at or after the time: after the last event
    ],
)
def test_a_time_resolves_to_the_event_before_the_first_at_or_after_it(
    first: int | None, before: Stored | None, expected: tuple[str, int]
) -> None:
    moment = NOW - timedelta(hours=1)
    target = at_time(end(begin=100 if first == 100 else 0), moment, first, before)
    assert (target.offset, target.sequence_number) == expected
    assert "2026-11-30T07:00:00.000Z" in target.meaning


def test_rows_and_the_table_line_up_and_say_what_has_no_checkpoint() -> None:
    standings = [
        Standing(end("10", last=5, offset="500"), Stored("300", 3, NOW - timedelta(seconds=30)), claimed("w-1", 4)),
        Standing(end("2", last=1234567, offset="9"), None, claimed("", 3)),
        Standing(end("1", last=-1, offset="-1", empty=True), None, None),
    ]
    found = rows(standings, NOW, EXPIRY)
    assert [row.partition_id for row in found] == ["1", "2", "10"]  # in partition order
    first, second, third = found
    assert (third.lag, third.lag_is_whole_partition, third.claim, third.owner_id) == (2, False, "live", "w-1")
    assert third.claim_age_seconds == 4
    assert (second.lag, second.lag_is_whole_partition, second.claim, second.owner_id) == (
        1234568,
        True,
        "released",
        None,
    )
    assert (first.last_enqueued_sequence_number, first.last_enqueued_time, first.claim) == (None, None, "none")

    lines = table(found)
    header, *body, note = lines
    assert header.split() == [
        "PARTITION",
        "CHECKPOINT",
        "OFFSET",
        "WRITTEN",
        "LAST-ENQUEUED",
        "ENQUEUED-AT",
        "LAG",
        "OWNER",
        "CLAIM",
    ]
    # Aligned: each column starts where its header does.
    for column in ("CHECKPOINT", "LAG", "OWNER", "CLAIM"):
        start = header.index(column)
        assert all(line[start - 2 : start] == "  " and line[start] != " " for line in body), column
    assert body[2].split()[1:4] == ["3", "300", "2026-11-30T07:59:30Z"]
    assert "live (4s old)" in body[2]
    assert "1234568*" in body[1]
    assert note.startswith("* no checkpoint")
    assert not any(line.startswith("*") for line in table(found[2:]))


def test_the_json_document_holds_every_row() -> None:
    found = rows([Standing(end("0"), Stored("300", 3, NOW), claimed("w-1", 4))], NOW, EXPIRY)
    parsed = orjson.loads(document("ns.servicebus.windows.net", "ml-events", "$Default", EXPIRY, found))
    assert (parsed["eventhub"], parsed["consumer_group"], parsed["ownership_expiry_seconds"]) == (
        "ml-events",
        "$Default",
        60.0,
    )
    [row] = parsed["partitions"]
    assert row["checkpoint_sequence_number"] == 3
    assert row["checkpoint_written"] == "2026-11-30T08:00:00Z"
    assert (row["lag"], row["claim"], row["owner_id"], row["claim_age_seconds"]) == (38, "live", "w-1", 4.0)


def test_a_reset_is_refused_for_each_partition_a_worker_holds_naming_it() -> None:
    standings = [
        Standing(end("0"), None, claimed("worker-a", 4)),
        Standing(end("1"), None, claimed("worker-b", 600)),  # expired: a dead worker's
        Standing(end("2"), None, claimed("", 1)),  # released
        Standing(end("3"), None, None),
    ]
    assert refusals(standings, NOW, EXPIRY) == [
        "partition 0 is held by worker-a (claimed 4s ago; a claim lives 1m unless renewed)"
    ]


def test_a_move_says_from_and_to() -> None:
    move = Move("3", Stored("4100", 41), Target("-1", -1, "the start of the partition"))
    assert str(move) == "partition 3: 41 (offset 4100) -> -1 (offset -1: the start of the partition)"
    assert str(Move("3", None, Target("9", 0, "x"))).startswith("partition 3: no checkpoint -> 0")


def test_unknown_partitions_are_named() -> None:
    assert unknown_partitions(["1", "7", "x", "7"], ["0", "1", "2"]) == ["7", "x"]
    assert unknown_partitions([], ["0"]) == []
