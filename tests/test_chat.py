"""Teams and Slack notifications, pure: what each Azure ML event's default says, the studio links, a
group's digest and an expiry, the Adaptive Card and the Block Kit message, and their limits."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from scripts.chat_examples import examples
from tests.pages import external_references
from tests.support import TOPIC, decode_one
from worker.actions import ActionSpec, PlannedAction, action_types
from worker.actions.chat import blocks, cards
from worker.actions.chat.html import mrkdwn
from worker.actions.chat.notice import Fact, Item, Notice, Tone, event_notice, notice
from worker.actions.chat.studio import studio_link
from worker.actions.preview import render_params
from worker.core.accounting import Tally
from worker.core.memos import Expiry, Notification
from worker.errors import OverLimit, RulesError
from worker.masking import MASK
from worker.replay.backtest import Backtest
from worker.replay.backtest_page import render_html
from worker.rulefiles.loading import load_rules
from worker.sending import mlevents
from worker.settings import AzureSettings

STUDIO = "https://ml.azure.com"
PREFIX = "Microsoft.MachineLearningServices."
WSID = "?wsid=/subscriptions/s/resourcegroups/rg/workspaces/ml-prod"


def envelope(kind: str, subject: str, data: dict[str, object], event_id: str = "e-1") -> dict[str, object]:
    return {
        "id": event_id,
        "topic": TOPIC,
        "subject": subject,
        "eventType": PREFIX + kind,
        "eventTime": "2026-12-07T14:03:12.5Z",
        "data": data,
        "dataVersion": "2",
    }


FAILED_RUN = envelope(
    "RunStatusChanged",
    "experiments/0fa9/runs/fraud_detection_9011",
    {
        "experimentId": "0fa9",
        "experimentName": "fraud-detection",
        "runId": "fraud_detection_9011",
        "runType": "azureml.scriptrun",
        "runStatus": "Failed",
        "runTags": {"team": "risk"},
    },
)


@pytest.mark.parametrize(
    ("kind", "subject", "data", "title", "tone", "facts", "link"),
    [
        (
            "RunStatusChanged",
            FAILED_RUN["subject"],
            FAILED_RUN["data"],
            "Run fraud_detection_9011 failed",
            Tone.ATTENTION,
            {"Experiment": "fraud-detection", "Status": "Failed", "Tags": "team=risk"},
            f"{STUDIO}/runs/fraud_detection_9011{WSID}",
        ),
        (
            "RunStatusChanged",
            "experiments/0fa9/runs/r_2",
            {"runId": "r_2", "runStatus": "Canceled"},
            "Run r_2 was canceled",
            Tone.WARNING,
            {"Run": "r_2"},
            f"{STUDIO}/runs/r_2{WSID}",
        ),
        (
            "RunCompleted",
            "experiments/0fa9/runs/churn_1",
            {"RunId": "churn_1", "ExperimentName": "churn-training"},  # the docs' own case
            "Run churn_1 completed",
            Tone.GOOD,
            {"Experiment": "churn-training", "Status": "Completed"},
            f"{STUDIO}/runs/churn_1{WSID}",
        ),
        (
            "RunStatusChanged",
            "experiments/0fa9/runs/monitor_run_7",
            {
                "runId": "monitor_run_7",
                "runStatus": "Failed",
                "runTags": {
                    "azureml_modelmonitor_threshold_breached": "has failed due to one or more features violating",
                    "azureml_modelmonitor_name": "fraud-scorer-monitor",
                },
            },
            "Monitor fraud-scorer-monitor breached its threshold",
            Tone.ATTENTION,
            {"Monitor": "fraud-scorer-monitor", "Signal": "has failed due to one or more features violating"},
            f"{STUDIO}/runs/monitor_run_7{WSID}",
        ),
        (
            "ModelRegistered",
            "models/churn-model:3",
            {"modelName": "churn-model", "modelVersion": "3", "modelTags": {"stage": "production"}},
            "Model churn-model version 3 registered",
            Tone.GOOD,
            {"Model": "churn-model", "Version": "3", "Tags": "stage=production"},
            f"{STUDIO}/model/churn-model:3/details{WSID}",
        ),
        (
            "ModelDeployed",
            "endpoints/churn-ep",
            {"serviceName": "churn-ep", "serviceComputeType": "AKS", "modelIds": "churn-model:3"},
            "churn-model:3 deployed to churn-ep",
            Tone.GOOD,
            {"Endpoint": "churn-ep", "Compute": "AKS", "Models": "churn-model:3"},
            f"{STUDIO}/endpoints/realtime/churn-ep/detail{WSID}",
        ),
        (
            "DatasetDriftDetected",
            "datadrift/d1/run/d1_123",
            {
                "dataDriftName": "sales-monitor",
                "driftCoefficient": 0.83,
                "startTime": "2026-10-31T00:00:00+00:00",
                "endTime": "2026-11-01T00:00:00+00:00",
            },
            "Data drift detected by sales-monitor",
            Tone.WARNING,
            {"Drift coefficient": "0.83", "Window": "2026-10-31 00:00:00 UTC to 2026-11-01 00:00:00 UTC"},
            f"{STUDIO}/runs/d1_123{WSID}",
        ),
        (
            "SomethingNew",
            "widgets/7",
            {},
            "SomethingNew: widgets/7",
            Tone.ACCENT,
            {"Subject": "widgets/7"},
            f"{STUDIO}/home{WSID}",
        ),
    ],
    ids=["failed", "canceled", "completed", "monitor-breach", "registered", "deployed", "drift", "unknown-type"],
)
def test_every_event_type_has_a_default_that_says_what_happened(
    kind: str, subject: str, data: dict[str, object], title: str, tone: Tone, facts: dict[str, str], link: str
) -> None:
    shown = event_notice(envelope(kind, subject, data), STUDIO)
    assert shown.title == title
    assert shown.tone is tone
    assert facts.items() <= {fact.name: fact.value for fact in shown.facts}.items()
    assert shown.workspace == "ml-prod (resource group rg)"
    assert shown.time == "2026-12-07 14:03:12 UTC"
    assert shown.link is not None
    assert shown.link.url == link


def test_generated_events_of_every_type_each_get_a_title_naming_what_they_are_about() -> None:
    generated = list(mlevents.generate(200, mlevents.Options(seed=3)))
    kinds = {str(e["eventType"]) for e in generated}
    assert len(kinds) == 5
    for each in generated:
        shown = event_notice(each, STUDIO)
        data = each["data"]
        assert isinstance(data, dict)
        name = data.get("dataDriftName") or data.get("runId") or data.get("modelName") or data.get("serviceName")
        assert str(name) in shown.title or "Monitor" in shown.title, (shown.title, each)
        assert shown.link is not None


def test_a_topic_that_is_no_workspace_gets_no_link_and_no_workspace() -> None:
    foreign = {
        **FAILED_RUN,
        "topic": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/x",
    }
    shown = event_notice(foreign, STUDIO)
    assert shown.link is None
    assert shown.workspace is None
    assert studio_link(STUDIO, None, "models/a:1") is None


def test_links_take_the_cloud_s_studio_and_quote_what_they_carry() -> None:
    link = studio_link("https://studio.ml.azure.cn/", TOPIC, "models/my model:1")
    assert link is not None
    assert link.url == f"https://studio.ml.azure.cn/model/my%20model:1/details{WSID}"


def planned(
    kind: str, params: dict[str, object], memo: Any = None, event: dict[str, object] = FAILED_RUN
) -> PlannedAction:
    validated = action_types()[kind].params.model_validate(params, context={"env": {"HOOK": "https://hooks.example/x"}})
    return PlannedAction("tell-risk", ActionSpec(kind, 0, validated), decode_one(event), memo=memo)


def failed_runs(count: int) -> Notification:
    events = tuple(
        decode_one(
            {
                **FAILED_RUN,
                "id": f"e-{n}",
                "subject": f"experiments/0fa9/runs/run_{n}",
                "data": {"runId": f"run_{n}", "runStatus": "Failed"},
            }
        )
        for n in range(count)
    )
    return Notification("tell-risk", "fraud-detection", events, count, 1_796_652_000.0, 1_796_655_600.0)


def test_a_group_is_a_digest_listing_its_first_events_and_counting_the_rest() -> None:
    shown = notice(planned("teams", {"url": "${env:HOOK}"}, failed_runs(25)), STUDIO, listed=10)
    assert shown.title == "25 runs failed"
    assert [item.title for item in shown.items] == [f"Run run_{n} failed" for n in range(10)]
    assert shown.more == 15
    assert {"Group": "fraud-detection", "Events": "25"}.items() <= {f.name: f.value for f in shown.facts}.items()
    assert shown.items[0].link is not None
    assert shown.items[0].link.url == f"{STUDIO}/runs/run_0{WSID}"


def test_an_expiry_says_what_did_not_happen_and_by_when() -> None:
    started = decode_one(envelope("ModelRegistered", "models/churn:4", {"modelName": "churn", "modelVersion": "4"}))
    memo = Expiry("deploy-within-a-day", "churn:4", 1_796_655_600.0, "1d", started)
    shown = notice(planned("slack", {"url": "${env:HOOK}"}, memo), STUDIO)
    assert shown.title == "Nothing came for churn:4 within 1d"
    assert shown.text is not None
    assert "Model churn version 4 registered" in shown.text
    assert "None came by 2026-12-07 15:00:00 UTC" in shown.text
    assert shown.tone is Tone.WARNING


# --- Teams ----------------------------------------------------------------------------------------


def test_the_teams_card_is_an_adaptive_card_1_5_in_a_workflows_envelope() -> None:
    body = orjson.loads(cards.message(event_notice(FAILED_RUN, STUDIO)))
    assert body["type"] == "message"
    [attachment] = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert (card["type"], card["version"]) == ("AdaptiveCard", "1.5")
    assert card["body"][0]["items"][0]["text"] == "Run fraud_detection_9011 failed"
    assert card["body"][0]["style"] == "attention"
    facts = {f["title"]: f["value"] for f in card["body"][1]["facts"]}
    assert facts["Workspace"] == "ml-prod (resource group rg)"
    assert facts["Time"] == "2026-12-07 14:03:12 UTC"
    assert card["actions"] == [
        {
            "type": "Action.OpenUrl",
            "title": "Open the run in Azure ML studio",
            "url": f"{STUDIO}/runs/fraud_detection_9011{WSID}",
        }
    ]


def big(notice_: Notice, *, fact: int = 0, items: int = 0) -> Notice:
    return Notice(
        notice_.title,
        notice_.tone,
        (*notice_.facts, Fact("Notes", "x" * fact)),
        notice_.workspace,
        notice_.time,
        notice_.link,
        items=tuple(Item(f"Run run_{n} failed " + "y" * 300, None, notice_.link) for n in range(items)),
    )


def test_a_teams_card_over_28_kb_is_shortened_long_facts_first_then_the_digest_s_items() -> None:
    shown = event_notice(FAILED_RUN, STUDIO)
    long_fact = orjson.loads(cards.message(big(shown, fact=40_000)))
    notes = next(f for f in long_fact["attachments"][0]["content"]["body"][1]["facts"] if f["title"] == "Notes")
    assert notes["value"].endswith("…")
    assert len(notes["value"]) == cards.LONG_FACT
    many = cards.message(big(shown, items=200))
    assert len(many) <= cards.MAX_BYTES
    texts = [json.dumps(block) for block in orjson.loads(many)["attachments"][0]["content"]["body"]]
    assert any('"and ' in text and ' more"' in text for text in texts)


def test_a_card_that_cannot_fit_or_that_teams_cannot_render_is_refused_naming_the_limit() -> None:
    with pytest.raises(OverLimit, match="28,672 a Workflows webhook posts"):
        cards.own_message(
            {"type": "AdaptiveCard", "version": "1.5", "body": [{"type": "TextBlock", "text": "z" * 30_000}]}
        )
    with pytest.raises(OverLimit, match=r"above 1\.5, the newest Teams renders"):
        cards.own_message({"type": "AdaptiveCard", "version": "1.6", "body": []})
    with pytest.raises(OverLimit, match="not an Adaptive Card"):
        cards.own_message({"type": "MessageCard"})


# --- Slack ----------------------------------------------------------------------------------------


def test_the_slack_message_has_a_header_fields_context_and_a_button_with_a_text_fallback() -> None:
    message: Any = blocks.message(event_notice(FAILED_RUN, STUDIO))
    assert message["text"] == "Run fraud_detection_9011 failed · ml-prod (resource group rg)"
    kinds = [block["type"] for block in message["blocks"]]
    assert kinds == ["header", "section", "context", "actions"]
    header, fields, context, actions = message["blocks"]
    assert header["text"]["text"] == ":rotating_light: Run fraud_detection_9011 failed"
    assert "*Experiment*\nfraud-detection" in [field["text"] for field in fields["fields"]]
    assert context["elements"][0]["text"] == "ml-prod (resource group rg) · 2026-12-07 14:03:12 UTC"
    assert actions["elements"][0]["url"] == f"{STUDIO}/runs/fraud_detection_9011{WSID}"


def test_a_slack_digest_keeps_within_50_blocks_and_3000_characters_a_section() -> None:
    shown = big(event_notice(FAILED_RUN, STUDIO), items=2_000)
    message: Any = blocks.message(shown)
    assert blocks.blocks_problem(message["blocks"]) is None
    assert len(message["blocks"]) <= blocks.MAX_BLOCKS
    sections = [b["text"]["text"] for b in message["blocks"] if b["type"] == "section" and "text" in b]
    listed = sum(text.count("• ") for text in sections)
    more = message["blocks"][-2]["elements"][0]["text"]
    assert more == f"and {2_000 - listed} more"
    assert all(len(text) <= blocks.MAX_SECTION for text in sections)


def test_slack_text_is_escaped_and_long_headers_cut() -> None:
    odd = envelope("RunStatusChanged", "experiments/x/runs/a", {"runId": "a<b>&c" + "d" * 200, "runStatus": "Failed"})
    message: Any = blocks.message(event_notice(odd, STUDIO))
    header = message["blocks"][0]["text"]["text"]
    assert len(header) == blocks.MAX_HEADER
    assert header.endswith("…")
    run = next(f["text"] for f in message["blocks"][1]["fields"] if f["text"].startswith("*Run*"))
    assert run.startswith("*Run*\na&lt;b&gt;&amp;c")


def test_own_blocks_over_slack_s_limits_are_refused_naming_the_limit() -> None:
    with pytest.raises(OverLimit, match="51 blocks, over the 50"):
        blocks.own_message([{"type": "divider"}] * 51, "fallback")
    with pytest.raises(OverLimit, match="block 1: a section's text of 3,001 characters"):
        blocks.own_message([{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}], "fallback")


# --- the rules ------------------------------------------------------------------------------------

RULES = """
rules:
  - name: tell-risk
    filter: {{includedEventTypes: [Microsoft.MachineLearningServices.RunStatusChanged]}}
    actions:
{actions}
"""


def load(directory: Path, actions: str, env: dict[str, str] | None = None) -> Any:
    path = directory / "rules.yaml"
    path.write_text(RULES.format(actions=actions))
    return load_rules([path], env=env or {"TEAMS": "https://x.logic.azure.com/w?sig=abc"})


def test_teams_and_slack_actions_load_with_a_secret_url_and_change_parts_of_the_default(tmp_path: Path) -> None:
    table = load(
        tmp_path,
        "      - {type: teams, url: '${env:TEAMS}',\n"
        "         title: 'Run {{ data.runId }} failed in {{ data.experimentName }}'}\n"
        "      - {type: slack, url: '${env:TEAMS}', facts: {Team: '{{ data.runTags.team }}'}}",
    )
    [rule] = table.rules
    assert [spec.type for spec in rule.actions] == ["teams", "slack"]
    action = PlannedAction("tell-risk", rule.actions[0], decode_one(FAILED_RUN))
    body = orjson.loads(action_types()["teams"].executor(rule.actions[0].params, _clients()).body(action))  # type: ignore[attr-defined]
    assert (
        body["attachments"][0]["content"]["body"][0]["items"][0]["text"]
        == "Run fraud_detection_9011 failed in fraud-detection"
    )
    slack = PlannedAction("tell-risk", rule.actions[1], decode_one(FAILED_RUN))
    payload = action_types()["slack"].executor(rule.actions[1].params, _clients()).payload(slack)  # type: ignore[attr-defined]
    assert payload["blocks"][1]["fields"] == [{"type": "mrkdwn", "text": "*Team*\nrisk"}]


@pytest.mark.parametrize(
    ("actions", "env", "problem"),
    [
        ("      - {type: teams, url: 'https://x/y'}", None, "a secret is given as a reference"),
        ("      - {type: slack, url: '${env:MISSING}'}", None, "MISSING is not set"),
        (
            "      - {type: slack, url: '${env:PLAIN}'}",
            {"PLAIN": "http://hooks.example/x?sig=s3cr3t"},
            "must be https://",
        ),
        (
            "      - {type: teams, url: '${env:TEAMS}', card: {type: AdaptiveCard, version: '1.6', body: []}}",
            None,
            "above 1.5, the newest Teams renders",
        ),
        ("      - {type: teams, url: '${env:TEAMS}', card: {type: MessageCard}}", None, "an Adaptive Card"),
        (
            "      - {type: teams, url: '${env:TEAMS}', title: T, card: {type: AdaptiveCard, version: '1.5'}}",
            None,
            "card replaces the whole message",
        ),
        (
            "      - {type: slack, url: '${env:TEAMS}', blocks: " + json.dumps([{"type": "divider"}] * 51) + "}",
            None,
            "51 blocks",
        ),
    ],
    ids=["url-written-out", "url-unset", "plain-http", "card-1.6", "not-adaptive", "card-and-title", "too-many-blocks"],
)
def test_what_validate_can_see_is_refused_when_the_rules_load(
    tmp_path: Path, actions: str, env: dict[str, str] | None, problem: str
) -> None:
    with pytest.raises(RulesError) as caught:
        load(tmp_path, actions, env)
    assert problem in str(caught.value)
    assert "s3cr3t" not in str(caught.value)


def _clients() -> Any:
    """What the chat executors take from the shared clients to build a message (nothing is sent)."""
    return SimpleNamespace(http=None, azure=AzureSettings())


def test_a_preview_shows_the_message_as_it_would_be_posted_and_never_the_url() -> None:
    teams: Any = render_params(planned("teams", {"url": "${env:HOOK}"}))
    assert teams["url"] == MASK
    assert (
        teams["message"]["attachments"][0]["content"]["body"][0]["items"][0]["text"]
        == "Run fraud_detection_9011 failed"
    )
    slack = render_params(planned("slack", {"url": "${env:HOOK}", "blocks": "{{ data.runTags }}"}))
    assert slack["message"] == {"error": "blocks is not a list of Block Kit blocks (objects with a type)"}


def test_the_backtest_page_draws_each_message_as_it_would_look_with_nothing_that_loads_or_leaves() -> None:
    backtest = Backtest()
    for kind in ("teams", "slack"):
        for planned_action in examples(kind).values():
            backtest.add(planned_action)
    page = render_html(backtest, Tally(), title="chat", rules=None)
    assert external_references(page) == []
    drawn = [part.split("</details>")[0] for part in page.split('<div class="preview">')[1:]]
    assert len(drawn) == 16
    assert sum('class="ac-card"' in each for each in drawn) == 8
    assert sum('class="sk-message"' in each for each in drawn) == 8
    assert any("<th>Experiment</th><td>fraud-detection</td>" in each for each in drawn)
    header = '<span class="sk-emoji attention" title=":rotating_light:"></span> Run fraud_detection_9011 failed'
    assert any(f'<div class="sk-header">{header}</div>' in each for each in drawn)
    assert "example.invalid/workflows/hook" not in page  # the webhook's URL is a secret


def test_slack_mrkdwn_is_drawn_as_it_reads() -> None:
    assert mrkdwn("*Run*\na&lt;b&gt; <https://x/y?a=1&amp;b=2|run &lt;7&gt;>") == (
        '<b>Run</b>\na&lt;b&gt; <span class="sk-link" title="https://x/y?a=1&amp;b=2">run &lt;7&gt;</span>'
    )
