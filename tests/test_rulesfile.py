"""Loading rules tables: the shipped examples, valid tables, every kind of invalid table with the
file, line and rule of each problem, and the loader's warnings."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from worker.actions.file import FileParams
from worker.actions.log import LogParams
from worker.core.decoding import decode_body
from worker.core.rules import Outcome
from worker.errors import Problem, RulesError
from worker.events import Event
from worker.rulefiles.directories import paths_of
from worker.rulefiles.loading import load_rules

RULES_DIR = Path(__file__).parents[1] / "rules"
WS = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/ml-rg"
    "/providers/Microsoft.MachineLearningServices/workspaces/ml-prod"
)
ML = "Microsoft.MachineLearningServices."

KNOWN_TYPES = ", ".join(
    [
        "azure_devops_pipeline",
        "azureml_batch_endpoint",
        "azureml_deploy",
        "azureml_job",
        "azureml_pipeline",
        "datafactory_pipeline",
        "email",
        "eventhub",
        "file",
        "github_workflow",
        "log",
        "slack",
        "teams",
        "webhook",
    ]
)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(paths: list[Path]) -> tuple[Problem, ...]:
    with pytest.raises(RulesError) as caught:
        load_rules(paths)
    problems = caught.value.problems
    assert problems
    # The exception's text lists every problem.
    for problem in problems:
        assert str(problem) in str(caught.value)
    return problems


def event(
    event_type: str = "RunStatusChanged",
    subject: str = "experiments/e1/runs/r1",
    data: object = None,
    topic: str = WS,
    event_id: str = "ev-1",
) -> Event:
    envelope = {
        "id": event_id,
        "topic": topic,
        "subject": subject,
        "eventType": ML + event_type,
        "eventTime": "2026-11-01T09:00:00Z",
        "data": data if data is not None else {},
        "dataVersion": "2",
    }
    (decoded,) = decode_body(json.dumps([envelope]))
    assert isinstance(decoded, Event)
    return decoded


def matched(table, item: Event) -> list[str]:
    return [rule.name for rule in table.evaluate(item).rules]


# --- the shipped rules ----------------------------------------------------------------------------


def test_shipped_rules_load():
    examples = RULES_DIR / "examples.yaml"
    paths = [examples] if examples.is_file() else sorted(RULES_DIR.glob("*.yaml"))
    if not paths:
        pytest.skip(f"no rules files in {RULES_DIR}")
    table = load_rules(paths)
    assert table.rules
    assert table.warnings == ()
    names = [rule.name for rule in table.rules]
    assert len(names) == len(set(names))
    for rule in table.rules:
        assert rule.actions
        assert rule.source.split(":")[0] in {str(p) for p in paths}
        assert int(rule.source.rsplit(":", 1)[1]) >= 1


def test_every_shipped_rules_file_loads_alone_and_together():
    paths = paths_of([RULES_DIR])
    if not paths:
        pytest.skip(f"no rules files in {RULES_DIR}")
    together = load_rules(paths)
    assert len(together.rules) == sum(len(load_rules([path]).rules) for path in paths)


def test_example_rules_act_on_ml_events():
    examples = RULES_DIR / "examples.yaml"
    if not examples.is_file():
        pytest.skip(f"{examples} does not exist")
    table = load_rules([examples])
    assert table.topics == {WS.casefold()}
    # The workspace allow-list: the same event from another workspace is never acted on.
    failed = event("RunStatusChanged", data={"runStatus": "Failed"})
    assert matched(table, failed) == ["mail-on-failed-run", "failed-runs-digest"]
    other = event("RunStatusChanged", data={"runStatus": "Failed"}, topic=WS.replace("ml-prod", "ml-sandbox"))
    assert table.evaluate(other).outcome is Outcome.FOREIGN_TOPIC
    assert matched(table, event("RunStatusChanged", data={"runStatus": "Running"})) == ["run-stuck"]
    assert matched(table, event("RunStatusChanged", data={"runStatus": "Canceled"})) == []
    # The rules that remember: a run still running after 6 hours, and a digest of failed runs.
    stuck, digest = table.rule("run-stuck"), table.rule("failed-runs-digest")
    assert stuck is not None
    assert stuck.expect is not None
    assert stuck.expect.within == 6 * 3600
    assert digest is not None
    assert digest.group is not None
    assert (digest.group.wait, digest.group.interval) == (120, 1800)
    assert table.expecting == (stuck,)
    # Data keys written in PascalCase match camelCase payloads.
    drift = event("DatasetDriftDetected", "datadrift/d/run/r", {"driftCoefficient": 0.8350349068479208})
    assert matched(table, drift) == ["refresh-data-on-legacy-drift"]
    assert matched(table, event("DatasetDriftDetected", "datadrift/d/run/r", {"driftCoefficient": 0.49})) == []
    # A model monitor's breach: a failed run whose tag says so, the tag's key written as the docs write it.
    breach = {"runStatus": "Failed", "runTags": {"azureml_modelmonitor_threshold_breached": "Model monitor m "
              "has failed due to one or more features violating metric thresholds"}}  # fmt: skip
    assert matched(table, event("RunStatusChanged", data=breach)) == [
        "mail-on-failed-run",
        "retrain-on-monitor-breach",
        "failed-runs-digest",
    ]
    registered = event("ModelRegistered", "models/churn:3", {"modelTags": {"stage": "production", "deploy": "true"}})
    assert matched(table, registered) == [
        "function-on-model-registered",
        "deploy-by-model-tags",
        "audit-production-changes",
    ]
    audit = next(rule for rule in table.rules if rule.name == "audit-production-changes")
    assert [(spec.type, spec.index) for spec in audit.actions] == [("file", 0), ("eventhub", 1)]
    assert isinstance(audit.actions[0].params, FileParams)
    assert audit.actions[0].params.path == Path("out/production-audit.jsonl")
    automl = event("RunCompleted", data={"runType": "automl"})
    assert matched(table, automl) == []
    assert matched(table, event("RunCompleted", data={"runType": "azureml.scriptrun"})) == [
        "ci-on-completed-training-run"
    ]


# --- valid tables ---------------------------------------------------------------------------------


def test_several_files_are_merged_in_order(tmp_path):
    first = write(
        tmp_path,
        "first.yaml",
        """\
workspaces: [/subscriptions/s/workspaces/A]
rules:
  - name: one
    actions: [{type: log}]
  - name: two
    filter: {includedEventTypes: [Microsoft.MachineLearningServices.ModelRegistered]}
    actions: [{type: log, level: warning, message: hi}]
""",
    )
    second = write(
        tmp_path,
        "second.yaml",
        """\
# a comment first
workspaces:
  - /subscriptions/s/workspaces/B
rules:
  - name: three
    description: writes a file
    actions:
      - type: log
      - type: file
        path: out/x.jsonl
        include_data: true
""",
    )
    table = load_rules([first, second])
    assert [rule.name for rule in table.rules] == ["one", "two", "three"]
    assert [rule.source for rule in table.rules] == [f"{first}:3", f"{first}:5", f"{second}:5"]
    assert table.rules[2].description == "writes a file"
    assert table.topics == {"/subscriptions/s/workspaces/a", "/subscriptions/s/workspaces/b"}
    assert table.warnings == ()
    two = table.rules[1].actions
    assert [(spec.type, spec.index) for spec in two] == [("log", 0)]
    assert two[0].params == LogParams(message="hi", level="warning")
    three = table.rules[2].actions
    assert [(spec.type, spec.index) for spec in three] == [("log", 0), ("file", 1)]
    assert three[1].params == FileParams(path=Path("out/x.jsonl"), include_data=True)


def test_the_workspaces_allow_list(tmp_path):
    path = write(
        tmp_path,
        "ws.yaml",
        f"""\
workspaces:
  - {WS}
rules:
  - name: all
    actions: [{{type: log}}]
""",
    )
    table = load_rules([path])
    assert table.admits_topic(WS)
    assert table.admits_topic(WS.upper())  # resource ids compare ignoring case
    assert not table.admits_topic(WS.replace("ml-prod", "ml-dev"))
    assert not table.admits_topic(None)
    assert matched(table, event()) == ["all"]
    assert table.evaluate(event(topic=WS + "x")).outcome is Outcome.FOREIGN_TOPIC


def test_no_workspaces_admits_every_topic(tmp_path):
    table = load_rules([write(tmp_path, "r.yaml", "rules:\n  - name: all\n    actions: [{type: log}]\n")])
    assert table.topics == frozenset()
    assert table.admits_topic(None)
    assert table.admits_topic("/anything")


def test_disabled_rules_are_left_out(tmp_path):
    path = write(
        tmp_path,
        "r.yaml",
        """\
rules:
  - name: enabled
    enabled: true
    actions: [{type: log}]
  - name: disabled
    enabled: false
    actions: [{type: log}]
  - name: default-on
    actions: [{type: log}]
""",
    )
    table = load_rules([path])
    assert [rule.name for rule in table.rules] == ["enabled", "default-on"]
    assert matched(table, event()) == ["enabled", "default-on"]


def test_a_disabled_rule_is_still_validated(tmp_path):
    path = write(tmp_path, "r.yaml", "rules:\n  - name: disabled\n    enabled: false\n    actions: [{type: nope}]\n")
    (problem,) = problems_of([path])
    assert (problem.file, problem.line, problem.rule) == (str(path), 4, "disabled")
    assert "unknown action type 'nope'" in problem.message


def test_a_disabled_rule_name_still_counts_for_duplicates(tmp_path):
    text = (
        "rules:\n  - name: a\n    enabled: false\n    actions: [{type: log}]\n  - name: a\n    actions: [{type: log}]\n"
    )
    (problem,) = problems_of([write(tmp_path, "r.yaml", text)])
    assert (problem.line, problem.rule) == (5, "a")
    assert "duplicate rule name" in problem.message


def test_anchors_and_aliases(tmp_path):
    path = write(
        tmp_path,
        "r.yaml",
        """\
rules:
  - name: first
    filter: &models
      includedEventTypes: [Microsoft.MachineLearningServices.ModelRegistered]
      subjectBeginsWith: models/
    actions: &log
      - type: log
        message: shared
  - name: second
    filter: *models
    actions: *log
""",
    )
    table = load_rules([path])
    assert [rule.name for rule in table.rules] == ["first", "second"]
    assert table.rules[1].actions == table.rules[0].actions
    assert table.rules[1].actions[0].params == LogParams(message="shared")
    assert matched(table, event("ModelRegistered", "models/churn:1")) == ["first", "second"]
    assert matched(table, event("ModelRegistered", "endpoints/x")) == []


def test_merge_keys_and_overrides(tmp_path):
    path = write(
        tmp_path,
        "r.yaml",
        """\
rules:
  - &base
    name: base
    filter: &registered
      includedEventTypes: [Microsoft.MachineLearningServices.ModelRegistered]
      subjectBeginsWith: models/churn
    actions: [{type: log, message: base}]
  - <<: *base
    name: overridden-name
  - name: overridden-filter
    filter:
      <<: *registered
      subjectBeginsWith: models/fraud
    actions: [{type: log}]
  - name: merged-from-two
    filter:
      <<: [{subjectEndsWith: ":1"}, *registered, {subjectEndsWith: ":2"}]
    actions: [{type: log}]
""",
    )
    table = load_rules([path])
    assert [rule.name for rule in table.rules] == ["base", "overridden-name", "overridden-filter", "merged-from-two"]
    assert table.rules[1].actions == table.rules[0].actions
    assert table.rules[1].source == f"{path}:8"
    assert matched(table, event("ModelRegistered", "models/churn:1")) == ["base", "overridden-name", "merged-from-two"]
    assert matched(table, event("ModelRegistered", "models/churn:2")) == ["base", "overridden-name"]
    assert matched(table, event("ModelRegistered", "models/fraud:1")) == ["overridden-filter"]
    assert matched(table, event("ModelDeployed", "models/churn:1")) == []


def test_yaml_floats_become_exact_decimals(tmp_path):
    path = write(
        tmp_path,
        "r.yaml",
        """\
rules:
  - name: below
    filter:
      advancedFilters:
        - {operatorType: NumberLessThan, key: data.x, value: 0.30000000000000001}
    actions: [{type: log}]
  - name: in
    filter:
      advancedFilters:
        - {operatorType: NumberIn, key: data.x, values: [1.10, 1_000.5]}
    actions: [{type: log}]
""",
    )
    table = load_rules([path])
    below, in_ = table.rules
    # As a binary float the bound would be 0.3, and 0.3 < 0.3 is false.
    assert below.filter.condition.label.endswith("NumberLessThan data.x 0.30000000000000001")
    assert in_.filter.condition.label.endswith("NumberIn data.x [1.10, 1000.5]")
    assert matched(table, event(data={"x": 0.3})) == ["below"]
    assert matched(table, event(data={"x": 0.30000000000000002})) == []
    assert matched(table, event(data={"x": 1.1})) == ["in"]
    assert matched(table, event(data={"x": 1000.5})) == ["in"]
    assert matched(table, event(data={"x": 1000})) == []
    assert Decimal("1.10") == Decimal("1.1")


def test_a_directory_of_rules_files(tmp_path):
    write(tmp_path, "b.yaml", "rules:\n  - name: b\n    actions: [{type: log}]\n")
    write(tmp_path, "a.yml", "rules:\n  - name: a\n    actions: [{type: log}]\n")
    write(tmp_path, "notes.txt", "not rules")
    (tmp_path / "sub").mkdir()
    write(tmp_path, "sub/c.yaml", "rules:\n  - name: c\n    actions: [{type: log}]\n")
    paths = paths_of([tmp_path])
    assert paths == [tmp_path / "a.yml", tmp_path / "b.yaml", tmp_path / "sub" / "c.yaml"]
    assert [rule.name for rule in load_rules(paths).rules] == ["a", "b", "c"]


# --- invalid tables -------------------------------------------------------------------------------

ONE_LOG = "    actions: [{type: log}]\n"
FILTERED = "rules:\n  - name: a\n    filter:\n      advancedFilters:\n        - {}\n" + ONE_LOG


def advanced(item: str) -> str:
    return FILTERED.replace("{}", item)


# Each row: the files (name -> text) and the problems expected, (file, line, rule, message fragment).
INVALID = [
    pytest.param(
        {"r.yaml": "rules:\n  - name: a\n    filter: {x: [1, 2}\n" + ONE_LOG},
        [("r.yaml", 3, None, "not valid YAML: did not find expected ',' or ']'")],
        id="yaml-syntax",
    ),
    pytest.param(
        {"r.yaml": "rules:\n\t- name: a\n"},
        [("r.yaml", 2, None, "not valid YAML: found character that cannot start any token")],
        id="yaml-tab",
    ),
    pytest.param(
        {"r.yaml": "rules: *nowhere\n"},
        [("r.yaml", 1, None, "not valid YAML: found undefined alias")],
        id="undefined-alias",
    ),
    pytest.param(
        {"r.yaml": "rules:\n  - name: a\n" + ONE_LOG + "---\nrules: []\n"},
        [("r.yaml", 4, None, "not valid YAML")],
        id="two-documents",
    ),
    pytest.param({"r.yaml": ""}, [("r.yaml", None, None, "the file is empty")], id="empty-file"),
    pytest.param({"r.yaml": "# only a comment\n"}, [("r.yaml", None, None, "the file is empty")], id="comment-only"),
    pytest.param(
        {"r.yaml": "- name: a\n  actions: [{type: log}]\n"},
        [("r.yaml", 1, None, "the file must be a mapping with 'rules'")],
        id="top-level-list",
    ),
    pytest.param(
        {"r.yaml": "just text\n"},
        [("r.yaml", 1, None, "the file must be a mapping with 'rules'")],
        id="top-level-scalar",
    ),
    pytest.param(
        {"r.yaml": "rules:\n  - name: a\n" + ONE_LOG + "rulez: []\n"},
        [("r.yaml", 4, None, "unknown top-level field 'rulez' (did you mean 'rules'?)")],
        id="unknown-top-level",
    ),
    pytest.param(
        {"r.yaml": "workspaces: [/x]\n"},
        [("r.yaml", 1, None, "'rules' must be a non-empty list of rules")],
        id="rules-missing",
    ),
    pytest.param(
        {"r.yaml": "workspaces: [/x]\nrules: []\n"},
        [("r.yaml", 2, None, "'rules' must be a non-empty list of rules")],
        id="rules-empty",
    ),
    pytest.param(
        {"r.yaml": "rules:\n  name: a\n"},
        [("r.yaml", 2, None, "'rules' must be a non-empty list of rules")],
        id="rules-a-mapping",
    ),
    pytest.param(
        {"r.yaml": "workspaces: /x\nrules:\n  - name: a\n" + ONE_LOG},
        [("r.yaml", 1, None, "'workspaces' must be a list of topics")],
        id="workspaces-not-a-list",
    ),
    pytest.param(
        {"r.yaml": "rules:\n  - name: a\n" + ONE_LOG + "  - log-everything\n"},
        [("r.yaml", 4, None, "each rule must be a mapping with 'name', 'filter' and 'actions'")],
        id="rule-not-a-mapping",
    ),
    pytest.param(
        {"r.yaml": "rules:\n  - description: nameless\n" + ONE_LOG},
        [("r.yaml", 2, None, "every rule needs a 'name' (a non-empty string)")],
        id="missing-name",
    ),
    pytest.param(
        {"r.yaml": "rules:\n  - name: '  '\n" + ONE_LOG},
        [("r.yaml", 2, None, "every rule needs a 'name'")],
        id="blank-name",
    ),
    pytest.param(
        {"r.yaml": "rules:\n  - name: 42\n" + ONE_LOG},
        [("r.yaml", 2, None, "every rule needs a 'name'")],
        id="numeric-name",
    ),
    pytest.param(
        {"r.yaml": "rules:\n  - name: a\n" + ONE_LOG + "  - name: b\n" + ONE_LOG + "  - name: a\n" + ONE_LOG},
        [("r.yaml", 6, "a", "duplicate rule name; first defined at <r.yaml>:2")],
        id="duplicate-rule-name",
    ),
    pytest.param(
        {
            "first.yaml": "rules:\n  - name: shared\n" + ONE_LOG,
            "second.yaml": "rules:\n  - name: other\n" + ONE_LOG + "  - name: shared\n" + ONE_LOG,
        },
        [("second.yaml", 4, "shared", "duplicate rule name; first defined at <first.yaml>:2")],
        id="duplicate-rule-name-across-files",
    ),
    pytest.param(
        {"r.yaml": "rules:\n  - name: a\n    filters: {}\n" + ONE_LOG},
        [("r.yaml", 3, "a", "unknown rule field 'filters' (did you mean 'filter'?)")],
        id="unknown-rule-field",
    ),
    pytest.param(
        {"r.yaml": "rules:\n  - name: a\n    Actions: [{type: log}]\n" + ONE_LOG},
        [("r.yaml", 3, "a", "unknown rule field 'Actions' (did you mean 'actions'? names are case-sensitive)")],
        id="unknown-rule-field-case",
    ),
    pytest.param(
        {"r.yaml": "rules:\n  - name: a\n    enabled: 'no'\n" + ONE_LOG},
        [("r.yaml", 3, "a", "'enabled' must be true or false, got 'no'")],
        id="enabled-a-string",
    ),
    pytest.param(
        {"r.yaml": "rules:\n  - name: a\n    enabled: 1\n" + ONE_LOG},
        [("r.yaml", 3, "a", "'enabled' must be true or false, got 1")],
        id="enabled-a-number",
    ),
    pytest.param(
        {"r.yaml": "rules:\n  - name: a\n    description: [x]\n" + ONE_LOG},
        [("r.yaml", 3, "a", "'description' must be a string")],
        id="description-a-list",
    ),
    pytest.param(
        {"r.yaml": "rules:\n  - name: a\n    filter: [includedEventTypes]\n" + ONE_LOG},
        [("r.yaml", 3, "a", "'filter' must be a mapping (an Event Grid filter object), got a list")],
        id="filter-a-list",
    ),
    pytest.param(
        {"r.yaml": "rules:\n  - name: a\n    filter: everything\n" + ONE_LOG},
        [("r.yaml", 3, "a", "'filter' must be a mapping")],
        id="filter-a-string",
    ),
    pytest.param(
        {"r.yaml": "rules:\n  - name: a\n    filter:\n      subjectBeginWith: models/\n" + ONE_LOG},
        [("r.yaml", 4, "a", "unknown filter field 'subjectBeginWith' (did you mean 'subjectBeginsWith'?)")],
        id="unknown-filter-field",
    ),
    pytest.param(
        {"r.yaml": advanced("{operatorType: StringIm, key: data.x, values: [a]}")},
        [("r.yaml", 5, "a", "unknown operatorType 'StringIm' (did you mean 'StringIn'?)")],
        id="unknown-operator",
    ),
    pytest.param(
        {"r.yaml": advanced("{operatorType: NumberGreaterThan, key: data.x, value: high}")},
        [("r.yaml", 5, "a", "NumberGreaterThan: expected a number, got 'high'")],
        id="number-operator-string-value",
    ),
    pytest.param(
        {"r.yaml": advanced("{operatorType: StringIn, key: data.x, values: [Failed, 5]}")},
        [("r.yaml", 5, "a", "StringIn: expected a string, got 5 (quote it in YAML)")],
        id="string-operator-number-value",
    ),
    pytest.param(
        {"r.yaml": advanced("{operatorType: BoolEquals, key: data.x, value: 'true'}")},
        [("r.yaml", 5, "a", "BoolEquals: expected true or false, got 'true'")],
        id="bool-operator-string-value",
    ),
    pytest.param(
        {"r.yaml": advanced("{operatorType: StringIn, key: data.x, value: Failed}")},
        [("r.yaml", 5, "a", "StringIn takes 'values', not 'value'")],
        id="value-for-values",
    ),
    pytest.param(
        {"r.yaml": "rules:\n  - name: a\n    actions:\n      - type: logg\n"},
        [("r.yaml", 4, "a", f"unknown action type 'logg' (did you mean 'log'?); known: {KNOWN_TYPES}")],
        id="unknown-action-type",
    ),
    pytest.param(
        {"r.yaml": "rules:\n  - name: a\n    actions: [log]\n"},
        [("r.yaml", 3, "a", f"each action must be a mapping with a 'type' (one of: {KNOWN_TYPES})")],
        id="action-not-a-mapping",
    ),
    pytest.param(
        {"r.yaml": "rules:\n  - name: a\n    actions:\n      - type: log\n        mesage: hello\n"},
        [("r.yaml", 5, "a", "action 0 (log): mesage: Extra inputs are not permitted")],
        id="log-extra-field",
    ),
    pytest.param(
        {"r.yaml": "rules:\n  - name: a\n    actions:\n      - type: log\n        level: loud\n"},
        [("r.yaml", 5, "a", "action 0 (log): level: Input should be 'debug', 'info', 'warning' or 'error'")],
        id="log-bad-level",
    ),
    pytest.param(
        {"r.yaml": "rules:\n  - name: a\n    actions:\n      - type: log\n      - {type: file, include_data: true}\n"},
        [("r.yaml", 5, "a", "action 1 (file): path: Field required")],
        id="file-missing-path",
    ),
    pytest.param(
        {"r.yaml": "rules:\n  - name: a\n    actions: []\n"},
        [("r.yaml", 3, "a", "'actions' must be a non-empty list of actions")],
        id="actions-empty",
    ),
    pytest.param(
        {"r.yaml": "rules:\n  - name: a\n    filter: {}\n"},
        [("r.yaml", 2, "a", "'actions' must be a non-empty list of actions")],
        id="actions-missing",
    ),
    pytest.param(
        {"r.yaml": "rules:\n  - name: a\n" + ONE_LOG + "    actions: [{type: file, path: x}]\n"},
        [("r.yaml", 4, None, "duplicate key 'actions'")],
        id="duplicate-yaml-key",
    ),
    pytest.param(
        {
            "r.yaml": "rules:\n  - name: a\n    filter:\n      subjectBeginsWith: a\n      subjectBeginsWith: b\n"
            + ONE_LOG
        },
        [("r.yaml", 5, None, "duplicate key 'subjectBeginsWith'")],
        id="duplicate-yaml-key-in-filter",
    ),
    pytest.param(
        {"r.yaml": "rules:\n  - name: a\n    <<: 5\n" + ONE_LOG},
        [("r.yaml", 3, None, "'<<' (a merge key) takes a mapping or a list of mappings")],
        id="merge-key-on-a-scalar",
    ),
    pytest.param(
        {"r.yaml": "rules:\n  - name: !secret a\n" + ONE_LOG},
        [("r.yaml", 2, None, "cannot read the value 'a': could not determine a constructor for the tag '!secret'")],
        id="unknown-tag",
    ),
    pytest.param(
        {"r.yaml": "rules:\n  - name: a\n    enabled: !!int abc\n" + ONE_LOG},
        [
            ("r.yaml", 3, None, "cannot read the value 'abc': invalid literal for int()"),
            ("r.yaml", 3, "a", "'enabled' must be true or false, got 'abc'"),
        ],
        id="bad-explicit-int",
    ),
    pytest.param(
        {"r.yaml": "rules:\n  - name: !!timestamp 2026-13-45\n" + ONE_LOG},
        [("r.yaml", 2, None, "cannot read the value '2026-13-45': month must be in 1..12")],
        id="bad-timestamp",
    ),
    pytest.param(
        {"r.yaml": "rules: &loop\n  - name: a\n    filter: {all: *loop}\n" + ONE_LOG},
        [("r.yaml", None, None, "an alias refers to a node that contains it")],
        id="recursive-alias",
    ),
    pytest.param(
        {"r.yaml": "rules:\n  - name: a\n    filter: {not: " + "{not: " * 600 + "{}" + "}" * 601 + "\n" + ONE_LOG},
        [("r.yaml", None, None, "nests too deeply")],
        id="nested-too-deeply",
    ),
]


@pytest.mark.parametrize(("files", "expected"), INVALID)
def test_invalid_tables(tmp_path, files, expected):
    paths = [write(tmp_path, name, text) for name, text in files.items()]
    problems = problems_of(paths)
    names = {name: str(tmp_path / name) for name in files}
    wanted = []
    for name, line, rule, template in expected:
        fragment = template
        for other, path in names.items():
            fragment = fragment.replace(f"<{other}>", path)
        wanted.append((names[name], line, rule, fragment))
    found = [(p.file, p.line, p.rule, p.message) for p in problems]
    assert len(found) == len(wanted), found
    for (file, line, rule, message), (want_file, want_line, want_rule, fragment) in zip(found, wanted, strict=True):
        assert (file, line, rule) == (want_file, want_line, want_rule), found
        assert fragment in message, found


def test_a_missing_file(tmp_path):
    missing = tmp_path / "missing.yaml"
    (problem,) = problems_of([missing])
    assert (problem.file, problem.line, problem.rule) == (str(missing), None, None)
    assert "cannot read the rules file" in problem.message


def test_a_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"rules:\n  - name: caf\xe9\n    actions: [{type: log}]\n")
    (problem,) = problems_of([path])
    assert problem.file == str(path)
    assert "cannot read the rules file" in problem.message
    assert "utf-8" in problem.message


def test_no_files():
    with pytest.raises(RulesError) as caught:
        load_rules([])
    assert [p.message for p in caught.value.problems] == ["no rules file given"]


def test_every_problem_is_reported_not_only_the_first(tmp_path):
    first = write(
        tmp_path,
        "first.yaml",
        """\
rules:
  - name: good
    actions: [{type: log}]
  - name: bad-action
    actions: [{type: mail}]
  - name: bad-filter
    filter:
      includedEventTypes: [Microsoft.MachineLearningServices.RunCompleted]
      advancedFilters:
        - {operatorType: NumberIn, key: data.x, values: [one]}
        - {operatorType: StringContain, key: data.y, values: [a]}
    enabled: maybe
    actions: [{type: log}]
""",
    )
    second = write(tmp_path, "second.yaml", "rules:\n  - name: good\n" + ONE_LOG + "extra: 1\n")
    problems = problems_of([first, second])
    assert [(Path(p.file).name, p.line, p.rule) for p in problems] == [
        ("first.yaml", 5, "bad-action"),
        ("first.yaml", 12, "bad-filter"),
        ("first.yaml", 10, "bad-filter"),
        ("first.yaml", 11, "bad-filter"),
        ("second.yaml", 4, None),
        ("second.yaml", 2, "good"),
    ]
    messages = [p.message for p in problems]
    assert "unknown action type 'mail'" in messages[0]
    assert "'enabled' must be true or false, got 'maybe'" in messages[1]
    assert "NumberIn: expected a number, got 'one'" in messages[2]
    assert "unknown operatorType 'StringContain' (did you mean 'StringContains'?)" in messages[3]
    assert "unknown top-level field 'extra'" in messages[4]
    assert f"duplicate rule name; first defined at {first}:2" in messages[5]


def test_a_table_with_problems_is_never_returned(tmp_path):
    good = write(tmp_path, "good.yaml", "rules:\n  - name: fine\n" + ONE_LOG)
    half = write(tmp_path, "half.yaml", "rules:\n  - name: also-fine\n" + ONE_LOG + "  - name: broken\n")
    assert [rule.name for rule in load_rules([good]).rules] == ["fine"]
    for paths in ([half], [good, half], [half, good]):
        problems = problems_of(paths)
        assert [(Path(p.file).name, p.line, p.rule) for p in problems] == [("half.yaml", 4, "broken")]


def test_problem_text_names_file_line_and_rule(tmp_path):
    path = write(tmp_path, "r.yaml", "rules:\n  - name: a\n    actions: [{type: logg}]\n")
    (problem,) = problems_of([path])
    assert str(problem) == f"{path}:3:22: rule 'a': {problem.message}"
    with pytest.raises(RulesError, match=r"invalid rules table \(1 problem\):"):
        load_rules([path])


# --- warnings -------------------------------------------------------------------------------------


def test_a_type_azure_ml_never_publishes_loads_with_a_warning(tmp_path):
    path = write(
        tmp_path,
        "r.yaml",
        """\
rules:
  - name: fine
    filter: {includedEventTypes: [Microsoft.MachineLearningServices.RunCompleted]}
    actions: [{type: log}]
  - name: on-failure
    filter:
      includedEventTypes:
        - Microsoft.MachineLearningServices.RunStatusChanged
        - Microsoft.MachineLearningServices.RunFailed
    actions: [{type: log}]
""",
    )
    table = load_rules([path])
    assert [rule.name for rule in table.rules] == ["fine", "on-failure"]
    (warning,) = table.warnings
    assert "'Microsoft.MachineLearningServices.RunFailed' is not an Azure ML event type" in warning
    assert "rule 'on-failure'" in warning
    assert warning.startswith(f"{path}:9:")
    assert "Microsoft.MachineLearningServices.RunStatusChanged" in warning.split("known:")[1]
    # The rule still matches the real type it names.
    assert matched(table, event("RunStatusChanged")) == ["on-failure"]


def test_known_types_in_any_case_and_other_providers_do_not_warn(tmp_path):
    path = write(
        tmp_path,
        "r.yaml",
        """\
rules:
  - name: lower-case
    filter: {includedEventTypes: [microsoft.machinelearningservices.runcompleted]}
    actions: [{type: log}]
  - name: storage
    filter: {includedEventTypes: [Microsoft.Storage.BlobCreated]}
    actions: [{type: log}]
  - name: all
    filter: {includedEventTypes: [All]}
    actions: [{type: log}]
""",
    )
    table = load_rules([path])
    assert table.warnings == ()
    assert matched(table, event("RunCompleted")) == ["lower-case", "all"]
