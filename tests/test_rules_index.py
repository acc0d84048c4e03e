"""The rules table: its index by event type and subject prefix must agree with brute force."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import compile_ok, decode_one
from worker.actions import ActionSpec
from worker.actions.log import LogParams
from worker.core.rules import Explanation, Outcome, Rule, RulesTable, explain
from worker.events import Event

WORKSPACE = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/"
    "Microsoft.MachineLearningServices/workspaces/ws1"
)
OTHER_WORKSPACE = WORKSPACE.replace("/ws1", "/ws2")
RUN_COMPLETED = "Microsoft.MachineLearningServices.RunCompleted"
RUN_STATUS_CHANGED = "Microsoft.MachineLearningServices.RunStatusChanged"
MODEL_REGISTERED = "Microsoft.MachineLearningServices.ModelRegistered"
EVENT_ID = "831e1650-001e-001b-66ab-eeb76e069631"
LOG = ActionSpec("log", 0, LogParams())


def eg(
    subject: str = "experiments/e1/runs/r1",
    event_type: str = RUN_COMPLETED,
    *,
    data: object = None,
    topic: str | None = WORKSPACE,
    event_id: str = EVENT_ID,
) -> Event:
    document: dict[str, object] = {
        "subject": subject,
        "eventType": event_type,
        "eventTime": "2024-05-06T07:08:09Z",
        "id": event_id,
        "data": data,
        "dataVersion": "2",
    }
    if topic is not None:
        document["topic"] = topic
    return decode_one([document])


def ce(
    subject: str | None = None,
    event_type: str = RUN_COMPLETED,
    *,
    data: object = None,
    source: str = WORKSPACE,
) -> Event:
    document: dict[str, object] = {
        "specversion": "1.0",
        "type": event_type,
        "source": source,
        "id": "9aeb0fdf-c01e-0131-0922-9eb54906e209",
        "data": data,
    }
    if subject is not None:
        document["subject"] = subject
    return decode_one(document)


def rule(name: str, raw: object, *actions: ActionSpec) -> Rule:
    return Rule(name, compile_ok(raw), actions=actions or (LOG,))


def names(rules: tuple[Rule, ...]) -> list[str]:
    return [r.name for r in rules]


# --- property: the index agrees with brute force -----------------------------------------------------

TYPES = ["T.RunCompleted", "T.ModelRegistered", "T.RunFailed"]
#: Characters whose case folding changes length (ß -> ss, ﬁ -> fi, İ -> i̇) or differs from lower().
ALPHABET = "aAbB/sSßﬁİiK"
PREFIXES = ["", "a", "A", "a/", "A/B", "ss", "SS", "sS", "ß", "fi", "FI", "ﬁ", "i̇", "İ", "k", "K"]
SUBJECTS = ["a/b", "A/B/c", "ß", "ßa", "ss", "SS", "ﬁ", "ﬁle", "İ", "i̇x", "K", "k"]


def _case_variants(name: str) -> st.SearchStrategy[str]:
    return st.sampled_from([name, name.upper(), name.lower()])


type_names = st.sampled_from(TYPES).flatmap(_case_variants)
prefixes = st.one_of(st.sampled_from(PREFIXES), st.text(alphabet=ALPHABET, max_size=3))
subjects = st.one_of(st.sampled_from(SUBJECTS), st.text(alphabet=ALPHABET, min_size=1, max_size=5))


@st.composite
def raw_filters(draw: st.DrawFn) -> dict[str, object]:
    raw: dict[str, object] = {}
    types = draw(st.sampled_from(["absent", "null", "All", "empty", "list", "list", "list"]))
    if types == "null":
        raw["includedEventTypes"] = None
    elif types == "All":
        raw["includedEventTypes"] = ["All"]
    elif types == "empty":
        raw["includedEventTypes"] = []
    elif types == "list":
        raw["includedEventTypes"] = draw(st.lists(type_names, min_size=1, max_size=3))
    if draw(st.booleans()):
        raw["subjectBeginsWith"] = draw(prefixes)
    case_sensitive = draw(st.sampled_from(["absent", None, True, False]))
    if case_sensitive != "absent":
        raw["isSubjectCaseSensitive"] = case_sensitive
    if draw(st.integers(min_value=0, max_value=3)) == 0:
        raw["subjectEndsWith"] = draw(st.text(alphabet=ALPHABET, max_size=2))
    if draw(st.integers(min_value=0, max_value=3)) == 0:
        value = draw(st.sampled_from("ab"))
        raw["advancedFilters"] = [{"operatorType": "StringIn", "key": "data.s", "values": [value]}]
    if draw(st.integers(min_value=0, max_value=4)) == 0:
        # conditions inside extensions are evaluated, never indexed
        raw["any"] = [{"subjectBeginsWith": draw(prefixes)}, {"includedEventTypes": [draw(type_names)]}]
    return raw


@st.composite
def events(draw: st.DrawFn) -> Event:
    event_type = draw(st.one_of(type_names, st.just("T.Unknown")))
    data = {"s": draw(st.sampled_from(["a", "A", "b"]))}
    if draw(st.booleans()):
        return eg(draw(subjects), event_type, data=data)
    return ce(draw(st.one_of(st.none(), subjects)), event_type, data=data)


def _admits_type(raw: dict[str, object], event_type: str) -> bool:
    """Whether a rule's own includedEventTypes admits the type, worked out from the raw filter."""
    types = raw.get("includedEventTypes")
    if not types:
        return True
    assert isinstance(types, list)
    folded = [t.casefold() for t in types]
    return "all" in folded or event_type.casefold() in folded


@settings(max_examples=200, deadline=None, database=None)
@given(raws=st.lists(raw_filters(), max_size=8), batch=st.lists(events(), min_size=1, max_size=4))
def test_index_agrees_with_brute_force(raws, batch):
    rules = [rule(f"r{i}", raw) for i, raw in enumerate(raws)]
    table = RulesTable.build(rules)
    for event in batch:
        brute = [r.name for r in rules if r.filter.condition.holds(event)]
        handled = any(_admits_type(raw, event.type) for raw in raws)
        verdict = table.evaluate(event)
        assert table.handles(event.type) is handled
        if brute:
            assert verdict.outcome is Outcome.MATCHED
            assert names(verdict.rules) == brute
        else:
            assert verdict.outcome is (Outcome.UNMATCHED if handled else Outcome.UNHANDLED_TYPE)
            assert verdict.rules == ()
        explained = explain(table, event)
        assert [e.rule for e in explained] == [r.name for r in rules]
        assert [e.rule for e in explained if e.matched] == brute


# --- plain tests ---------------------------------------------------------------------------------


def test_casefold_that_lengthens_the_subject_still_finds_the_rule():
    """'ß' folds to 'ss': a case-insensitive prefix 'SS' holds for subject 'ß', so the index must offer it."""
    rules = [rule("eszett", {"subjectBeginsWith": "SS"}), rule("ligature", {"subjectBeginsWith": "FIL"})]
    assert rules[0].filter.condition.holds(eg("ß"))
    assert names(RulesTable.build(rules).evaluate(eg("ß")).rules) == ["eszett"]
    assert names(RulesTable.build(rules).evaluate(eg("ﬁl")).rules) == ["ligature"]
    assert names(RulesTable.build(rules).evaluate(eg("Straße")).rules) == []
    typed = [rule("typed", {"includedEventTypes": [RUN_COMPLETED], "subjectBeginsWith": "ssa"})]
    assert names(RulesTable.build(typed).evaluate(eg("ßA")).rules) == ["typed"]


def test_case_sensitive_prefix_is_exact():
    rules = [
        rule("exact", {"subjectBeginsWith": "Experiments/", "isSubjectCaseSensitive": True}),
        rule("folded", {"subjectBeginsWith": "EXPERIMENTS/"}),
    ]
    table = RulesTable.build(rules)
    assert names(table.evaluate(eg("Experiments/e1")).rules) == ["exact", "folded"]
    assert names(table.evaluate(eg("experiments/e1")).rules) == ["folded"]
    assert names(table.evaluate(eg("models/m1")).rules) == []


def test_matches_come_back_in_table_order():
    rules = [
        rule("typed-long-prefix", {"includedEventTypes": [RUN_COMPLETED], "subjectBeginsWith": "experiments/e1/"}),
        rule("wildcard", {}),
        rule("exact-short", {"subjectBeginsWith": "exp", "isSubjectCaseSensitive": True}),
        rule("typed-other", {"includedEventTypes": [MODEL_REGISTERED]}),
        rule("typed-upper", {"includedEventTypes": [RUN_COMPLETED.upper()], "subjectBeginsWith": "EXPERIMENTS"}),
        rule("all-types", {"includedEventTypes": ["All"], "subjectEndsWith": "/r1"}),
    ]
    table = RulesTable.build(rules)
    assert names(table.evaluate(eg("experiments/e1/runs/r1")).rules) == [
        "typed-long-prefix",
        "wildcard",
        "exact-short",
        "typed-upper",
        "all-types",
    ]
    assert names(table.evaluate(eg("models/m:1", MODEL_REGISTERED)).rules) == ["wildcard", "typed-other"]


def test_cloudevent_without_subject_only_matches_rules_without_subject_filters():
    rules = [
        rule("prefix", {"subjectBeginsWith": "experiments/"}),
        rule("suffix", {"subjectEndsWith": "/r1"}),
        rule("empty-prefix", {"subjectBeginsWith": "", "isSubjectCaseSensitive": True}),
        rule("typed", {"includedEventTypes": [RUN_COMPLETED]}),
        rule("other-type", {"includedEventTypes": [MODEL_REGISTERED]}),
    ]
    table = RulesTable.build(rules)
    verdict = table.evaluate(ce(None))
    assert verdict.outcome is Outcome.MATCHED
    assert names(verdict.rules) == ["empty-prefix", "typed"]
    assert names(table.evaluate(ce("experiments/e1/runs/r1")).rules) == ["prefix", "suffix", "empty-prefix", "typed"]


def test_workspace_guard_compares_topics_ignoring_case():
    table = RulesTable.build([rule("any", {})], topics=[WORKSPACE.upper()])
    assert table.topics == frozenset({WORKSPACE.casefold()})
    verdict = table.evaluate(eg(topic=WORKSPACE.lower()))
    assert verdict.outcome is Outcome.MATCHED
    assert names(verdict.rules) == ["any"]
    assert table.evaluate(ce(source=WORKSPACE)).outcome is Outcome.MATCHED


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(eg(topic=OTHER_WORKSPACE), id="event-grid-other-workspace"),
        pytest.param(eg(topic=None), id="event-grid-no-topic"),
        pytest.param(ce(source=OTHER_WORKSPACE), id="cloudevents-other-source"),
        pytest.param(eg(topic=WORKSPACE + "/extra"), id="longer-topic-is-not-a-prefix-match"),
    ],
)
def test_foreign_topic(event):
    table = RulesTable.build([rule("any", {}), rule("typed", {"includedEventTypes": [RUN_COMPLETED]})], [WORKSPACE])
    verdict = table.evaluate(event)
    assert verdict.outcome is Outcome.FOREIGN_TOPIC
    assert verdict.rules == ()
    assert verdict.plan(event) == ()
    assert table.admits_topic(event.topic) is False
    explained = explain(table, event)
    assert [e.rule for e in explained] == ["any", "typed"]
    assert all(not e.matched and "allow-list" in e.reason for e in explained)


def test_table_without_topics_admits_every_topic():
    table = RulesTable.build([rule("any", {})])
    assert table.topics == frozenset()
    for event in (eg(topic=OTHER_WORKSPACE), eg(topic=None), ce(source="urn:anything")):
        assert table.admits_topic(event.topic)
        assert names(table.evaluate(event).rules) == ["any"]


def test_unhandled_type():
    table = RulesTable.build(
        [
            rule("completed", {"includedEventTypes": [RUN_COMPLETED]}),
            rule("registered", {"includedEventTypes": [MODEL_REGISTERED], "subjectBeginsWith": "models/"}),
        ]
    )
    event = eg(event_type=RUN_STATUS_CHANGED)
    verdict = table.evaluate(event)
    assert verdict.outcome is Outcome.UNHANDLED_TYPE
    assert verdict.rules == ()
    assert table.handles(RUN_STATUS_CHANGED) is False
    assert table.handles(RUN_COMPLETED.lower()) is True
    # a rule for every type makes every type handled
    wildcard = RulesTable.build([*table.rules, rule("status", {"subjectBeginsWith": "nothing/"})])
    assert wildcard.handles(RUN_STATUS_CHANGED) is True
    assert wildcard.evaluate(event).outcome is Outcome.UNMATCHED


def test_empty_table_handles_nothing():
    table = RulesTable.build([])
    assert table.evaluate(eg()).outcome is Outcome.UNHANDLED_TYPE


def test_unmatched():
    table = RulesTable.build(
        [
            rule("models", {"includedEventTypes": [RUN_COMPLETED], "subjectBeginsWith": "models/"}),
            rule(
                "failed",
                {
                    "includedEventTypes": [RUN_COMPLETED],
                    "advancedFilters": [{"operatorType": "StringIn", "key": "data.runStatus", "values": ["Failed"]}],
                },
            ),
        ]
    )
    verdict = table.evaluate(eg(data={"runStatus": "Completed"}))
    assert verdict.outcome is Outcome.UNMATCHED
    assert verdict.rules == ()
    assert verdict.plan(eg()) == ()
    assert table.evaluate(eg(data={"runStatus": "FAILED"})).outcome is Outcome.MATCHED


def _plan_table() -> RulesTable:
    notify = (ActionSpec("log", 0, LogParams(message="first")), ActionSpec("log", 1, LogParams(level="warning")))
    return RulesTable.build(
        [
            rule("notify-completed", {"includedEventTypes": [RUN_COMPLETED]}, *notify),
            rule("never", {"includedEventTypes": [MODEL_REGISTERED]}),
            rule("audit", {}),
        ]
    )


def test_plan_order_and_idempotency_keys():
    table = _plan_table()
    event = eg()
    verdict = table.evaluate(event)
    plan = verdict.plan(event)
    assert [(a.rule, a.spec.index) for a in plan] == [("notify-completed", 0), ("notify-completed", 1), ("audit", 0)]
    assert [a.spec for a in plan[:2]] == list(table.rules[0].actions)
    assert all(a.event is event and a.late is False for a in plan)
    assert all(a.late for a in verdict.plan(event, late=True))
    # pinned: the key must not change between releases, or retries after an upgrade would run twice
    assert plan[0].idempotency_key == "e42242c7870e3e99606d3356904690f3"
    assert plan[1].idempotency_key == "c4d1ecd907a88fc5fdaa4ac147ab1239"
    keys = [a.idempotency_key for a in plan]
    assert len(set(keys)) == 3

    # the same event delivered again (a fresh decode) plans the same keys
    again = eg()
    assert again is not event
    assert [a.idempotency_key for a in table.evaluate(again).plan(again)] == keys
    # another event id changes every key
    other = eg(event_id="00000000-0000-0000-0000-000000000001")
    other_keys = [a.idempotency_key for a in table.evaluate(other).plan(other)]
    assert len(other_keys) == 3
    assert not set(other_keys) & set(keys)


def test_idempotency_key_depends_on_rule_and_index():
    event = eg()
    same_index_other_rule = RulesTable.build([rule("audit-2", {})]).evaluate(event).plan(event)
    audit = _plan_table().evaluate(event).plan(event)[2]
    assert audit.rule == "audit"
    assert audit.spec.index == same_index_other_rule[0].spec.index == 0
    assert audit.idempotency_key != same_index_other_rule[0].idempotency_key
    other_index = RulesTable.build([rule("audit", {}, ActionSpec("log", 1, LogParams()))]).evaluate(event).plan(event)
    assert other_index[0].idempotency_key != audit.idempotency_key
    same = RulesTable.build([rule("audit", {})]).evaluate(event).plan(event)
    assert same[0].idempotency_key == audit.idempotency_key


def test_explain_names_the_failing_condition():
    table = RulesTable.build(
        [
            rule("matching", {"includedEventTypes": [RUN_COMPLETED]}),
            rule("wrong-type", {"includedEventTypes": [MODEL_REGISTERED]}),
            rule("wrong-prefix", {"subjectBeginsWith": "models/"}),
            rule(
                "wrong-status",
                {
                    "subjectBeginsWith": "experiments/",
                    "advancedFilters": [
                        {"operatorType": "IsNotNull", "key": "data.runId"},
                        {"operatorType": "StringIn", "key": "data.runStatus", "values": ["Failed", "Canceled"]},
                    ],
                },
            ),
            rule("no-tags", {"any": [{"operatorType": "IsNotNull", "key": "data.tags"}]}),
        ]
    )
    explained = explain(table, eg(data={"runId": "r1", "runStatus": "Completed"}))
    assert all(isinstance(e, Explanation) for e in explained)
    assert [(e.rule, e.matched) for e in explained] == [
        ("matching", True),
        ("wrong-type", False),
        ("wrong-prefix", False),
        ("wrong-status", False),
        ("no-tags", False),
    ]
    reasons = {e.rule: e.reason for e in explained}
    assert reasons["matching"] == "every condition holds"
    assert "includedEventTypes" in reasons["wrong-type"]
    assert RUN_COMPLETED in reasons["wrong-type"]
    assert "subjectBeginsWith 'models/'" in reasons["wrong-prefix"]
    assert "experiments/e1/runs/r1" in reasons["wrong-prefix"]
    assert "advancedFilters[1] StringIn data.runStatus" in reasons["wrong-status"]
    assert "'Completed'" in reasons["wrong-status"]
    assert "advancedFilters[0]" not in reasons["wrong-status"]
    assert "any" in reasons["no-tags"]
    assert "IsNotNull data.tags" in reasons["no-tags"]
