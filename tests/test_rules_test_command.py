"""``python -m worker test``: rules tests pass when what they expect happens, fail with a readable diff
when it does not, and an invalid test file is refused with the file and line of each problem."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from worker.cli import main
from worker.rulefiles.directories import paths_of

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "rules" / "tests").glob("*.test.yaml"))
WS = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/ml-rg"
    "/providers/Microsoft.MachineLearningServices/workspaces/ml-prod"
)

#: Rules of the kinds a test can check: one acting on each event, one that expects, one that groups.
RULES = """
rules:
  - name: mail-on-failure
    max_age: 1h
    filter:
      includedEventTypes: [Microsoft.MachineLearningServices.RunStatusChanged]
      advancedFilters: [{operatorType: StringIn, key: data.runStatus, values: [Failed]}]
    actions:
      - type: email
        host: smtp.example.com
        password: ${env:SMTP_PASSWORD}
        sender: ml@example.com
        to: [oncall@example.com]
        subject: "Run {{ data.runId }} failed"
        text: "{{ subject }}"
  - name: stuck
    filter:
      includedEventTypes: [Microsoft.MachineLearningServices.RunStatusChanged]
      advancedFilters: [{operatorType: StringIn, key: data.runStatus, values: [Running]}]
    expect:
      within: 1h
      key: "{{ data.runId }}"
      filter: {includedEventTypes: [Microsoft.MachineLearningServices.RunCompleted]}
    actions:
      - type: webhook
        url: https://hooks.example.com/ml
        body: {text: "{{ expectation.key }} stuck since {{ time }}"}
  - name: digest
    filter:
      includedEventTypes: [Microsoft.MachineLearningServices.RunStatusChanged]
      advancedFilters: [{operatorType: StringIn, key: data.runStatus, values: [Failed]}]
    group: {by: "{{ data.team }}", wait: 5m, interval: 1h}
    actions:
      - type: webhook
        url: https://hooks.example.com/ml
        body: {text: "{{ group.count }} failures of {{ group.key }}"}
"""

HEADER = """\
rules: [rules.yaml]
start: 2026-11-02T09:00:00Z
defaults: {eventType: Microsoft.MachineLearningServices.RunStatusChanged, subject: experiments/e/runs/r}
"""


def run(tmp_path: Path, cases: str, capsys: pytest.CaptureFixture[str], *, rules: str = RULES) -> tuple[int, str, str]:
    """Write the rules and a test file of ``cases`` (YAML under ``cases:``), run ``worker test`` on it."""
    (tmp_path / "rules.yaml").write_text(rules)
    test = tmp_path / "rules.test.yaml"
    test.write_text(HEADER + "cases:\n" + cases)
    code = main(["test", str(test)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def failed(event_id: str, run_id: str, *, team: str = "risk", after: str = "1s") -> str:
    data = f"{{runId: {run_id}, runStatus: Failed, team: {team}}}"
    return f"      - {{after: {after}, event: {{id: {event_id}, data: {data}}}}}\n"


# --- the shipped tests ----------------------------------------------------------------------------


def test_the_shipped_rules_pass_their_tests(capsys: pytest.CaptureFixture[str]) -> None:
    assert [path.name for path in SHIPPED] == ["default.test.yaml", "examples.test.yaml"]
    assert main(["test", *map(str, SHIPPED)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    cases = sum(len(re.findall(r"^  - name: ", path.read_text(), re.MULTILINE)) for path in SHIPPED)
    assert cases > 10
    assert len([line for line in lines if line.startswith("ok    ")]) == cases
    assert lines[-1] == f"{cases} cases: {cases} ok, 0 failed"
    assert "FAIL" not in out


def test_the_shipped_tests_catch_a_change_of_the_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The digest waiting 5 minutes instead of 2: the example tests see its notification go missing."""
    shutil.copytree(ROOT / "rules", tmp_path / "rules")
    examples = tmp_path / "rules" / "examples.yaml"
    text = examples.read_text()
    assert text.count("wait: 2m") == 1
    examples.write_text(text.replace("wait: 2m", "wait: 5m"))
    assert main(["test", str(tmp_path / "rules" / "tests" / "examples.test.yaml")]) == 1
    out = capsys.readouterr().out
    assert "FAIL  " in out
    assert "failed runs are mailed in one digest per experiment" in out
    assert (
        "group notification of rule failed-runs-digest, key 'churn-training', events f1, f2, f3, count 3: did not fire"
        in out
    )
    assert out.splitlines()[-1].endswith(" ok, 1 failed")


def test_rules_directories_leave_out_their_tests(tmp_path: Path) -> None:
    assert paths_of([ROOT / "rules"]) == [ROOT / "rules" / "default.yaml", ROOT / "rules" / "examples.yaml"]
    for name in ("a.yaml", "b.test.yaml", "tests/c.yml", "tests/c.test.yml", "tests/events/d.json"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("rules: []\n")
    assert paths_of([tmp_path]) == [tmp_path / "a.yaml", tmp_path / "tests" / "c.yml"]
    assert paths_of([tmp_path / "b.test.yaml"]) == [tmp_path / "b.test.yaml"]  # named, a file is read as rules


# --- passing and failing cases --------------------------------------------------------------------


def test_a_case_that_holds_is_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = (
        "  - name: a failure is mailed\n"
        "    events:\n" + failed("f1", "r1") + "    expect:\n"
        "      - event: f1\n"
        "        rule: mail-on-failure\n"
        "        actions: [{type: email, subject: Run r1 failed, to: [oncall@example.com]}]\n"
        "      - {event: f1, rule: digest}\n"
        "      - {event: f1, rule: stuck, matched: false}\n"
        "    pending: [{rule: digest, kind: group, key: risk}]\n"
    )
    code, out, err = run(tmp_path, cases, capsys)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"ok    {tmp_path / 'rules.test.yaml'}:5: a failure is mailed",
        "1 case: 1 ok, 0 failed",
    ]


def test_a_failing_case_shows_the_diff_of_the_actions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = (
        "  - name: a failure is mailed\n"
        "    exhaustive: false\n"
        "    events:\n" + failed("f1", "r1") + "    expect:\n"
        "      - event: f1\n"
        "        rule: mail-on-failure\n"
        "        actions:\n"
        "          - {type: email, to: [oncall@example.com], subject: Run r2 failed}\n"
    )
    code, out, _ = run(tmp_path, cases, capsys)
    assert code == 1
    test = tmp_path / "rules.test.yaml"
    # Only what the expectation names is compared, and shown: the subject differs, `to` is the same.
    assert out.splitlines() == [
        f"FAIL  {test}:5: a failure is mailed",
        f"      {test}:10: event f1, rule mail-on-failure: the actions planned differ",
        "          --- expected",
        "          +++ planned",
        "          @@ -1,4 +1,4 @@",
        "           - type: email",
        "             to:",
        "             - oncall@example.com",
        "          -  subject: Run r2 failed",
        "          +  subject: Run r1 failed",
        "1 case: 0 ok, 1 failed",
    ]


def test_an_action_no_expectation_names_fails_an_exhaustive_case(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = "  - name: NAME\n    EXHAUSTIVE\n    events:\n" + failed("f1", "r1") + "    expect: []\n"
    code, out, _ = run(tmp_path, case.replace("NAME", "strict").replace("EXHAUSTIVE", "exhaustive: true"), capsys)
    assert code == 1
    assert "unexpected actions: event f1, rule mail-on-failure: 1 action (email)" in out
    # The action is shown rendered, its secret hidden (not even the placeholder a dry run loads).
    assert "  subject: Run r1 failed" in out
    assert "  password: '***'" in out
    assert "SMTP_PASSWORD" not in out
    code, out, _ = run(tmp_path, case.replace("NAME", "lenient").replace("EXHAUSTIVE", "exhaustive: false"), capsys)
    assert code == 0, out


def test_a_rule_expected_to_match_shows_the_condition_that_failed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = (
        "  - name: a running run is not a failure\n"
        "    events:\n"
        "      - event: {id: r1, data: {runId: r1, runStatus: Running}}\n"
        "    expect:\n"
        "      - {event: r1, rule: mail-on-failure}\n"
        "      - {event: r1, rule: stuck, matched: false}\n"
    )
    code, out, _ = run(tmp_path, cases, capsys)
    assert code == 1
    expected_to_match = re.search(r":9: event r1, rule mail-on-failure: expected to match, but it does not: (.*)", out)
    assert expected_to_match is not None
    assert "StringIn data.runStatus" in expected_to_match.group(1)
    assert "'Running'" in expected_to_match.group(1)
    assert ":10: event r1, rule stuck: expected not to match, but it matches" in out


def test_no_actions_planned_says_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An event older than the rule's max_age, and one sent twice, plan nothing: the failure says so."""
    cases = (
        "  - name: too old, then twice\n"
        "    exhaustive: false\n"
        "    events:\n"
        "      - event: {id: old, eventTime: '2026-11-02T07:00:00Z', data: {runId: r0, runStatus: Failed, team: a}}\n"
        + failed("f1", "r1", after="1s")
        + failed("f1", "r1", after="1s")
        + "    expect:\n"
        "      - {event: old, rule: mail-on-failure, actions: [{type: email}]}\n"
        "      - {event: f1, rule: mail-on-failure, actions: [{type: email, subject: Run r1 failed}]}\n"
    )
    code, out, _ = run(tmp_path, cases, capsys)
    assert code == 1
    assert (
        "event old, rule mail-on-failure: no actions were planned (too old for rule mail-on-failure's max_age)" in out
    )
    assert "-- type: email" in out  # the diff: expected one action, none planned
    assert "event f1" not in out  # the first f1 was mailed; its copy was skipped as a duplicate


# --- rules that remember --------------------------------------------------------------------------


def test_an_expiry_fires_when_its_time_comes_and_not_before(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    running = "      - event: {id: s1, data: {runId: r1, runStatus: Running}}\n"
    cases = (
        "  - name: not yet\n    events:\n" + running + "      - advance: 59m\n"
        "    expect: [{event: s1, rule: stuck}]\n"
        "    pending: [{rule: stuck, kind: expect, key: r1}]\n"
        "  - name: expired\n    events:\n" + running + "      - advance: 1h\n"
        "    expect:\n"
        "      - {event: s1, rule: stuck}\n"
        "      - expiry: {rule: stuck, key: r1, event: s1}\n"
        "        actions: [{type: webhook, body: {text: 'r1 stuck since 2026-11-02T09:00:01+00:00'}}]\n"
        "    pending: []\n"
        "  - name: fulfilled\n    events:\n" + running + "      - {event: {id: c1, eventType: "
        "Microsoft.MachineLearningServices.RunCompleted, data: {runId: r1}}, after: 30m}\n"
        "      - advance: 1h\n"
        "    expect: [{event: s1, rule: stuck}]\n"
        "    pending: []\n"
        "  - name: expected too soon\n    events:\n" + running + "      - advance: 59m\n"
        "    expect:\n"
        "      - {event: s1, rule: stuck}\n"
        "      - expiry: {rule: stuck, key: r1}\n"
    )
    code, out, _ = run(tmp_path, cases, capsys)
    assert code == 1
    verdicts = {
        line[6:].split(": ", 1)[1]: line[:4].strip() for line in out.splitlines() if line[:4] in ("ok  ", "FAIL")
    }
    assert verdicts == {"not yet": "ok", "expired": "ok", "fulfilled": "ok", "expected too soon": "FAIL"}
    assert "expiry of rule stuck, key 'r1': did not fire" in out
    assert "pending: expect of rule stuck, key 'r1'" in out  # what happened instead


def test_group_notifications_are_checked_by_key_events_and_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = (
        "  - name: a digest per team\n"
        "    exhaustive: false\n"
        "    events:\n"
        + failed("a1", "r1", team="a")
        + failed("b1", "r2", team="b")
        + failed("a2", "r3", team="a")
        + "      - advance: 4m58s\n"  # at 09:05:01, when team a's digest is due, a second before team b's
        "    expect:\n"
        "      - group: {rule: digest, key: a, events: [a1, a2], count: 2}\n"
        "        actions: [{type: webhook, body: {text: 2 failures of a}}]\n"
        "      - group: {rule: digest, key: b, count: 2}\n"
        "    pending: [{rule: digest, kind: group, key: b}]\n"  # holds
    )
    code, out, _ = run(tmp_path, cases, capsys)
    assert code == 1
    test = tmp_path / "rules.test.yaml"
    assert out.splitlines() == [
        f"FAIL  {test}:5: a digest per team",
        f"      {test}:15: group notification of rule digest, key 'b', count 2: did not fire",
        "          pending: group of rule digest, key 'b'",  # one failure of team b, and not due yet
        "1 case: 0 ok, 1 failed",
    ]


# --- invalid test files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cases", "problem"),
    [
        pytest.param(
            "  - name: x\n    events: [{event: {id: f1, data: {}}, afterr: 2s}]\n",
            ":6: unknown field 'afterr' of a step (did you mean 'after'?)",
            id="unknown-field",
        ),
        pytest.param(
            "  - name: x\n    events: [{advance: soon}]\n",
            ":6: 'advance' must be a duration such as 90s, 30m, 6h or 2d, got 'soon'",
            id="duration",
        ),
        pytest.param(
            "  - name: x\n    events: [{event: {id: f1, data: {}}, at: '2026-11-02T08:00:00Z'}]\n",
            ":6: 'at' goes back in time: the previous step is at 2026-11-02T09:00:00Z",
            id="time-back",
        ),
        pytest.param(
            "  - name: x\n    events: [{event: {data: {}}}]\n",
            ":6: not an event the worker reads (missing_field): event #0 has no 'id'",
            id="not-an-event",
        ),
        pytest.param(
            "  - name: x\n    events: [{file: absent.json}]\n",
            ":6: cannot read the body file",
            id="body-file",
        ),
        pytest.param(
            "  - name: x\n    events: [{event: {id: f1, data: {}}}]\n    expect: [{event: f2, rule: stuck}]\n",
            ":7: no step of the case sends an event with the id 'f2'",
            id="unknown-event",
        ),
        pytest.param(
            "  - name: x\n    events: [{event: {id: f1, data: {}}}]\n    expect: [{event: f1, rule: stuk}]\n",
            ":7: case 'x': no rule 'stuk' in the rules tested (did you mean 'stuck'?)",
            id="unknown-rule",
        ),
        pytest.param(
            "  - name: x\n    events: [{event: {id: f1, data: {}}}]\n    expect: [{expiry: {rule: digest}}]\n",
            ":7: case 'x': rule 'digest' has no 'expect': nothing of it expires or is pending",
            id="rule-of-another-kind",
        ),
        pytest.param(
            "  - name: x\n    events: [{event: {id: f1, data: {}}}]\n  - name: x\n    events: [{advance: 1s}]\n",
            ":7: duplicate case name 'x'; first at ",
            id="duplicate-case",
        ),
        pytest.param("  - name: x\n    events: [{event: {id: f1\n", ":7: not valid YAML", id="yaml"),
    ],
)
def test_an_invalid_test_file_is_refused_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cases: str, problem: str
) -> None:
    code, out, err = run(tmp_path, cases, capsys)
    assert code == 2
    assert f"error: {tmp_path / 'rules.test.yaml'}{problem}" in err
    assert out.splitlines()[-1] == "0 cases: 0 ok, 0 failed; 1 invalid file"


def test_invalid_rules_are_refused_with_their_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(tmp_path, "  - name: x\n    events: [{advance: 1s}]\n", capsys, rules="rules:\n  - name: a\n")
    assert code == 2
    assert f"error: {tmp_path / 'rules.yaml'}:2:5: rule 'a': 'actions' must be a non-empty list of actions" in err


def test_an_invalid_file_among_others_does_not_stop_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.test.yaml"
    bad.write_text("rules: [nowhere.yaml]\ncases: []\n")
    assert main(["test", str(bad), str(SHIPPED[0])]) == 2
    captured = capsys.readouterr()
    assert f"error: {bad}:2: 'cases' must be a non-empty list of cases" in captured.err
    assert captured.out.splitlines()[-1] == "2 cases: 2 ok, 0 failed; 1 invalid file"
