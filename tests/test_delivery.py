"""Delivery decisions without I/O: the circuit breaker driven by a passed-in clock, the backoff
and Retry-After, and how a rule's retry settings combine with its type's defaults."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.actions.breaker import BreakerSettings, CircuitBreaker, CircuitState
from worker.actions.retry import RetryPolicy, retry_after_seconds

SETTINGS = BreakerSettings(failures=3, reset_after=10.0, probes=2)


def state_of(breaker: CircuitBreaker) -> CircuitState:
    return breaker.state


def opened(now: float = 0.0) -> CircuitBreaker:
    breaker = CircuitBreaker(SETTINGS)
    for _ in range(3):
        assert breaker.allow(now)
        breaker.failed(now)
    assert state_of(breaker) is CircuitState.OPEN
    return breaker


def test_failures_in_a_row_open_the_circuit_and_a_success_resets_the_count():
    breaker = CircuitBreaker(SETTINGS)
    breaker.failed(0)
    breaker.failed(0)
    breaker.succeeded()
    breaker.failed(1)
    breaker.failed(1)
    assert state_of(breaker) is CircuitState.CLOSED
    breaker.failed(1)
    assert state_of(breaker) is CircuitState.OPEN
    assert breaker.opens_in(1) == 10.0
    assert breaker.opens_in(6) == 5.0


def test_an_open_circuit_refuses_until_reset_then_lets_probes_through():
    breaker = opened(now=100.0)
    assert not breaker.allow(109.9)
    assert breaker.allow(110.0)  # half-open: first probe
    assert state_of(breaker) is CircuitState.HALF_OPEN
    assert breaker.allow(110.0)  # second probe
    assert not breaker.allow(110.0)  # no more than `probes` at once
    assert breaker.opens_in(110.0) == 0.0


@pytest.mark.parametrize(
    ("outcome", "state", "allowed_at_111"),
    [
        ("succeeded", CircuitState.CLOSED, True),
        ("failed", CircuitState.OPEN, False),
        ("abandoned", CircuitState.HALF_OPEN, True),
    ],
)
def test_a_probe_outcome_closes_reopens_or_frees_its_place(outcome: str, state: CircuitState, allowed_at_111: bool):
    breaker = opened(now=100.0)
    assert breaker.allow(110.0)
    assert breaker.allow(110.0)
    if outcome == "failed":
        breaker.failed(110.5)
    elif outcome == "succeeded":
        breaker.succeeded()
    else:
        breaker.abandoned()
    assert state_of(breaker) is state
    assert breaker.allow(111.0) is allowed_at_111
    if outcome == "failed":
        assert breaker.opens_in(111.0) == pytest.approx(9.5)


def test_failures_of_requests_let_through_before_opening_change_nothing():
    breaker = opened(now=0.0)
    breaker.failed(5.0)
    assert breaker.opens_in(5.0) == 5.0


@given(st.lists(st.sampled_from(["allow", "ok", "fail", "abandon", "tick"]), max_size=60))
def test_at_most_probes_requests_while_half_open(steps: list[str]):
    breaker = CircuitBreaker(BreakerSettings(failures=2, reset_after=1.0, probes=2))
    now, in_flight = 0.0, 0
    for step in steps:
        if step == "tick":
            now += 0.6
        elif step == "allow":
            in_flight += breaker.allow(now)
        elif in_flight:
            in_flight -= 1
            if step == "ok":
                breaker.succeeded()
            elif step == "fail":
                breaker.failed(now)
            else:
                breaker.abandoned()
        if state_of(breaker) is CircuitState.HALF_OPEN:
            assert breaker._probing <= 2
        if state_of(breaker) is CircuitState.OPEN:
            assert not breaker.allow(now) or state_of(breaker) is CircuitState.HALF_OPEN


def test_backoff_waits_at_least_as_long_as_the_target_or_the_circuit_asks():
    policy = RetryPolicy(attempts=5, first_delay=0.5, max_delay=8)
    rng = random.Random(4)
    assert 0 <= policy.wait(1, rng) <= 0.5
    assert policy.wait(1, rng, retry_after=3) == 3
    assert policy.wait(1, rng, retry_after=3600) == 8  # capped at max_delay
    assert policy.wait(1, rng, circuit_opens_in=20) == 20  # an open circuit is not hurried
    assert all(policy.wait(4, rng) <= 4 for _ in range(100))


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        ("0", 0.0),
        ("Sun, 01 Nov 2026 09:01:00 GMT", 60.0),
        ("Sun, 01 Nov 2026 08:00:00 GMT", 0.0),  # in the past
        ("soon", None),
        ("-5", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_in_seconds_or_as_a_date(header: str | None, seconds: float | None):
    now = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    assert retry_after_seconds(header, now) == seconds
