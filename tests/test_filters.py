"""Event Grid filter semantics (spec: shared notes ``eventgrid-filters.md``), one row per case.

Every case decodes a real message body with :func:`worker.events.decode_body`, compiles the filter
with :func:`worker.core.filters.compile_filter` and checks both ``holds`` and ``why_not``.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import AT, compile_ok, decode_one
from worker.core.filters import OPERATORS, compile_filter
from worker.events import Event

WORKSPACE = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/"
    "Microsoft.MachineLearningServices/workspaces/ws1"
)
RUN_COMPLETED = "Microsoft.MachineLearningServices.RunCompleted"
MODEL_REGISTERED = "Microsoft.MachineLearningServices.ModelRegistered"
RUN_SUBJECT = "experiments/0fa9dfaa-cba3-4fa7-b590-23e48548f5c1/runs/AutoML_ad912b2d-6467-4f32-a616-dbe4af6dd8fc_5"


# --- helpers --------------------------------------------------------------------------------------


def eg(
    data: object = None,
    *,
    subject: str = RUN_SUBJECT,
    event_type: str = RUN_COMPLETED,
    topic: str = WORKSPACE,
    event_id: str = "831e1650-001e-001b-66ab-eeb76e069631",
    data_version: str = "2",
) -> Event:
    """An Event Grid schema event, wrapped in a one-element array as Event Hubs delivers it."""
    return decode_one(
        [
            {
                "topic": topic,
                "subject": subject,
                "eventType": event_type,
                "eventTime": "2024-05-06T07:08:09.1234567Z",
                "id": event_id,
                "data": data,
                "dataVersion": data_version,
                "metadataVersion": "1",
            }
        ]
    )


def d(**data: Any) -> Event:
    """An Event Grid schema event carrying ``data``."""
    return eg(data)


def ce(
    data: object = None,
    *,
    subject: str | None = RUN_SUBJECT,
    event_type: str = RUN_COMPLETED,
    source: str = WORKSPACE,
    event_id: str = "9aeb0fdf-c01e-0131-0922-9eb54906e209",
    **extensions: object,
) -> Event:
    """A CloudEvents 1.0 event (a single object, structured mode); no subject when ``subject`` is None."""
    document: dict[str, object] = {
        "specversion": "1.0",
        "type": event_type,
        "source": source,
        "id": event_id,
        "time": "2024-05-06T07:08:09Z",
        "datacontenttype": "application/json",
        "data": data,
        **extensions,
    }
    if subject is not None:
        document["subject"] = subject
    return decode_one(document)


def check(raw: object, event: Event, expected: bool) -> None:
    condition = compile_ok(raw).condition
    assert condition.holds(event) is expected
    reason = condition.why_not(event)
    if expected:
        assert reason is None
    else:
        assert isinstance(reason, str)
        assert reason.strip()


def adv(operator: str, key: str = "data.x", /, **operand: object) -> dict[str, object]:
    return {"operatorType": operator, "key": key, **operand}


def af(*filters: dict[str, object], arrays: bool | None = None) -> dict[str, object]:
    raw: dict[str, object] = {"advancedFilters": list(filters)}
    if arrays is not None:
        raw["enableAdvancedFilteringOnArrays"] = arrays
    return raw


def case(raw: object, event: Event, expected: bool, id: str) -> Any:
    return pytest.param(raw, event, expected, id=id)


# --- 1. every operator on scalars ----------------------------------------------------------------

SCALAR_CASES = [
    case(af(adv("NumberIn", values=[3, 5])), d(x=5), True, "NumberIn-hit"),
    case(af(adv("NumberIn", values=[3, 5])), d(x=4), False, "NumberIn-miss"),
    case(af(adv("NumberNotIn", values=[3, 5])), d(x=4), True, "NumberNotIn-hit"),
    case(af(adv("NumberNotIn", values=[3, 5])), d(x=3), False, "NumberNotIn-miss"),
    case(af(adv("NumberLessThan", value=10)), d(x=9), True, "NumberLessThan-hit"),
    case(af(adv("NumberLessThan", value=10)), d(x=10), False, "NumberLessThan-equal-is-strict"),
    case(af(adv("NumberGreaterThan", value=10)), d(x=11), True, "NumberGreaterThan-hit"),
    case(af(adv("NumberGreaterThan", value=10)), d(x=10), False, "NumberGreaterThan-equal-is-strict"),
    case(af(adv("NumberLessThanOrEquals", value=10)), d(x=10), True, "NumberLessThanOrEquals-equal"),
    case(af(adv("NumberLessThanOrEquals", value=10)), d(x=11), False, "NumberLessThanOrEquals-miss"),
    case(af(adv("NumberGreaterThanOrEquals", value=10)), d(x=10), True, "NumberGreaterThanOrEquals-equal"),
    case(af(adv("NumberGreaterThanOrEquals", value=10)), d(x=9), False, "NumberGreaterThanOrEquals-miss"),
    case(af(adv("NumberInRange", values=[[1, 5]])), d(x=3), True, "NumberInRange-hit"),
    case(af(adv("NumberInRange", values=[[1, 5]])), d(x=6), False, "NumberInRange-miss"),
    case(af(adv("NumberNotInRange", values=[[1, 5]])), d(x=6), True, "NumberNotInRange-hit"),
    case(af(adv("NumberNotInRange", values=[[1, 5]])), d(x=3), False, "NumberNotInRange-miss"),
    case(af(adv("BoolEquals", value=True)), d(x=True), True, "BoolEquals-true-hit"),
    case(af(adv("BoolEquals", value=True)), d(x=False), False, "BoolEquals-true-miss"),
    case(af(adv("BoolEquals", value=False)), d(x=False), True, "BoolEquals-false-hit"),
    case(af(adv("StringIn", values=["Completed", "Failed"])), d(x="Failed"), True, "StringIn-hit"),
    case(af(adv("StringIn", values=["Completed", "Failed"])), d(x="Running"), False, "StringIn-miss"),
    case(af(adv("StringIn", values=["Complete"])), d(x="Completed"), False, "StringIn-whole-string-only"),
    case(af(adv("StringNotIn", values=["Completed", "Failed"])), d(x="Running"), True, "StringNotIn-hit"),
    case(af(adv("StringNotIn", values=["Completed", "Failed"])), d(x="Completed"), False, "StringNotIn-miss"),
    case(af(adv("StringContains", values=["auto", "ml"])), d(x="my-automl-run"), True, "StringContains-hit"),
    case(af(adv("StringContains", values=["xyz"])), d(x="my-automl-run"), False, "StringContains-miss"),
    case(af(adv("StringNotContains", values=["xyz", "qq"])), d(x="my-automl-run"), True, "StringNotContains-hit"),
    case(af(adv("StringNotContains", values=["xyz", "ml"])), d(x="my-automl-run"), False, "StringNotContains-miss"),
    case(af(adv("StringBeginsWith", values=["x", "my-"])), d(x="my-run"), True, "StringBeginsWith-hit"),
    case(af(adv("StringBeginsWith", values=["run"])), d(x="my-run"), False, "StringBeginsWith-miss"),
    case(af(adv("StringNotBeginsWith", values=["run"])), d(x="my-run"), True, "StringNotBeginsWith-hit"),
    case(af(adv("StringNotBeginsWith", values=["run", "my"])), d(x="my-run"), False, "StringNotBeginsWith-miss"),
    case(af(adv("StringEndsWith", values=[".onnx", ".pkl"])), d(x="model.pkl"), True, "StringEndsWith-hit"),
    case(af(adv("StringEndsWith", values=["model"])), d(x="model.pkl"), False, "StringEndsWith-miss"),
    case(af(adv("StringNotEndsWith", values=[".onnx"])), d(x="model.pkl"), True, "StringNotEndsWith-hit"),
    case(af(adv("StringNotEndsWith", values=[".onnx", "pkl"])), d(x="model.pkl"), False, "StringNotEndsWith-miss"),
    case(af(adv("IsNullOrUndefined")), d(x="value"), False, "IsNullOrUndefined-present"),
    case(af(adv("IsNullOrUndefined")), d(x=0), False, "IsNullOrUndefined-present-zero"),
    case(af(adv("IsNotNull")), d(x="value"), True, "IsNotNull-present"),
    case(af(adv("IsNotNull")), d(x=False), True, "IsNotNull-present-false"),
    case(af(adv("IsNotNull")), d(x=""), True, "IsNotNull-present-empty-string"),
]


@pytest.mark.parametrize(("raw", "event", "expected"), SCALAR_CASES)
def test_operator_on_scalar(raw, event, expected):
    check(raw, event, expected)


def test_every_operator_is_covered_by_the_scalar_table():
    named = {case.values[0]["advancedFilters"][0]["operatorType"] for case in SCALAR_CASES}
    assert named == set(OPERATORS)
    assert len(OPERATORS) == 19


# --- 2. missing key and JSON null (section 7) -----------------------------------------------------

#: One operand per operator, chosen so that a present matching value would make positive ones true.
OPERAND: dict[str, dict[str, object]] = {
    "NumberIn": {"values": [1, 2]},
    "NumberNotIn": {"values": [1, 2]},
    "NumberLessThan": {"value": 10},
    "NumberGreaterThan": {"value": 10},
    "NumberLessThanOrEquals": {"value": 10},
    "NumberGreaterThanOrEquals": {"value": 10},
    "NumberInRange": {"values": [[1, 5]]},
    "NumberNotInRange": {"values": [[1, 5]]},
    "BoolEquals": {"value": True},
    "StringIn": {"values": ["a"]},
    "StringNotIn": {"values": ["a"]},
    "StringContains": {"values": ["a"]},
    "StringNotContains": {"values": ["a"]},
    "StringBeginsWith": {"values": ["a"]},
    "StringNotBeginsWith": {"values": ["a"]},
    "StringEndsWith": {"values": ["a"]},
    "StringNotEndsWith": {"values": ["a"]},
    "IsNullOrUndefined": {},
    "IsNotNull": {},
}

#: The documented missing-key table, with the [UNSURE] range policy.
ON_MISSING = {
    "NumberGreaterThan": False,
    "NumberGreaterThanOrEquals": False,
    "NumberLessThan": False,
    "NumberLessThanOrEquals": False,
    "NumberIn": False,
    "BoolEquals": False,
    "StringContains": False,
    "StringNotContains": False,
    "StringBeginsWith": False,
    "StringNotBeginsWith": False,
    "StringEndsWith": False,
    "StringNotEndsWith": False,
    "StringIn": False,
    "NumberNotIn": True,
    "StringNotIn": True,
    "IsNullOrUndefined": True,
    "IsNotNull": False,
    "NumberInRange": False,
    "NumberNotInRange": True,
}

MISSING_CASES = [
    *(
        case(af(adv(op, "data.absent", **OPERAND[op])), d(x=1), ON_MISSING[op], f"missing-key-{op}")
        for op in ON_MISSING
    ),
    *(case(af(adv(op, "data.x", **OPERAND[op])), d(x=None), ON_MISSING[op], f"null-value-{op}") for op in ON_MISSING),
    *(
        case(af(adv(op, "data.x.y", **OPERAND[op])), ce(None), ON_MISSING[op], f"null-data-{op}")
        for op in ("StringNotIn", "NumberNotIn", "StringNotContains", "NumberInRange", "IsNullOrUndefined")
    ),
    case(af(adv("StringNotIn", "data.absent", values=["a"])), d(), True, "missing-key-empty-data-StringNotIn"),
    case(af(adv("IsNullOrUndefined", "data.x.y")), d(x=None), True, "step-through-null-IsNullOrUndefined"),
    case(af(adv("NumberNotInRange", "data.x.y", values=[[1, 2]])), d(x=None), True, "step-through-null-NotInRange"),
]


@pytest.mark.parametrize(("raw", "event", "expected"), MISSING_CASES)
def test_missing_key_and_null(raw, event, expected):
    check(raw, event, expected)


def test_missing_table_names_every_operator():
    assert set(ON_MISSING) == set(OPERATORS) == set(OPERAND)


# --- 3. arrays ---------------------------------------------------------------------------------------

#: (operator, operand, array where the operator holds, array where it does not) with arrays on.
ARRAY_ROWS: list[tuple[str, dict[str, object], list[object], list[object]]] = [
    ("NumberIn", {"values": [5, 7]}, [1, "5", 7], [1, "5", True]),
    ("NumberNotIn", {"values": [5, 7]}, [1, "5", "7"], [1, 7]),
    ("NumberLessThan", {"value": 3}, [5, 2], [5, 3, "1"]),
    ("NumberGreaterThan", {"value": 3}, [1, 4], [1, 3, "9"]),
    ("NumberLessThanOrEquals", {"value": 3}, [5, 3], [5, 4, False]),
    ("NumberGreaterThanOrEquals", {"value": 3}, [1, 3], [1, 2, "3"]),
    ("NumberInRange", {"values": [[1, 2], [10, 20]]}, [5, 20], [5, 21, "15"]),
    ("NumberNotInRange", {"values": [[1, 2], [10, 20]]}, [5, 21, "15"], [5, 10]),
    ("BoolEquals", {"value": True}, [False, True], [False, "true", 1]),
    ("StringIn", {"values": ["a", "b"]}, ["x", "B"], ["x", "ab", 1]),
    ("StringNotIn", {"values": ["a", "b"]}, ["x", "ab"], ["x", "A"]),
    ("StringContains", {"values": ["ell"]}, ["xyz", "HELLO"], ["xyz", 7]),
    ("StringNotContains", {"values": ["ell"]}, ["xyz", 5], ["xyz", "hello"]),
    ("StringBeginsWith", {"values": ["he", "5"]}, ["oh", "Hello"], ["oh", 5, 55, True]),
    ("StringNotBeginsWith", {"values": ["he"]}, ["oh"], ["oh", "HE"]),
    ("StringEndsWith", {"values": ["lo"]}, ["x", "HELLO"], ["x"]),
    ("StringNotEndsWith", {"values": ["lo"]}, ["x"], ["hello"]),
]
COMPARISONS = [row[0] for row in ARRAY_ROWS]
NEGATED = {
    "NumberNotIn",
    "NumberNotInRange",
    "StringNotIn",
    "StringNotContains",
    "StringNotBeginsWith",
    "StringNotEndsWith",
}

ARRAY_CASES = [
    *(
        case(af(adv(op, **operand), arrays=True), d(x=hit), True, f"arrays-on-{op}-hit")
        for op, operand, hit, _ in ARRAY_ROWS
    ),
    *(
        case(af(adv(op, **operand), arrays=True), d(x=miss), False, f"arrays-on-{op}-miss")
        for op, operand, _, miss in ARRAY_ROWS
    ),
    *(
        case(af(adv(op, **OPERAND[op]), arrays=True), d(x=[]), op in NEGATED, f"arrays-on-empty-{op}")
        for op in COMPARISONS
    ),
    *(
        case(
            af(adv(op, **OPERAND[op]), arrays=True),
            d(x=[None, {"a": 1}, [1]]),
            op in NEGATED,
            f"arrays-on-no-usable-{op}",
        )
        for op in COMPARISONS
    ),
    # flag off or absent: every comparison operator is false on an array, even where "on" says true
    *(case(af(adv(op, **operand)), d(x=hit), False, f"arrays-absent-{op}") for op, operand, hit, _ in ARRAY_ROWS),
    *(case(af(adv(op, **OPERAND[op])), d(x=[]), False, f"arrays-absent-empty-{op}") for op in COMPARISONS),
    case(af(adv("StringNotIn", values=["a"]), arrays=False), d(x=["x"]), False, "arrays-false-StringNotIn"),
    case(af(adv("NumberNotInRange", values=[[1, 2]]), arrays=False), d(x=[9]), False, "arrays-false-NotInRange"),
    case(af(adv("StringIn", values=["x"]), arrays=False), d(x=["x"]), False, "arrays-false-StringIn"),
    case(
        {**af(adv("StringIn", values=["x"])), "enableAdvancedFilteringOnArrays": None},
        d(x=["x"]),
        False,
        "arrays-null-StringIn",
    ),
    case(af(adv("IsNotNull"), arrays=True), d(x=[]), True, "arrays-on-IsNotNull-empty"),
    case(af(adv("IsNotNull"), arrays=True), d(x=[1, 2]), True, "arrays-on-IsNotNull"),
    case(af(adv("IsNullOrUndefined"), arrays=True), d(x=[]), False, "arrays-on-IsNullOrUndefined-empty"),
    case(af(adv("IsNullOrUndefined"), arrays=True), d(x=[None]), False, "arrays-on-IsNullOrUndefined-nulls"),
    case(af(adv("IsNotNull")), d(x=["a"]), True, "arrays-off-IsNotNull"),
    case(af(adv("IsNullOrUndefined")), d(x=["a"]), False, "arrays-off-IsNullOrUndefined"),
    # a scalar still works normally when the flag is on
    case(af(adv("StringIn", values=["x"]), arrays=True), d(x="X"), True, "arrays-on-scalar-still-works"),
    case(af(adv("NumberNotIn", values=[1]), arrays=True), d(x=2), True, "arrays-on-scalar-NotIn"),
    # one matching element among many values and many elements
    case(af(adv("StringIn", values=["c", "d", "e"]), arrays=True), d(x=["a", "b", "E"]), True, "arrays-on-any-any"),
    case(af(adv("StringNotIn", values=["c", "d", "e"]), arrays=True), d(x=["a", "b", "E"]), False, "arrays-on-not-any"),
]


@pytest.mark.parametrize(("raw", "event", "expected"), ARRAY_CASES)
def test_arrays(raw, event, expected):
    check(raw, event, expected)


# --- 4. strings, numbers, ranges, AND/OR -----------------------------------------------------------

BIG = 9007199254740993  # 2**53 + 1: not representable as a float

VALUE_CASES = [
    # strings compare ignoring case, whatever the operator
    case(af(adv("StringIn", values=["RUNNING"])), d(x="Running"), True, "case-StringIn"),
    case(af(adv("StringNotIn", values=["RUNNING"])), d(x="running"), False, "case-StringNotIn"),
    case(af(adv("StringContains", values=["FAIL"])), d(x="JobFailed"), True, "case-StringContains"),
    case(af(adv("StringNotContains", values=["FAIL"])), d(x="JobFailed"), False, "case-StringNotContains"),
    case(af(adv("StringBeginsWith", values=["AZUREML"])), d(x="azureml://x"), True, "case-StringBeginsWith"),
    case(af(adv("StringNotBeginsWith", values=["AZUREML"])), d(x="azureml://x"), False, "case-StringNotBeginsWith"),
    case(af(adv("StringEndsWith", values=[".PKL"])), d(x="model.pkl"), True, "case-StringEndsWith"),
    case(af(adv("StringNotEndsWith", values=[".PKL"])), d(x="model.pkl"), False, "case-StringNotEndsWith"),
    case(af(adv("StringIn", values=["STRASSE"])), d(x="Straße"), True, "case-unicode-casefold"),
    case(af(adv("StringIn", values=["stage"])), d(x="stagé"), False, "case-accents-still-differ"),
    # decimal numbers
    case(af(adv("NumberIn", values=[5])), d(x=5.0), True, "decimal-5-equals-5.0"),
    case(af(adv("NumberIn", values=[5.0])), d(x=5), True, "decimal-5.0-equals-5"),
    case(af(adv("NumberNotIn", values=[5.0])), d(x=5), False, "decimal-NotIn-5.0-vs-5"),
    case(af(adv("NumberIn", values=[0.3])), d(x=0.3), True, "decimal-0.3-equals-0.3"),
    case(af(adv("NumberIn", values=[0.3])), d(x=0.1 + 0.2), False, "decimal-0.1+0.2-is-not-0.3"),
    case(af(adv("NumberGreaterThan", value=0.3)), d(x=0.1 + 0.2), True, "decimal-0.1+0.2-above-0.3"),
    case(af(adv("NumberLessThanOrEquals", value=1.1)), d(x=1.1), True, "decimal-1.1-le-1.1"),
    case(af(adv("NumberIn", values=[BIG])), d(x=BIG), True, "decimal-2**53+1-equal"),
    case(af(adv("NumberIn", values=[BIG - 1])), d(x=BIG), False, "decimal-2**53+1-not-2**53"),
    case(af(adv("NumberGreaterThan", value=BIG - 1)), d(x=BIG), True, "decimal-2**53+1-above-2**53"),
    case(af(adv("NumberLessThan", value=BIG)), d(x=BIG - 1), True, "decimal-2**53-below-2**53+1"),
    # beyond 64 bits the event's integer is read as the nearest double (documented limit)
    case(af(adv("NumberGreaterThan", value=2**70)), d(x=2**71), True, "beyond-64-bits-above"),
    case(af(adv("NumberLessThan", value=-(2**70))), d(x=-(2**71)), True, "beyond-64-bits-negative"),
    case(af(adv("NumberIn", values=[2**64 - 1])), d(x=2**64 - 1), True, "decimal-largest-64-bit-equal"),
    case(af(adv("NumberIn", values=[2**64 - 2])), d(x=2**64 - 1), False, "decimal-largest-64-bit-not-equal"),
    case(af(adv("NumberLessThan", value=0)), d(x=-0.5), True, "decimal-negative"),
    # inclusive ranges, several ranges
    case(af(adv("NumberInRange", values=[[1, 5]])), d(x=1), True, "range-low-end-inclusive"),
    case(af(adv("NumberInRange", values=[[1, 5]])), d(x=5), True, "range-high-end-inclusive"),
    case(af(adv("NumberInRange", values=[[1, 5]])), d(x=0.999), False, "range-below-low"),
    case(af(adv("NumberInRange", values=[[1, 5]])), d(x=5.001), False, "range-above-high"),
    case(af(adv("NumberInRange", values=[[3.14159, 999.95]])), d(x=3.14159), True, "range-decimal-low-end"),
    case(af(adv("NumberInRange", values=[[3.14159, 999.95]])), d(x=999.95), True, "range-decimal-high-end"),
    case(af(adv("NumberInRange", values=[[1, 2], [10, 20]])), d(x=15), True, "ranges-second-hit"),
    case(af(adv("NumberInRange", values=[[1, 2], [10, 20]])), d(x=5), False, "ranges-between"),
    case(af(adv("NumberInRange", values=[[7, 7]])), d(x=7.0), True, "range-single-point"),
    case(af(adv("NumberNotInRange", values=[[1, 2], [10, 20]])), d(x=5), True, "not-ranges-between"),
    case(af(adv("NumberNotInRange", values=[[1, 2], [10, 20]])), d(x=2), False, "not-ranges-edge-inclusive"),
    case(af(adv("NumberNotInRange", values=[[1, 2], [10, 20]])), d(x=10), False, "not-ranges-second-edge"),
    # OR inside values, AND across filters
    case(
        af(adv("StringIn", "data.s", values=["a", "b"]), adv("NumberGreaterThan", "data.n", value=1)),
        d(s="b", n=2),
        True,
        "and-both-hold",
    ),
    case(
        af(adv("StringIn", "data.s", values=["a", "b"]), adv("NumberGreaterThan", "data.n", value=1)),
        d(s="c", n=2),
        False,
        "and-first-fails",
    ),
    case(
        af(adv("StringIn", "data.s", values=["a", "b"]), adv("NumberGreaterThan", "data.n", value=1)),
        d(s="a", n=1),
        False,
        "and-second-fails",
    ),
    case(af(adv("StringContains", "Subject", values=["nomatch", "AutoML"])), eg(), True, "or-contains-subject"),
    # the same key twice: a bounded range
    *(
        case(af(adv("NumberGreaterThan", value=10), adv("NumberLessThan", value=20)), d(x=x), ok, f"bounded-{x}")
        for x, ok in ((15, True), (10, False), (20, False), (25, False), (5, False))
    ),
    # scalar type mismatches
    case(af(adv("NumberIn", values=[5])), d(x="5"), False, "mismatch-NumberIn-string"),
    case(af(adv("NumberNotIn", values=[5])), d(x="6"), False, "mismatch-NumberNotIn-string"),
    case(af(adv("NumberGreaterThan", value=0)), d(x=True), False, "mismatch-Number-bool"),
    case(af(adv("NumberIn", values=[1])), d(x=True), False, "mismatch-NumberIn-true-is-not-1"),
    case(af(adv("NumberInRange", values=[[0, 9]])), d(x="5"), False, "mismatch-InRange-string"),
    case(af(adv("BoolEquals", value=True)), d(x="true"), False, "mismatch-BoolEquals-string"),
    case(af(adv("BoolEquals", value=True)), d(x=1), False, "mismatch-BoolEquals-number"),
    case(af(adv("BoolEquals", value=False)), d(x=0), False, "mismatch-BoolEquals-zero"),
    case(af(adv("StringBeginsWith", values=["5", "1"])), d(x=5), True, "stringify-number-BeginsWith"),
    case(af(adv("StringIn", values=["5"])), d(x=5), True, "stringify-number-StringIn"),
    case(af(adv("StringIn", values=["2.5"])), d(x=2.5), True, "stringify-float-StringIn"),
    case(af(adv("StringNotIn", values=["5"])), d(x=5), False, "stringify-number-StringNotIn"),
    case(af(adv("StringIn", values=["True"])), d(x=True), True, "stringify-bool-StringIn"),
    case(af(adv("StringContains", values=["als"])), d(x=False), True, "stringify-bool-Contains"),
    case(af(adv("StringIn", values=["a"])), d(x={"a": 1}), False, "mismatch-String-object"),
]


@pytest.mark.parametrize(("raw", "event", "expected"), VALUE_CASES)
def test_values(raw, event, expected):
    check(raw, event, expected)


# --- 5. keys -------------------------------------------------------------------------------------

ML_DATA = {
    "runId": "AutoML_5",
    "experimentName": "exp",
    "runStatus": "Completed",
    "runTags": {"stage": "prod"},
    "modelTags": {"stage": "Production", "owner": {"team": {"name": {"short": "mlops"}}}},
    "items": [{"name": "a"}, {"name": "b"}],
    "dotted": {"a.b": "x"},
    "plain": "text",
}

KEY_CASES = [
    # Event Grid schema, documented key spellings
    case(af(adv("StringIn", "ID", values=["831E1650-001E-001B-66AB-EEB76E069631"])), eg(ML_DATA), True, "eg-ID"),
    case(af(adv("StringIn", "ID", values=["other"])), eg(ML_DATA), False, "eg-ID-miss"),
    case(af(adv("StringEndsWith", "Topic", values=["/workspaces/ws1"])), eg(ML_DATA), True, "eg-Topic"),
    case(af(adv("StringBeginsWith", "Subject", values=["experiments/"])), eg(ML_DATA), True, "eg-Subject"),
    case(af(adv("StringIn", "EventType", values=[RUN_COMPLETED])), eg(ML_DATA), True, "eg-EventType"),
    case(af(adv("StringIn", "EventType", values=[MODEL_REGISTERED])), eg(ML_DATA), False, "eg-EventType-miss"),
    case(af(adv("StringIn", "DataVersion", values=["2"])), eg(ML_DATA), True, "eg-DataVersion"),
    case(af(adv("StringIn", "data.runStatus", values=["completed"])), eg(ML_DATA), True, "eg-data"),
    case(af(adv("StringIn", "id", values=["831e1650-001e-001b-66ab-eeb76e069631"])), eg(ML_DATA), True, "eg-id-json"),
    # CloudEvents
    case(af(adv("StringIn", "id", values=["9aeb0fdf-c01e-0131-0922-9eb54906e209"])), ce(ML_DATA), True, "ce-id"),
    case(af(adv("StringIn", "source", values=[WORKSPACE])), ce(ML_DATA), True, "ce-source"),
    case(af(adv("StringIn", "type", values=[RUN_COMPLETED])), ce(ML_DATA), True, "ce-type"),
    case(af(adv("StringIn", "type", values=[MODEL_REGISTERED])), ce(ML_DATA), False, "ce-type-miss"),
    case(af(adv("StringIn", "specversion", values=["1.0"])), ce(ML_DATA), True, "ce-specversion"),
    case(
        af(adv("StringBeginsWith", "comexampleothervalue", values=["5", "1"])),
        ce(ML_DATA, comexampleothervalue=5),
        True,
        "ce-extension-number",
    ),
    case(
        af(adv("StringIn", "comexampleextension1", values=["value"])),
        ce(ML_DATA, comexampleextension1="value"),
        True,
        "ce-extension-string",
    ),
    case(af(adv("IsNullOrUndefined", "comexampleextension1")), ce(ML_DATA), True, "ce-extension-absent"),
    case(af(adv("StringIn", "data.experimentName", values=["EXP"])), ce(ML_DATA), True, "ce-data"),
    case(af(adv("StringIn", "eventtype", values=[RUN_COMPLETED])), ce(ML_DATA), False, "ce-legacy-eventtype-unknown"),
    case(af(adv("IsNullOrUndefined", "eventid")), ce(ML_DATA), True, "ce-legacy-eventid-unknown"),
    # nesting and case of data keys
    case(
        af(adv("StringIn", "data.modelTags.owner.team.name.short", values=["MLOPS"])),
        eg(ML_DATA),
        True,
        "nested-5-levels",
    ),
    case(
        af(adv("StringIn", "data.modelTags.owner.team.name.long", values=["x"])),
        eg(ML_DATA),
        False,
        "nested-5-levels-missing",
    ),
    case(
        af(adv("StringIn", "data.ModelTags.stage", values=["production"])),
        eg(ML_DATA),
        True,
        "pascal-case-key-matches-camel-case-payload",
    ),
    case(af(adv("StringIn", "Data.RUNSTATUS", values=["Completed"])), eg(ML_DATA), True, "key-case-insensitive"),
    case(
        af(adv("StringIn", "data.Stage", values=["upper"])), d(Stage="upper", stage="lower"), True, "exact-first-upper"
    ),
    case(
        af(adv("StringIn", "data.stage", values=["lower"])), d(Stage="upper", stage="lower"), True, "exact-first-lower"
    ),
    case(
        af(adv("StringIn", "data.stage", values=["upper"])),
        d(Stage="upper", stage="lower"),
        False,
        "exact-wins-over-case-insensitive",
    ),
    case(af(adv("StringIn", "data.STAGE", values=["prod"])), d(stage="prod"), True, "fallback-case-insensitive"),
    # arrays of objects, scalars and dotted member names are not addressable
    case(af(adv("StringIn", "data.items.name", values=["a"])), eg(ML_DATA), False, "through-array-of-objects"),
    case(
        af(adv("StringIn", "data.items.name", values=["a"]), arrays=True),
        eg(ML_DATA),
        False,
        "through-array-of-objects-arrays-on",
    ),
    case(af(adv("IsNullOrUndefined", "data.items.name")), eg(ML_DATA), True, "through-array-is-not-found"),
    case(af(adv("StringNotIn", "data.items.name", values=["a"])), eg(ML_DATA), True, "through-array-NotIn-missing"),
    case(af(adv("IsNullOrUndefined", "data.items.0.name")), eg(ML_DATA), True, "index-into-array-not-supported"),
    case(af(adv("IsNullOrUndefined", "data.plain.length")), eg(ML_DATA), True, "through-scalar-is-not-found"),
    case(af(adv("IsNullOrUndefined", "data.dotted.a.b")), eg(ML_DATA), True, "dotted-member-not-addressable"),
    case(af(adv("IsNotNull", "data.runTags")), eg(ML_DATA), True, "object-value-is-not-null"),
]


@pytest.mark.parametrize(("raw", "event", "expected"), KEY_CASES)
def test_keys(raw, event, expected):
    check(raw, event, expected)


# --- 6. event types and subject filters ------------------------------------------------------------

SUBJECT = "Experiments/E1/Runs/Run_1"

TYPE_SUBJECT_CASES = [
    case({"includedEventTypes": [RUN_COMPLETED]}, eg(), True, "types-exact"),
    case({"includedEventTypes": [RUN_COMPLETED.upper()]}, eg(), True, "types-ignore-case"),
    case({"includedEventTypes": [MODEL_REGISTERED]}, eg(), False, "types-other"),
    case({"includedEventTypes": [MODEL_REGISTERED, RUN_COMPLETED.lower()]}, eg(), True, "types-one-of-several"),
    case({"includedEventTypes": [MODEL_REGISTERED]}, ce(), False, "types-cloudevents-other"),
    case({"includedEventTypes": [RUN_COMPLETED]}, ce(), True, "types-cloudevents"),
    case({"includedEventTypes": ["All"]}, eg(event_type="Anything.Else"), True, "types-All"),
    case({"includedEventTypes": ["all"]}, ce(event_type="Anything.Else"), True, "types-all-lowercase"),
    case({"includedEventTypes": None}, eg(event_type="Anything.Else"), True, "types-null"),
    case({}, eg(event_type="Anything.Else"), True, "types-absent"),
    case({"includedEventTypes": [RUN_COMPLETED + "d"]}, eg(), False, "types-whole-name-only"),
    # subject prefix / suffix
    case({"subjectBeginsWith": "experiments/e1/"}, eg(subject=SUBJECT), True, "begins-ignore-case-default"),
    case(
        {"subjectBeginsWith": "experiments/e1/", "isSubjectCaseSensitive": False},
        eg(subject=SUBJECT),
        True,
        "begins-ignore-case-false",
    ),
    case(
        {"subjectBeginsWith": "experiments/e1/", "isSubjectCaseSensitive": None},
        eg(subject=SUBJECT),
        True,
        "begins-ignore-case-null",
    ),
    case(
        {"subjectBeginsWith": "experiments/e1/", "isSubjectCaseSensitive": True},
        eg(subject=SUBJECT),
        False,
        "begins-case-sensitive-miss",
    ),
    case(
        {"subjectBeginsWith": "Experiments/E1/", "isSubjectCaseSensitive": True},
        eg(subject=SUBJECT),
        True,
        "begins-case-sensitive-hit",
    ),
    case({"subjectBeginsWith": "Runs/"}, eg(subject=SUBJECT), False, "begins-not-a-substring-match"),
    case({"subjectBeginsWith": "Experiments/*"}, eg(subject=SUBJECT), False, "begins-no-wildcards"),
    case({"subjectEndsWith": "RUN_1"}, eg(subject=SUBJECT), True, "ends-ignore-case"),
    case(
        {"subjectEndsWith": "RUN_1", "isSubjectCaseSensitive": True},
        eg(subject=SUBJECT),
        False,
        "ends-case-sensitive-miss",
    ),
    case(
        {"subjectEndsWith": "Run_1", "isSubjectCaseSensitive": True},
        eg(subject=SUBJECT),
        True,
        "ends-case-sensitive-hit",
    ),
    case({"subjectBeginsWith": "experiments/", "subjectEndsWith": "run_1"}, eg(subject=SUBJECT), True, "both-hold"),
    case(
        {"subjectBeginsWith": "experiments/", "subjectEndsWith": "run_2"}, eg(subject=SUBJECT), False, "both-end-fails"
    ),
    case({"subjectBeginsWith": "models/", "subjectEndsWith": "run_1"}, eg(subject=SUBJECT), False, "both-begin-fails"),
    case({"subjectBeginsWith": "", "subjectEndsWith": ""}, eg(subject=SUBJECT), True, "empty-subject-filters"),
    case({"subjectBeginsWith": "", "subjectEndsWith": ""}, ce(subject=None), True, "empty-filters-no-subject"),
    case({"subjectBeginsWith": "experiments/"}, ce(subject=None), False, "no-subject-begins"),
    case({"subjectEndsWith": "run_1"}, ce(subject=None), False, "no-subject-ends"),
    case({"subjectBeginsWith": "experiments/"}, ce(subject=SUBJECT), True, "cloudevents-subject"),
    case({"subjectBeginsWith": "STRASSE/"}, eg(subject="straße/1"), True, "begins-unicode-casefold"),
    # advanced string filters on Subject ignore case even when subject filters do not
    case(
        {"isSubjectCaseSensitive": True, **af(adv("StringBeginsWith", "Subject", values=["EXPERIMENTS/"]))},
        eg(subject=SUBJECT),
        True,
        "advanced-on-subject-always-ignores-case",
    ),
    # all parts are ANDed
    case(
        {
            "includedEventTypes": [RUN_COMPLETED],
            "subjectBeginsWith": "experiments/",
            **af(adv("StringIn", "data.runStatus", values=["Completed"])),
        },
        eg({"runStatus": "completed"}, subject=SUBJECT),
        True,
        "and-all-parts-hold",
    ),
    case(
        {
            "includedEventTypes": [MODEL_REGISTERED],
            "subjectBeginsWith": "experiments/",
            **af(adv("StringIn", "data.runStatus", values=["Completed"])),
        },
        eg({"runStatus": "completed"}, subject=SUBJECT),
        False,
        "and-type-fails",
    ),
    case(
        {
            "includedEventTypes": [RUN_COMPLETED],
            "subjectBeginsWith": "models/",
            **af(adv("StringIn", "data.runStatus", values=["Completed"])),
        },
        eg({"runStatus": "completed"}, subject=SUBJECT),
        False,
        "and-subject-fails",
    ),
    case(
        {
            "includedEventTypes": [RUN_COMPLETED],
            "subjectBeginsWith": "experiments/",
            **af(adv("StringIn", "data.runStatus", values=["Failed"])),
        },
        eg({"runStatus": "completed"}, subject=SUBJECT),
        False,
        "and-advanced-fails",
    ),
    case(None, eg(), True, "null-filter-matches-all"),
    case({}, ce(subject=None), True, "empty-filter-matches-all"),
]


@pytest.mark.parametrize(("raw", "event", "expected"), TYPE_SUBJECT_CASES)
def test_types_and_subjects(raw, event, expected):
    check(raw, event, expected)


# --- 7. extensions: all / any / not -----------------------------------------------------------------

S_A = adv("StringIn", "data.s", values=["a"])
N_GT = adv("NumberGreaterThan", "data.n", value=5)
TAGS = adv("StringIn", "data.tags", values=["gpu"])

EXTENSION_CASES = [
    case({"all": [S_A, N_GT]}, d(s="A", n=6), True, "all-both"),
    case({"all": [S_A, N_GT]}, d(s="A", n=5), False, "all-one-fails"),
    case({"any": [S_A, N_GT]}, d(s="b", n=6), True, "any-second"),
    case({"any": [S_A, N_GT]}, d(s="b", n=5), False, "any-none"),
    case({"not": S_A}, d(s="b"), True, "not-advanced"),
    case({"not": S_A}, d(s="a"), False, "not-advanced-holds"),
    case({"not": {"includedEventTypes": [MODEL_REGISTERED]}}, eg(), True, "not-filter-object"),
    case({"not": {"not": S_A}}, d(s="a"), True, "not-not"),
    case(
        {"any": [{"includedEventTypes": [MODEL_REGISTERED]}, {"subjectBeginsWith": "experiments/"}]},
        eg(),
        True,
        "any-of-filter-objects",
    ),
    case(
        {"any": [{"includedEventTypes": [MODEL_REGISTERED]}, {"subjectBeginsWith": "models/"}]},
        eg(),
        False,
        "any-of-filter-objects-none",
    ),
    case({"all": [{"advancedFilters": [S_A]}, {"any": [N_GT, {"not": S_A}]}]}, d(s="a", n=9), True, "nested-deep"),
    case(
        {"all": [{"advancedFilters": [S_A]}, {"any": [N_GT, {"not": S_A}]}]}, d(s="a", n=1), False, "nested-deep-fails"
    ),
    case(
        {"includedEventTypes": [RUN_COMPLETED], "any": [S_A, N_GT]},
        eg({"s": "a"}, event_type=MODEL_REGISTERED),
        False,
        "extension-anded-with-types",
    ),
    case({**af(N_GT), "not": S_A}, d(s="b", n=6), True, "extension-anded-with-advanced"),
    case({**af(N_GT), "not": S_A}, d(s="b", n=4), False, "extension-anded-with-advanced-fails"),
    # isSubjectCaseSensitive is inherited by nested filter objects, and may be overridden there
    case(
        {"isSubjectCaseSensitive": True, "any": [{"subjectBeginsWith": "EXPERIMENTS/"}]},
        eg(subject=SUBJECT),
        False,
        "inherit-case-sensitive-any",
    ),
    case(
        {"isSubjectCaseSensitive": False, "any": [{"subjectBeginsWith": "EXPERIMENTS/"}]},
        eg(subject=SUBJECT),
        True,
        "inherit-case-insensitive-any",
    ),
    case(
        {"isSubjectCaseSensitive": True, "not": {"subjectEndsWith": "run_1"}},
        eg(subject=SUBJECT),
        True,
        "inherit-case-sensitive-not",
    ),
    case({"not": {"subjectEndsWith": "run_1"}}, eg(subject=SUBJECT), False, "inherit-default-not"),
    case(
        {"isSubjectCaseSensitive": True, "all": [{"all": [{"subjectBeginsWith": "experiments/"}]}]},
        eg(subject=SUBJECT),
        False,
        "inherit-case-sensitive-two-levels",
    ),
    case(
        {"isSubjectCaseSensitive": True, "all": [{"isSubjectCaseSensitive": False, "subjectBeginsWith": "EXP"}]},
        eg(subject=SUBJECT),
        True,
        "override-case-sensitive-nested",
    ),
    case(
        {"all": [{"isSubjectCaseSensitive": True, "subjectBeginsWith": "exp"}]},
        eg(subject=SUBJECT),
        False,
        "nested-case-sensitive-only",
    ),
    # enableAdvancedFilteringOnArrays is inherited by advanced filters and nested objects
    case({"enableAdvancedFilteringOnArrays": True, "all": [TAGS]}, d(tags=["cpu", "GPU"]), True, "inherit-arrays-item"),
    case({"all": [TAGS]}, d(tags=["cpu", "GPU"]), False, "no-arrays-item"),
    case(
        {"enableAdvancedFilteringOnArrays": True, "any": [{"advancedFilters": [TAGS]}]},
        d(tags=["gpu"]),
        True,
        "inherit-arrays-object",
    ),
    case({"enableAdvancedFilteringOnArrays": True, "not": TAGS}, d(tags=["cpu"]), True, "inherit-arrays-not"),
    case({"not": TAGS}, d(tags=["cpu"]), True, "not-of-false-on-array"),
    case({"not": TAGS}, d(tags=["gpu"]), True, "not-of-arrays-off-is-true-even-with-match"),
    case({"enableAdvancedFilteringOnArrays": True, "not": TAGS}, d(tags=["gpu"]), False, "not-of-arrays-on-match"),
    case(
        {"any": [{"enableAdvancedFilteringOnArrays": True, "advancedFilters": [TAGS]}]},
        d(tags=["gpu"]),
        True,
        "nested-arrays-only",
    ),
    case(
        {
            "enableAdvancedFilteringOnArrays": True,
            "all": [{"enableAdvancedFilteringOnArrays": False, "advancedFilters": [TAGS]}],
        },
        d(tags=["gpu"]),
        False,
        "override-arrays-nested",
    ),
]


@pytest.mark.parametrize(("raw", "event", "expected"), EXTENSION_CASES)
def test_extensions(raw, event, expected):
    check(raw, event, expected)


# --- 8. the shape `az eventgrid event-subscription show` prints -------------------------------------

AZ_SHOW = {
    "advancedFilters": None,
    "enableAdvancedFilteringOnArrays": None,
    "includedEventTypes": [RUN_COMPLETED, MODEL_REGISTERED],
    "isSubjectCaseSensitive": None,
    "subjectBeginsWith": "",
    "subjectEndsWith": "",
}
AZ_SHOW_ADVANCED = {
    **AZ_SHOW,
    "advancedFilters": [
        {"key": "data.runStatus", "operatorType": "StringIn", "values": ["Completed"]},
        {"key": "data.runTags.stage", "operatorType": "IsNotNull", "value": None, "values": None},
        {"key": "data.score", "operatorType": "NumberGreaterThan", "value": 0.5, "values": None},
    ],
    "enableAdvancedFilteringOnArrays": True,
}
AZ_DATA = {"runStatus": "Completed", "runTags": {"stage": "x"}, "score": 0.75}

AZ_CASES = [
    case(AZ_SHOW, eg(), True, "az-show-type-listed"),
    case(AZ_SHOW, eg(event_type=MODEL_REGISTERED, subject="models/m:1"), True, "az-show-second-type"),
    case(AZ_SHOW, ce(subject=None), True, "az-show-no-subject"),
    case(AZ_SHOW, eg(event_type="Microsoft.MachineLearningServices.DatasetDriftDetected"), False, "az-show-other-type"),
    case(AZ_SHOW_ADVANCED, eg(AZ_DATA), True, "az-show-advanced-hold"),
    case(AZ_SHOW_ADVANCED, eg({**AZ_DATA, "score": 0.5}), False, "az-show-advanced-fail"),
]


@pytest.mark.parametrize(("raw", "event", "expected"), AZ_CASES)
def test_az_show_shape(raw, event, expected):
    check(raw, event, expected)


def test_az_show_shape_index_fields():
    compiled = compile_ok(AZ_SHOW)
    assert compiled.event_types == frozenset({RUN_COMPLETED.casefold(), MODEL_REGISTERED.casefold()})
    assert compiled.subject_prefix == ""
    assert compiled.prefix_case_sensitive is False


@pytest.mark.parametrize(
    ("raw", "event_types", "prefix", "case_sensitive"),
    [
        pytest.param({}, None, "", False, id="empty"),
        pytest.param({"includedEventTypes": ["All"]}, None, "", False, id="all"),
        pytest.param({"includedEventTypes": ["A.B", "a.b", "C"]}, frozenset({"a.b", "c"}), "", False, id="types"),
        pytest.param({"subjectBeginsWith": "Exp/"}, None, "exp/", False, id="prefix-folded"),
        pytest.param(
            {"subjectBeginsWith": "Exp/", "isSubjectCaseSensitive": True}, None, "Exp/", True, id="prefix-exact"
        ),
        pytest.param(
            {"any": [{"subjectBeginsWith": "x", "includedEventTypes": ["T"]}]}, None, "", False, id="nested-not-indexed"
        ),
    ],
)
def test_index_fields(raw, event_types, prefix, case_sensitive):
    compiled = compile_ok(raw)
    assert compiled.event_types == event_types
    assert compiled.subject_prefix == prefix
    assert compiled.prefix_case_sensitive is case_sensitive


# --- 9. invalid filters --------------------------------------------------------------------------

ADV0 = (*AT, "advancedFilters", 0)


def _inv(raw: object, path: tuple[str | int, ...], *fragments: str, id: str) -> Any:
    return pytest.param(raw, path, fragments, id=id)


INVALID_CASES = [
    _inv(
        af(adv("StringContain", values=["a"])),
        (*ADV0, "operatorType"),
        "unknown operatorType 'StringContain'",
        "did you mean 'StringContains'",
        id="unknown-operator-typo",
    ),
    _inv(
        af(adv("stringin", values=["a"])),
        (*ADV0, "operatorType"),
        "did you mean 'StringIn'",
        "case-sensitive",
        id="unknown-operator-case",
    ),
    _inv(
        af(adv("Frobnicate", values=["a"])),
        (*ADV0, "operatorType"),
        "unknown operatorType 'Frobnicate'",
        "NumberIn",
        id="unknown-operator-lists-known",
    ),
    _inv(
        af({"key": "data.x", "values": ["a"]}),
        (*ADV0, "operatorType"),
        "unknown operatorType None",
        id="missing-operator",
    ),
    _inv(
        af({"operatorType": "StringIn", "values": ["a"]}), (*ADV0, "key"), "'key' must be a dot path", id="missing-key"
    ),
    _inv(
        af(adv("StringIn", "data..x", values=["a"])), (*ADV0, "key"), "'key' must be a dot path", id="empty-key-member"
    ),
    _inv(af(adv("StringIn", "", values=["a"])), (*ADV0, "key"), "'key' must be a dot path", id="empty-key"),
    _inv(
        af({"operatorType": "StringIn", "key": 5, "values": ["a"]}),
        (*ADV0, "key"),
        "'key' must be a dot path",
        id="number-key",
    ),
    _inv(
        af(adv("NumberGreaterThan", values=[1])),
        (*ADV0, "values"),
        "takes 'value', not 'values'",
        id="value-op-given-values",
    ),
    _inv(af(adv("StringIn", value="a")), (*ADV0, "value"), "takes 'values', not 'value'", id="values-op-given-value"),
    _inv(
        af(adv("BoolEquals", values=[True])), (*ADV0, "values"), "takes 'value', not 'values'", id="bool-given-values"
    ),
    _inv(af(adv("NumberGreaterThan")), ADV0, "NumberGreaterThan needs 'value'", id="missing-value"),
    _inv(af(adv("StringIn")), ADV0, "StringIn needs 'values'", id="missing-values"),
    _inv(af(adv("NumberInRange", values=None)), ADV0, "NumberInRange needs 'values'", id="null-values"),
    _inv(af(adv("NumberIn", values=["5"])), (*ADV0, "values", 0), "expected a number", id="string-for-number"),
    _inv(af(adv("NumberGreaterThan", value="5")), (*ADV0, "value"), "expected a number", id="string-for-number-value"),
    _inv(af(adv("NumberIn", values=[1, True])), (*ADV0, "values", 1), "expected a number", id="bool-for-number"),
    _inv(af(adv("NumberLessThan", value=float("nan"))), (*ADV0, "value"), "expected a number", id="nan-for-number"),
    _inv(af(adv("StringIn", values=["a", 5])), (*ADV0, "values", 1), "expected a string", id="number-for-string"),
    _inv(af(adv("StringBeginsWith", values=[True])), (*ADV0, "values", 0), "expected a string", id="bool-for-string"),
    _inv(af(adv("BoolEquals", value="true")), (*ADV0, "value"), "expected true or false", id="string-for-bool"),
    _inv(af(adv("BoolEquals", value=1)), (*ADV0, "value"), "expected true or false", id="number-for-bool"),
    _inv(af(adv("NumberInRange", values=[[1]])), (*ADV0, "values", 0), "[low, high] pair", id="range-one-number"),
    _inv(af(adv("NumberInRange", values=[1, 2])), (*ADV0, "values", 0), "[low, high] pair", id="range-not-nested"),
    _inv(
        af(adv("NumberNotInRange", values=[[1, 2, 3]])),
        (*ADV0, "values", 0),
        "[low, high] pair",
        id="range-three-numbers",
    ),
    _inv(
        af(adv("NumberInRange", values=[[0, 1], [1, "2"]])),
        (*ADV0, "values", 1),
        "[low, high] pair",
        id="range-string-bound",
    ),
    _inv(af(adv("NumberInRange", values=[[5, 1]])), (*ADV0, "values", 0), "low above high", id="range-low-above-high"),
    _inv(af(adv("StringIn", values=[])), (*ADV0, "values"), "must be a non-empty list", id="empty-values"),
    _inv(af(adv("NumberInRange", values=[])), (*ADV0, "values"), "must be a non-empty list", id="empty-ranges"),
    _inv(af(adv("StringIn", values="a")), (*ADV0, "values"), "must be a non-empty list", id="values-not-a-list"),
    _inv(
        af(*[adv("IsNotNull", f"data.k{i}") for i in range(26)]),
        (*AT, "advancedFilters"),
        "26 advanced filters",
        "at most 25",
        id="too-many-filters",
    ),
    _inv(
        af(adv("StringIn", values=[f"v{i}" for i in range(26)])),
        (*AT, "advancedFilters"),
        "26 filter values",
        "at most 25",
        id="too-many-values-one-filter",
    ),
    _inv(
        af(
            adv("StringIn", values=[f"v{i}" for i in range(13)]),
            adv("NumberIn", values=list(range(12))),
            adv("NumberGreaterThan", value=1),
        ),
        (*AT, "advancedFilters"),
        "26 filter values",
        id="too-many-values-across-filters",
    ),
    _inv(
        af(adv("StringIn", values=["x" * 513])),
        (*ADV0, "values", 0),
        "limited to 512 characters",
        "513",
        id="string-too-long",
    ),
    _inv(
        {"subjectBeginWith": "x"},
        (*AT, "subjectBeginWith"),
        "unknown filter field 'subjectBeginWith'",
        "did you mean 'subjectBeginsWith'",
        id="unknown-filter-field",
    ),
    _inv(
        af({"operatorType": "StringIn", "key": "data.x", "Values": ["a"]}),
        (*ADV0, "Values"),
        "unknown advanced filter field 'Values'",
        id="unknown-advanced-field",
    ),
    _inv(
        {"isSubjectCaseSensitive": "yes"},
        (*AT, "isSubjectCaseSensitive"),
        "must be true or false",
        id="non-bool-case-sensitive",
    ),
    _inv(
        {"isSubjectCaseSensitive": 1},
        (*AT, "isSubjectCaseSensitive"),
        "must be true or false",
        id="one-for-case-sensitive",
    ),
    _inv(
        {"enableAdvancedFilteringOnArrays": "true"},
        (*AT, "enableAdvancedFilteringOnArrays"),
        "must be true or false",
        id="non-bool-arrays",
    ),
    _inv(af(adv("IsNotNull", value=True)), (*ADV0, "value"), "IsNotNull takes no 'value'", id="IsNotNull-with-value"),
    _inv(
        af(adv("IsNullOrUndefined", values=["a"])),
        (*ADV0, "values"),
        "IsNullOrUndefined takes no 'values'",
        id="IsNullOrUndefined-with-values",
    ),
    _inv(["not", "a", "mapping"], AT, "'filter' must be a mapping", id="filter-not-a-mapping"),
    _inv(
        {"includedEventTypes": RUN_COMPLETED},
        (*AT, "includedEventTypes"),
        "must be a list of event type names",
        id="types-not-a-list",
    ),
    _inv(
        {"includedEventTypes": [RUN_COMPLETED, ""]},
        (*AT, "includedEventTypes"),
        "must be a list",
        id="types-empty-name",
    ),
    _inv({"subjectBeginsWith": 5}, (*AT, "subjectBeginsWith"), "must be a string", id="subject-not-a-string"),
    _inv(
        {"advancedFilters": {"operatorType": "IsNotNull", "key": "data.x"}},
        (*AT, "advancedFilters"),
        "must be a list",
        id="advanced-not-a-list",
    ),
    _inv(
        {"advancedFilters": ["IsNotNull data.x"]},
        ADV0,
        "an advanced filter must be a mapping",
        id="advanced-item-not-a-mapping",
    ),
    _inv({"any": []}, (*AT, "any"), "must be a non-empty list", id="any-empty"),
    _inv(
        {"all": {"operatorType": "IsNotNull", "key": "data.x"}},
        (*AT, "all"),
        "must be a non-empty list",
        id="all-not-a-list",
    ),
    _inv({"not": [S_A]}, (*AT, "not"), "a condition must be a mapping", id="not-a-list"),
    _inv({"all": [{}]}, (*AT, "all", 0), "an empty condition", id="empty-condition"),
    _inv(
        {"all": [S_A, {"advancedFilters": [adv("NumberIn", values=["1"])]}]},
        (*AT, "all", 1, "advancedFilters", 0, "values", 0),
        "expected a number",
        id="nested-path",
    ),
    _inv({"any": [{"not": adv("StringIn")}]}, (*AT, "any", 0, "not"), "StringIn needs 'values'", id="nested-not-path"),
    _inv(
        {"any": [{"subjectBeginsWith": "a", "isSubjectCaseSensitive": "no"}]},
        (*AT, "any", 0, "isSubjectCaseSensitive"),
        "must be true or false",
        id="nested-bool",
    ),
]


@pytest.mark.parametrize(("raw", "path", "fragments"), INVALID_CASES)
def test_invalid_filter_is_reported(raw, path, fragments):
    reports: list[tuple[tuple[str | int, ...], str]] = []
    compiled = compile_filter(raw, AT, lambda where, message: reports.append((where, message)))
    assert compiled is None
    at_path = [message for where, message in reports if where == path]
    assert at_path, f"nothing reported at {path}; reports: {reports}"
    assert any(all(fragment in message for fragment in fragments) for message in at_path), reports


def test_every_problem_is_reported_not_only_the_first():
    reports: list[tuple[tuple[str | int, ...], str]] = []
    raw = {
        "subjectBeginWith": "x",
        "isSubjectCaseSensitive": "yes",
        "advancedFilters": [adv("NumberIn", values=["1"]), adv("Nope")],
    }
    assert compile_filter(raw, AT, lambda where, message: reports.append((where, message))) is None
    assert [where for where, _ in reports] == [
        (*AT, "subjectBeginWith"),
        (*AT, "isSubjectCaseSensitive"),
        (*ADV0, "values", 0),
        (*AT, "advancedFilters", 1, "operatorType"),
    ]


def test_limits_are_inclusive():
    """25 filters and 25 values in all are allowed; 512-character strings are allowed."""
    compile_ok(af(*[adv("StringIn", f"data.k{i}", values=["v"]) for i in range(25)]))
    compile_ok(af(adv("StringIn", values=["x" * 512, *[f"v{i}" for i in range(24)]])))


def test_why_not_names_the_failing_part():
    event = eg({"runStatus": "Running"}, subject=SUBJECT)
    condition = compile_ok(
        {
            "includedEventTypes": [RUN_COMPLETED],
            "subjectBeginsWith": "experiments/",
            **af(adv("StringIn", "data.runStatus", values=["Completed"])),
        }
    ).condition
    reason = condition.why_not(event)
    assert reason is not None
    assert "advancedFilters[0]" in reason
    assert "StringIn data.runStatus" in reason
    assert "'Running'" in reason
    missing = compile_ok(af(adv("StringIn", "data.other", values=["a"]))).condition.why_not(event)
    assert missing is not None
    assert "not in the event" in missing
    arrays = compile_ok(af(adv("StringIn", "data.l", values=["a"]))).condition.why_not(eg({"l": ["a"]}))
    assert arrays is not None
    assert "enableAdvancedFilteringOnArrays is off" in arrays
    no_subject = compile_ok({"subjectBeginsWith": "x"}).condition.why_not(ce(subject=None))
    assert no_subject is not None
    assert "no subject" in no_subject


# --- 10. properties: combinator laws ---------------------------------------------------------------

PROPERTY_SETTINGS = settings(max_examples=200, deadline=None, database=None)

NUMBERS = [0, 1, -2, 5, 5.0, 0.3, 2.5, 1e3, 9007199254740993]
STRINGS = ["a", "A", "ab", "Ab", "b", "5", "true", "", "ß", "ss"]
KEYS = ["data.a", "data.b", "data.c", "data.c.x", "data.missing", "Subject", "EventType", "data.A"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(NUMBERS),
    st.integers(min_value=-(2**66), max_value=2**66),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6),
    st.sampled_from(STRINGS),
    st.text(alphabet="aAbB5ßs", max_size=4),
)
json_values = st.one_of(
    scalars,
    st.lists(scalars, max_size=4),
    st.fixed_dictionaries({"x": scalars}),
    st.dictionaries(st.just("y"), scalars),
)
data_dicts = st.dictionaries(st.sampled_from(["a", "b", "c", "A"]), json_values, max_size=4)


@st.composite
def events(draw: st.DrawFn) -> Event:
    data = draw(st.one_of(data_dicts, st.none()))
    subject = draw(st.sampled_from(["ab/1", "AB/2", "x", "ß"]))
    event_type = draw(st.sampled_from(["T.One", "t.one", "T.Two"]))
    if draw(st.booleans()):
        return eg(data, subject=subject, event_type=event_type)
    return ce(data, subject=draw(st.one_of(st.none(), st.just(subject))), event_type=event_type)


def _operand(name: str, draw: st.DrawFn) -> dict[str, object]:
    spec = OPERATORS[name]
    kind = spec.kind.value
    if kind == "presence":
        return {}
    if kind == "boolean":
        return {"value": draw(st.booleans())}
    if spec.operand.value == "ranges":
        pairs = draw(st.lists(st.tuples(st.sampled_from(NUMBERS), st.sampled_from(NUMBERS)), min_size=1, max_size=3))
        return {"values": [sorted(pair) for pair in pairs]}
    pool = st.sampled_from(NUMBERS) if kind == "number" else st.sampled_from(STRINGS)
    if spec.operand.value == "value":
        return {"value": draw(pool)}
    return {"values": draw(st.lists(pool, min_size=1, max_size=3))}


@st.composite
def leaves(draw: st.DrawFn) -> dict[str, object]:
    """A random advanced filter, or a small filter object."""
    choice = draw(st.integers(min_value=0, max_value=5))
    if choice == 0:
        return {"includedEventTypes": draw(st.lists(st.sampled_from(["T.ONE", "t.two", "All"]), min_size=1))}
    if choice == 1:
        return {
            draw(st.sampled_from(["subjectBeginsWith", "subjectEndsWith"])): draw(
                st.sampled_from(["ab", "AB", "", "ss"])
            ),
            "isSubjectCaseSensitive": draw(st.one_of(st.none(), st.booleans())),
        }
    name = draw(st.sampled_from(sorted(OPERATORS)))
    return {"operatorType": name, "key": draw(st.sampled_from(KEYS)), **_operand(name, draw)}


def _holds(raw: dict[str, object], arrays: bool, event: Event) -> bool:
    condition = compile_ok({"enableAdvancedFilteringOnArrays": arrays, "all": [raw]}).condition
    result = condition.holds(event)
    assert (condition.why_not(event) is None) is result
    return result


def _as_filter(raw: dict[str, object], arrays: bool) -> dict[str, object]:
    if "operatorType" in raw:
        return {"enableAdvancedFilteringOnArrays": arrays, "advancedFilters": [raw]}
    return {"enableAdvancedFilteringOnArrays": arrays, **raw}


@PROPERTY_SETTINGS
@given(a=leaves(), b=leaves(), arrays=st.booleans(), event=events())
def test_combinator_laws(a, b, arrays, event):
    ha, hb = _holds(a, arrays, event), _holds(b, arrays, event)
    # a leaf means the same inside `all` as written directly (as an advanced filter or filter object)
    direct = compile_ok(_as_filter(a, arrays)).condition
    assert direct.holds(event) is ha
    assert _holds({"all": [a, b]}, arrays, event) is (ha and hb)
    assert _holds({"any": [a, b]}, arrays, event) is (ha or hb)
    assert _holds({"not": a}, arrays, event) is (not ha)
    assert _holds({"not": {"not": a}}, arrays, event) is ha
    assert _holds({"not": {"all": [a, b]}}, arrays, event) is _holds({"any": [{"not": a}, {"not": b}]}, arrays, event)
    assert _holds({"not": {"any": [a, b]}}, arrays, event) is _holds({"all": [{"not": a}, {"not": b}]}, arrays, event)


@st.composite
def trees(draw: st.DrawFn, depth: int = 3) -> dict[str, object]:
    if depth == 0 or draw(st.booleans()):
        return draw(leaves())
    combinator = draw(st.sampled_from(["all", "any", "not", "advancedFilters"]))
    if combinator == "not":
        return {"not": draw(trees(depth - 1))}
    if combinator == "advancedFilters":
        return {
            "advancedFilters": draw(st.lists(leaves().filter(lambda x: "operatorType" in x), min_size=1, max_size=3))
        }
    return {combinator: draw(st.lists(trees(depth - 1), min_size=1, max_size=3))}


@PROPERTY_SETTINGS
@given(tree=trees(), arrays=st.booleans(), case_sensitive=st.one_of(st.none(), st.booleans()), event=events())
def test_why_not_is_none_iff_holds(tree, arrays, case_sensitive, event):
    raw = {"enableAdvancedFilteringOnArrays": arrays, "isSubjectCaseSensitive": case_sensitive, "all": [tree]}
    condition = compile_ok(raw).condition
    holds = condition.holds(event)
    reason = condition.why_not(event)
    assert (reason is None) is holds
    if reason is not None:
        assert reason.strip()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"DriftCoefficient": 1}, True),  # exact
        ({"driftCoefficient": 1}, True),  # first letter's case differs
        ({"DRIFTCOEFFICIENT": 1}, True),  # any other case
        ({"driftCoefficient": 0, "DriftCoefficient": 1}, True),  # exact wins
        ({"DRIFTCOEFFICIENT": 0, "driftCoefficient": 1}, True),  # first-letter variant beats the rest
        ({"driftcoefficient": 1, "DRIFTCOEFFICIENT": 0}, True),  # otherwise the first in the object
        ({"DRIFTCOEFFICIENT": 0, "driftcoefficient": 1}, False),
        ({"drift": 1}, False),
    ],
)
def test_key_spellings_resolve_in_a_fixed_order(data, expected):
    raw = {"operatorType": "NumberGreaterThan", "key": "data.DriftCoefficient", "value": 0.5}
    condition = compile_ok({"advancedFilters": [raw]}).condition
    assert condition.holds(eg(data)) is expected
