"""Durations and start positions as operators write them; who a consumer group is for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.checkpoints.marks import ConsumerGroupMark, ConsumerGroupUse, refusal, unmarked_use
from worker.errors import RulesError
from worker.live.receiver import starting_position
from worker.moments import (
    EARLIEST,
    LATEST,
    StartPosition,
    format_duration,
    parse_duration,
    parse_start,
    parse_time,
)
from worker.rulefiles.loading import load_rules

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("2h", 7200), ("7d", 604_800), ("1w", 604_800), ("1h30m", 5400), ("1.5h", 5400)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "2", "h", "2 hours", "-2h", "0s", "2h-", "PT2H", "2y"])
def test_what_is_not_a_duration_is_refused_naming_the_form(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not a duration") as caught:
        parse_duration(text)
    assert "2h" in str(caught.value) or "longer than zero" in str(caught.value)


@given(st.integers(min_value=1, max_value=10**8))
def test_a_duration_formats_to_text_that_parses_back(seconds: int) -> None:
    span = timedelta(seconds=seconds)
    assert parse_duration(format_duration(span)) == span


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("earliest", EARLIEST),
        ("LATEST", LATEST),
        ("2h", StartPosition("ago", ago=timedelta(hours=2))),
        ("2026-11-30T08:00:00Z", StartPosition("time", time=datetime(2026, 11, 30, 8, tzinfo=UTC))),
        ("2026-11-30T08:00:00", StartPosition("time", time=datetime(2026, 11, 30, 8, tzinfo=UTC))),
        ("2026-11-30T09:00:00+01:00", StartPosition("time", time=datetime(2026, 11, 30, 8, tzinfo=UTC))),
    ],
)
def test_start_positions(text: str, expected: StartPosition) -> None:
    assert parse_start(text) == expected


def test_start_positions_resolve_to_what_the_sdk_takes() -> None:
    assert starting_position(EARLIEST, NOW) == "-1"
    assert starting_position(LATEST, NOW) == "@latest"
    assert starting_position(parse_start("2h"), NOW) == NOW - timedelta(hours=2)
    assert starting_position(parse_start("2026-11-29T00:00:00Z"), NOW) == datetime(2026, 11, 29, tzinfo=UTC)
    assert str(parse_start("1h30m")) == "1h30m ago"


@pytest.mark.parametrize("text", ["yesterday", "", "first", "2026-13-01"])
def test_a_wrong_start_position_names_the_forms(text: str) -> None:
    with pytest.raises(ValueError, match=r"earliest, latest, an ISO 8601 time"):
        parse_start(text)
    with pytest.raises(ValueError, match=r"ISO 8601"):
        parse_time(text)


def test_a_group_is_refused_to_the_other_kind_of_worker_only() -> None:
    acting, shadow = (
        ConsumerGroupMark(ConsumerGroupUse.ACTING, "2026-11-30T08:00:00+00:00"),
        ConsumerGroupMark(ConsumerGroupUse.SHADOW, "x"),
    )
    assert refusal(ConsumerGroupUse.ACTING, None, "$Default") is None
    assert refusal(ConsumerGroupUse.ACTING, acting, "$Default") is None
    assert refusal(ConsumerGroupUse.SHADOW, shadow, "shadow") is None
    refused = refusal(ConsumerGroupUse.SHADOW, acting, "$Default")
    assert refused is not None
    assert "'$Default'" in refused
    assert "2026-11-30T08:00:00+00:00" in refused
    assert "WORKER_CONSUMER_GROUP" in refused
    assert refusal(ConsumerGroupUse.ACTING, shadow, "shadow") is not None
    assert unmarked_use(has_checkpoints=True) is ConsumerGroupUse.ACTING
    assert unmarked_use(has_checkpoints=False) is None


def test_a_rules_max_age_is_a_duration(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "rules:\n"
        "  - name: fresh\n    max_age: 2h\n    filter: {}\n    actions: [{type: log}]\n"
        "  - name: any\n    filter: {}\n    actions: [{type: log}]\n"
    )
    table = load_rules([path])
    assert [rule.max_age for rule in table.rules] == [7200, None]
    assert table.ages
    path.write_text("rules:\n  - name: wrong\n    max_age: 120\n    filter: {}\n    actions: [{type: log}]\n")
    with pytest.raises(RulesError, match=r"rules.yaml:3.*'max_age' must be a duration such as 90s, 30m, 6h or 2d"):
        load_rules([path])
    path.write_text("rules:\n  - name: wrong\n    max_age: two hours\n    filter: {}\n    actions: [{type: log}]\n")
    with pytest.raises(RulesError, match=r"'max_age': 'two hours' is not a duration"):
        load_rules([path])
