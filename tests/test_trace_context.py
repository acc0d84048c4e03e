"""What an event carries of its producer's trace: W3C traceparent, the Azure SDKs' Diagnostic-Id, a
CloudEvent's attributes; invalid values ignored as W3C Trace Context says."""

from __future__ import annotations

import pytest

from worker.telemetry.context import TraceContext, from_event, from_properties, parse_traceparent, traceparent

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
CONTEXT = TraceContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, sampled=True)


def test_the_spec_s_example_is_read_and_written_back() -> None:
    assert parse_traceparent(VALID) == CONTEXT
    assert traceparent(CONTEXT) == VALID
    assert parse_traceparent(VALID.replace("-01", "-00")) == TraceContext(CONTEXT.trace_id, CONTEXT.span_id, False)


@pytest.mark.parametrize(
    "value",
    [
        "",
        None,
        42,
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # an all-zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # an all-zero span id
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # version ff is invalid
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  # version 00 has four parts
        "|4bf92f3577b34da6a3ce929d0e0e4736.1.",  # a hierarchical Request-Id: no span to link to
    ],
)
def test_what_is_not_a_traceparent_is_ignored(value: object) -> None:
    assert parse_traceparent(value) is None


def test_a_later_version_may_carry_more() -> None:
    assert parse_traceparent(VALID.replace("00-", "01-", 1) + "-more") == CONTEXT


def test_the_properties_name_it_traceparent_first_then_diagnostic_id() -> None:
    other = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert from_properties({"traceparent": VALID, "Diagnostic-Id": other}) == CONTEXT
    assert from_properties({"Diagnostic-Id": VALID, "tracestate": "congo=t61rcWkgMzE"}) == TraceContext(
        CONTEXT.trace_id, CONTEXT.span_id, True, "congo=t61rcWkgMzE"
    )
    assert from_properties({"traceparent": "garbage", "Diagnostic-Id": VALID}) == CONTEXT
    assert from_properties({}) is None


def test_a_cloud_event_carries_it_in_its_attributes() -> None:
    event = {"specversion": "1.0", "type": "Microsoft.MachineLearningServices.RunCompleted", "traceparent": VALID}
    assert from_event(event) == CONTEXT
    assert from_event({"specversion": "1.0"}) is None
