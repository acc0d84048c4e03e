"""Templates and secrets in action parameters: checked when the rules load, sandboxed when they run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import make_event
from worker.actions import ActionSpec, PlannedAction, action_types
from worker.actions.secrets import Secret
from worker.actions.templates import HtmlTemplate, JsonTemplate, Template, context_of, event_context, path_value
from worker.cli import main
from worker.errors import RenderError, RulesError
from worker.keys import MISSING
from worker.masking import MASKER
from worker.rulefiles.loading import load_rules

RULE = """\
rules:
  - name: r
    filter: {includedEventTypes: [Microsoft.MachineLearningServices.ModelRegistered]}
    actions:
"""


def load_action(tmp_path: Path, action: str, env: dict[str, str] | None = None):
    path = tmp_path / "rules.yaml"
    path.write_text(RULE + action, encoding="utf-8")
    return load_rules([path], env=env or {})


def problems_of(tmp_path: Path, action: str, env: dict[str, str] | None = None) -> list[tuple[int | None, str]]:
    with pytest.raises(RulesError) as caught:
        load_action(tmp_path, action, env)
    return [(p.line, p.message) for p in caught.value.problems]


def context(data: object = None) -> dict[str, object]:
    spec = ActionSpec("log", 2, action_types()["log"].params())
    return context_of(PlannedAction("rule-r", spec, make_event(data=data)))


# --- at load time ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("'{{ dta.modelName }}'", "unknown name 'dta' (did you mean 'data'?)"),
        ("'{{ data.modelName '", "syntax error"),
        ("'{% include \"/etc/passwd\" %}'", "'include' is not available"),
        ("'{% import \"x\" as y %}{{ y }}'", "'import' is not available"),
        ("{nested: ['{{ os.system }}']}", "unknown name 'os'"),
        # Jinja's own globals and specials: templates see the documented context only.
        ("'{{ lipsum }}'", "unknown name 'lipsum'"),
        ("'{{ cycler }}'", "unknown name 'cycler'"),
        ("'{{ joiner }}'", "unknown name 'joiner'"),
        ("'{{ namespace }}'", "unknown name 'namespace'"),
        ("'{{ range(3) }}'", "unknown name 'range'"),
        ("'{{ dict(a=1) }}'", "unknown name 'dict'"),
        ("'{{ self }}'", "unknown name 'self'"),
        ("'{% for i in range(2) %}{{ i }}{% endfor %}'", "unknown name 'range'"),
        # Filters and tests: the documented ones only.
        ("'{{ data | random }}'", "unknown filter 'random'"),
        ("'{{ data | attr(\"x\") }}'", "unknown filter 'attr'"),
        ("'{{ data | map(\"upper\") }}'", "unknown filter 'map'"),
        ("'{{ data | pprint }}'", "unknown filter 'pprint'"),
        ("'{{ data is callable }}'", "unknown test 'callable'"),
        ("'{{ data | defualt(1) }}'", "unknown filter 'defualt' (did you mean 'default'?)"),
    ],
)
def test_a_template_that_cannot_work_is_a_problem_of_the_rules_file(tmp_path: Path, body: str, fragment: str):
    action = f"      - type: webhook\n        url: https://example.com/h\n        body: {body}\n"
    ((line, message),) = problems_of(tmp_path, action)
    assert line == 7
    assert "action 0 (webhook): body:" in message
    assert fragment in message


@pytest.mark.parametrize("expression", ["lipsum", "cycler", "range(3)", "joiner()", "namespace()", "self"])
def test_validate_refuses_jinjas_own_names_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], expression: str
):
    path = tmp_path / "rules.yaml"
    path.write_text(
        RULE + f"      - type: webhook\n        url: https://example.com/h\n        body: '{{{{ {expression} }}}}'\n"
    )
    assert main(["validate", str(path)]) == 2
    error = capsys.readouterr().err
    assert f"{path}:7:" in error
    assert f"unknown name {expression.partition('(')[0]!r}" in error


def test_a_url_whose_host_is_a_template_is_refused(tmp_path: Path):
    ((_, message),) = problems_of(tmp_path, "      - type: webhook\n        url: 'https://{{ data.host }}/h'\n")
    assert "the scheme and host of a URL are fixed" in message


def test_secrets_come_from_the_environment_at_load(tmp_path: Path):
    action = "      - type: github_workflow\n        owner: o\n        repo: r\n        workflow: w.yml\n"
    table = load_action(tmp_path, action + "        token: ${env:GH_TOKEN}\n", {"GH_TOKEN": "tok-123"})
    params = table.rules[0].actions[0].params
    assert params.token == Secret("GH_TOKEN", "tok-123")
    assert "tok-123" not in repr(params)
    assert str(params.token) == "${env:GH_TOKEN}"
    assert MASKER.mask("a tok-123 b") == "a *** b"  # from now on, everywhere


@pytest.mark.parametrize(
    ("token", "env", "fragment"),
    [
        ("${env:GH_TOKEN}", {}, "the environment variable GH_TOKEN is not set"),
        ("${env:GH_TOKEN}", {"GH_TOKEN": ""}, "the environment variable GH_TOKEN is not set (or is empty)"),
        ("ghp_literal_value", {}, "never write the value in a rules file"),
        ("prefix-${env:GH_TOKEN}", {"GH_TOKEN": "x"}, "a secret is given as a reference"),
    ],
)
def test_a_secret_missing_or_written_out_is_a_problem(tmp_path: Path, token: str, env: dict[str, str], fragment: str):
    action = "      - type: github_workflow\n        owner: o\n        repo: r\n        workflow: w.yml\n"
    action += f"        token: '{token}'\n"
    ((line, message),) = problems_of(tmp_path, action, env)
    assert line == 9
    assert message.startswith("action 0 (github_workflow): token: ")
    assert fragment in message
    assert "Value error" not in message


def test_every_missing_secret_is_listed(tmp_path: Path):
    action = """\
      - type: email
        host: smtp.example.com
        password: ${env:SMTP_PASSWORD}
        sender: a@example.com
        to: [b@example.com]
        subject: s
        text: t
      - type: eventhub
        eventhub: hub
        connection_string: ${env:HUB}
"""
    problems = problems_of(tmp_path, action)
    assert [line for line, _ in problems] == [7, 14]
    assert "SMTP_PASSWORD" in problems[0][1]
    assert "HUB" in problems[1][1]


def test_retry_and_timeout_are_checked(tmp_path: Path):
    action = "      - type: log\n        timeout: 0\n        retry: {attempts: 0, delay: 1}\n"
    messages = [message for _, message in problems_of(tmp_path, action)]
    assert any("timeout" in m and "greater than 0" in m for m in messages)
    assert any("retry.attempts" in m for m in messages)
    assert any("retry.delay" in m and "Extra inputs" in m for m in messages)


def test_the_example_rules_need_their_secrets(tmp_path: Path):
    root = Path(__file__).parents[1]
    with pytest.raises(RulesError) as caught:
        load_rules([root / "rules" / "examples.yaml"], env={})
    names = sorted(p.message.split("environment variable ")[1].split()[0] for p in caught.value.problems)
    # One problem per action that names it: three mails need the SMTP password.
    assert names == ["AUDIT_EVENTHUB_CONNECTION_STRING", "GITHUB_TOKEN", "MODEL_FUNCTION_KEY", *["SMTP_PASSWORD"] * 3]


# --- rendering ------------------------------------------------------------------------------------


def test_templates_see_the_event_and_the_rule():
    rendered = Template.compile(
        "{{ rule }}#{{ action_index }} {{ type }} {{ subject }} {{ id }} {{ time }} {{ data_version }} "
        "{{ event.eventType }} {{ idempotency_key | length }}"
    ).render(context())
    assert rendered == (
        "rule-r#2 Microsoft.MachineLearningServices.ModelRegistered models/churn:3 ev-1 "
        "2026-11-01T09:00:00.123456+00:00 2 Microsoft.MachineLearningServices.ModelRegistered 32"
    )


def test_data_members_are_found_ignoring_case_as_filter_keys_are():
    data = {"modelName": "churn", "ModelTags": {"Stage": "production"}, "items": [1, 2]}
    assert Template.compile("{{ data.ModelName }}/{{ data.modelTags.stage }}").render(context(data=data)) == (
        "churn/production"
    )
    # A JSON member named like a dict method is the member, not the method.
    assert Template.compile("{{ data.items | length }}").render(context(data=data)) == "2"


def test_a_missing_member_fails_the_action_unless_the_template_says_what_to_do():
    with pytest.raises(RenderError, match="runId"):
        Template.compile("run {{ data.runId }}").render(context())
    assert Template.compile("run {{ data.runId | default('?') }}").render(context()) == "run ?"
    assert Template.compile("{% if data.runId is defined %}x{% else %}none{% endif %}").render(context()) == "none"


@pytest.mark.parametrize(
    ("source", "rendered"),
    [
        ("{{ data.modelName | upper }}-{{ data.modelName | length }}", "CHURN-5"),
        ("{{ subject | replace('models/', '') | title }}", "Churn:3"),
        ("{{ data.modelTags | tojson }}", '{"stage": "production"}'),
        ("{{ [data.modelName, id] | join('/') }}", "churn/ev-1"),
        ("{% if data.modelTags is mapping and data.missing is undefined %}yes{% endif %}", "yes"),
        ("{{ (action_index * 1.5) | round | int }}", "3"),
    ],
)
def test_the_documented_filters_and_tests_render(source: str, rendered: str):
    assert Template.compile(source).render(context()) == rendered


def test_the_sandbox_keeps_templates_away_from_python_internals():
    for source in ("{{ rule.__class__.__mro__ }}", "{{ data.__init__.__globals__ }}", "{{ (1).__class__ }}"):
        with pytest.raises(RenderError):
            Template.compile(source).render(context())


def test_html_templates_escape_values():
    rendered = HtmlTemplate.compile("<b>{{ data.name }}</b>").render(context(data={"name": "<script>x</script>"}))
    assert rendered == "<b>&lt;script&gt;x&lt;/script&gt;</b>"
    assert Template.compile("{{ data.name }}").render(context(data={"name": "<i>"})) == "<i>"


def test_json_templates_keep_json_types():
    data = {"modelName": "churn", "modelVersion": 3, "drift": 0.75, "ok": True, "tags": {"a": "b"}, "none": None}
    template = JsonTemplate.compile(
        {
            "version": "{{ data.modelVersion }}",
            "drift": "{{ data.drift }}",
            "ok": "{{ data.ok }}",
            "tags": "{{ data.tags }}",
            "none": "{{ data.none }}",
            "text": "v{{ data.modelVersion }}",
            "literal": [1, 2.5, None, False],
            "sum": "{{ data.modelVersion + 1 }}",
        }
    )
    assert template.render(context(data=data)) == {
        "version": 3,
        "drift": 0.75,
        "ok": True,
        "tags": {"a": "b"},
        "none": None,
        "text": "v3",
        "literal": [1, 2.5, None, False],
        "sum": 4,
    }
    with pytest.raises(RenderError, match="missing"):
        JsonTemplate.compile({"x": "{{ data.missing }}"}).render(context(data=data))


@pytest.mark.parametrize("source", ["{{ data.modelVersion-}}", "{{- data.modelVersion }}", "{{+data.modelVersion -}}"])
def test_whitespace_control_is_not_part_of_a_json_templates_expression(source: str):
    # Jinja reads {{- / {{+ / -}} as whitespace control; the expression between them keeps its type
    assert JsonTemplate.compile({"v": source}).render(context(data={"modelVersion": 3})) == {"v": 3}
    assert JsonTemplate.compile({"v": "{{ 5 - 2 }}"}).render(context()) == {"v": 3}


def test_a_one_name_read_of_an_event_is_what_its_context_holds() -> None:
    """``path_value`` (the keys of rules that remember) and ``event_context`` (every rendered action)
    are written apart, for speed: they must say the same."""
    for event in (make_event("ev-1", data={"modelName": "churn"}), make_event("ev-2")._replace(time=None)):
        context = event_context(event)
        assert {name: path_value(event, (name,)) for name in context} == context
    assert path_value(make_event("ev-3"), ("rule",)) is MISSING  # an action's name, not the event's
