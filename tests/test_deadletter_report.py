"""The summary of a dead-letter lane, without I/O: groups, counts, times, the JSON document and the table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.actions.delivery.deadletters import Attempt, Letter
from worker.admin.dead_letters import (
    LaneSummary,
    dead_lettered_at,
    reason_of,
    summarize,
    summary_document,
    summary_table,
)
from worker.events import Message, Position

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def attempt(minute: int, reason: str | None = "unavailable", *, transient: bool = True, error: str = "") -> Attempt:
    return Attempt(T0 + timedelta(minutes=minute), error or f"{reason} at minute {minute}", transient, reason)


def letter(rule: str = "hook", action_type: str = "webhook", *attempts: Attempt) -> Letter:
    message = Message(b"[]", Position("0", "0", 1, T0), {})
    return Letter(message, "ev-1", rule, 0, action_type, attempts)


@pytest.mark.parametrize(
    ("attempts", "expected"),
    [
        pytest.param((attempt(0), attempt(1, "circuit_open")), "circuit_open", id="the last attempt's reason"),
        pytest.param((attempt(0, "rejected", transient=False),), "rejected", id="a permanent failure"),
        pytest.param((attempt(0, None, transient=True),), "transient", id="written before reasons: transient"),
        pytest.param((attempt(0, None, transient=False),), "permanent", id="written before reasons: permanent"),
        pytest.param((), "unknown", id="no attempts"),
    ],
)
def test_a_letters_reason_is_its_last_attempts(attempts: tuple[Attempt, ...], expected: str) -> None:
    assert reason_of(letter("r", "t", *attempts)) == expected


def test_a_letters_time_is_its_last_attempts() -> None:
    assert dead_lettered_at(letter("r", "t", attempt(0), attempt(7))) == T0 + timedelta(minutes=7)
    assert dead_lettered_at(letter("r", "t")) is None


def test_letters_are_grouped_by_rule_action_type_and_reason_with_their_times() -> None:
    letters = [
        ("a-1.json", letter("hook", "webhook", attempt(0), attempt(5))),
        ("a-2.json", letter("hook", "webhook", attempt(9), attempt(12, error="refused, newest"))),
        ("a-3.json", letter("hook", "webhook", attempt(3))),
        ("b-1.json", letter("hook", "webhook", attempt(4, "rejected", transient=False))),
        ("c-1.json", letter("archive", "file", attempt(20, "failed"))),
        ("d-1.json", letter("hook", "mail", attempt(1))),
    ]
    summary = summarize(iter(letters))
    rows = [(g.rule, g.action_type, g.reason, g.count, g.oldest, g.newest, g.newest_letter) for g in summary.groups]
    at = [T0 + timedelta(minutes=m) for m in range(21)]
    assert rows == [
        ("archive", "file", "failed", 1, at[20], at[20], "c-1.json"),
        ("hook", "mail", "unavailable", 1, at[1], at[1], "d-1.json"),
        ("hook", "webhook", "rejected", 1, at[4], at[4], "b-1.json"),
        ("hook", "webhook", "unavailable", 3, at[3], at[12], "a-2.json"),
    ]
    assert summary.groups[-1].last_error == "refused, newest"
    assert (summary.total, summary.oldest, summary.newest) == (6, at[1], at[20])


def test_an_empty_lane_sums_to_nothing() -> None:
    summary = summarize([])
    assert summary == LaneSummary((), 0, None, None)
    assert summary_document(summary) == {"groups": [], "total": {"count": 0, "oldest": None, "newest": None}}
    assert summary_table(summary)[-1].split() == ["total", "0", "-", "-"]


def test_letters_without_attempts_are_counted_without_a_time() -> None:
    summary = summarize([("x.json", letter("r", "t")), ("y.json", letter("r", "t"))])
    [group] = summary.groups
    assert (group.reason, group.count, group.oldest, group.newest) == ("unknown", 2, None, None)
    assert (group.newest_letter, group.last_error) == ("x.json", "")


def test_the_json_document_has_groups_and_a_total() -> None:
    summary = summarize([("a.json", letter("hook", "webhook", attempt(2), attempt(3)))])
    newest = (T0 + timedelta(minutes=3)).isoformat()
    assert summary_document(summary) == {
        "groups": [
            {
                "rule": "hook",
                "action_type": "webhook",
                "reason": "unavailable",
                "count": 1,
                "oldest": newest,
                "newest": newest,
                "newest_letter": "a.json",
                "last_error": "unavailable at minute 3",
            }
        ],
        "total": {"count": 1, "oldest": newest, "newest": newest},
    }


def test_the_table_aligns_its_columns_and_ends_with_the_total() -> None:
    long_error = "POST http://example.test/hook: " + "x" * 300
    summary = summarize(
        [
            ("a.json", letter("a-rule-with-a-long-name", "webhook", attempt(0, error=long_error))),
            *((f"b{i}.json", letter("b", "file", attempt(i, "failed"))) for i in range(12)),
        ]
    )
    header, first, second, total = summary_table(summary)
    assert header.split() == ["RULE", "ACTION", "REASON", "COUNT", "OLDEST", "NEWEST", "LAST", "ERROR"]
    start = "2026-11-01T09:00:00Z"
    assert first.split()[:6] == ["a-rule-with-a-long-name", "webhook", "unavailable", "1", start, start]
    assert second.split()[:6] == ["b", "file", "failed", "12", "2026-11-01T09:00:00Z", "2026-11-01T09:11:00Z"]
    assert total.split() == ["total", "13", "2026-11-01T09:00:00Z", "2026-11-01T09:11:00Z"]
    # Counts end under the end of COUNT; every other column starts where its heading does.
    count_end = header.index("COUNT") + len("COUNT")
    assert [line[:count_end].split()[-1] for line in (first, second, total)] == ["1", "12", "13"]
    assert all(line[count_end - 1].isdigit() and line[count_end] == " " for line in (first, second, total))
    for heading in ("OLDEST", "NEWEST", "LAST ERROR"):
        column = header.index(heading)
        assert all(line[column - 2 : column] == "  " and line[column] != " " for line in (first, second))
    # A long error is cut, with an ellipsis.
    assert first.endswith("...")
    assert len(first) < len(long_error)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b"]),
            st.sampled_from(["webhook", "file"]),
            st.lists(st.tuples(st.integers(0, 600), st.sampled_from(["unavailable", "rejected", None])), max_size=3),
        ),
        max_size=30,
    )
)
def test_groups_add_up_to_the_total_and_bound_their_times(
    specs: list[tuple[str, str, list[tuple[int, str | None]]]],
) -> None:
    letters = [
        (f"{i:03d}.json", letter(rule, kind, *(attempt(minute, reason) for minute, reason in tries)))
        for i, (rule, kind, tries) in enumerate(specs)
    ]
    summary = summarize(letters)
    assert sum(group.count for group in summary.groups) == summary.total == len(letters)
    assert len({(g.rule, g.action_type, g.reason) for g in summary.groups}) == len(summary.groups)
    times = [t for _, one in letters if (t := dead_lettered_at(one)) is not None]
    assert (summary.oldest, summary.newest) == ((min(times), max(times)) if times else (None, None))
    for group in summary.groups:
        key = (group.rule, group.action_type, group.reason)
        members = [(name, one) for name, one in letters if (one.rule, one.action_type, reason_of(one)) == key]
        moments = [t for _, one in members if (t := dead_lettered_at(one)) is not None]
        assert group.count == len(members)
        assert (group.oldest, group.newest) == ((min(moments), max(moments)) if moments else (None, None))
        assert group.newest_letter in {name for name, _ in members}
