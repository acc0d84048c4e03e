"""Secrets masked in every form, wherever the worker writes: the masker itself, and targets that echo
back everything they receive, seen through the logs, the dead letters, the report and the output."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
from pathlib import Path
from urllib.parse import quote

import orjson
import pytest
from aiohttp import web

from tests.support import capture, make_event
from tests.targets import FixedCredential, HttpTarget, Received
from worker.actions import ActionSpec, PlannedAction, action_types
from worker.actions.delivery.runner import ActionRunner, DeadLetterDirectory
from worker.actions.delivery.services import Services
from worker.actions.delivery.tokens import CredentialTokens
from worker.actions.retry import RetryPolicy
from worker.blob_urls import parse_container_url
from worker.cli import main
from worker.log import configure
from worker.masking import MASK, MASKER, MaskedText, Masker, forms
from worker.sending import mlevents


def test_a_secret_is_masked_as_given_escaped_and_encoded() -> None:
    masker = Masker()
    secret = 'p/a+ss=w"ord:1'  # noqa: S105 - made up, to show it masked
    masker.add(secret)
    for form in (
        secret,
        quote(secret, safe=""),
        json.dumps(secret)[1:-1],
        json.dumps(secret)[1:-1].replace("/", "\\/"),
        base64.b64encode(secret.encode()).decode(),
        base64.b64encode(b":" + secret.encode()).decode(),
    ):
        assert masker.mask(f"before {form} after") == f"before {MASK} after", form
    assert masker.mask("nothing secret") == "nothing secret"


def test_the_longest_form_is_masked_whole() -> None:
    masker = Masker()
    masker.add("abcd", "abcd-efgh")
    assert masker.mask("x abcd-efgh y abcd") == "x *** y ***"


def test_too_short_a_secret_is_not_masked_inside_other_text() -> None:
    masker = Masker()
    masker.add("ab")
    assert masker.mask("about abba") == "about abba"
    assert all(len(form) >= 4 for form in forms("abcd"))


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("Authorization: Bearer eyJhbGciOi.abcdefghijklmnop", "Authorization: Bearer ***"),
        ('{"authorization": "Basic OnBhdC12YWx1ZS0xMjM0NQ=="}', '{"authorization": "Basic ***"}'),
        ("token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl end", "token *** end"),
        (
            "GET https://a.blob.core.windows.net/c?sv=2025&sig=abc%2Bdef%3D&se=2026",
            "GET https://a.blob.core.windows.net/c?sv=2025&sig=***&se=2026",
        ),
        (
            "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=c2VjcmV0a2V5==;",
            "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=***;",
        ),
        (
            "Endpoint=sb://ns/;SharedAccessKeyName=k;SharedAccessKey=S3cr3t+Key=",
            "Endpoint=sb://ns/;SharedAccessKeyName=k;SharedAccessKey=***",
        ),
        ("SharedAccessSignature sr=sb%3A%2F%2Fns&sig=abcDEF123%3D&se=1&skn=listen", "SharedAccessSignature ***"),
        ("Basic research: nothing to mask", "Basic research: nothing to mask"),
    ],
)
def test_credentials_are_masked_by_their_shape(text: str, masked: str) -> None:
    assert Masker().mask(text) == masked


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (
            'connect to "Endpoint=sb://ns/;SharedAccessKey=S3cr3t+Key=" failed',
            'to "Endpoint=sb://ns/;SharedAccessKey=***"',
        ),
        ("headers {'Authorization': 'Bearer abcdefghijklmnopqrstuv'}", "{'Authorization': 'Bearer ***'}"),
        ("a password ending in a backslash: Password=abc\\", "Password=***"),
        ("Password=ab\\cd; Database=x", "Password=***; Database=x"),
    ],
)
def test_a_json_line_masked_by_shape_stays_json(text: str, masked: str) -> None:
    """A value ends before the backslash that escapes its closing quote in the rendered JSON of a log line."""
    line = Masker().mask(json.dumps({"event": text}))
    assert masked in json.loads(line)["event"]


def test_a_connection_string_masks_its_key_on_its_own() -> None:
    masker = Masker()
    masker.add_connection_string("Endpoint=sb://ns.example/;SharedAccessKeyName=listen;SharedAccessKey=k3y-v4lue")
    assert masker.mask("the key k3y-v4lue alone") == "the key *** alone"


def test_strings_inside_values_are_masked() -> None:
    masker = Masker()
    masker.add("s3cret")
    assert masker.mask_value({"a": ["x s3cret", ("s3cret", 1)], "s3cret": None}) == {
        "a": ["x ***", ("***", 1)],
        "***": None,
    }


def test_a_masked_stream_closes_quietly_after_its_stream() -> None:
    # As the garbage collector closes one that outlived its stream (the command line's, around a test's
    # captured output): Python 3.13 reports what that raises.
    stream = io.TextIOWrapper(io.BytesIO())
    masked = MaskedText(stream)
    masked.write("text")
    stream.close()
    masked.close()
    assert masked.closed


def test_a_sas_token_in_a_container_url_is_masked_from_then_on() -> None:
    parse_container_url("https://acct.blob.core.windows.net/lane?sv=2025-01-01&sig=Zm9vYmFyYmF6cXV4")
    assert "Zm9vYmFyYmF6cXV4" not in MASKER.mask("echo Zm9vYmFyYmF6cXV4")


# --- targets that echo everything back -------------------------------------------------------------

PAT = "devops-pat-0123456789"
GH_TOKEN = "ghp_0123456789abcdefghij"  # noqa: S105 - made up, to show it masked
FUNCTION_KEY = "function-key-0123456789"
HOOK_KEY = "hook-signing-key-0123456789"
AAD_TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL21sLmF6dXJlLmNvbSJ9.c2lnbmF0dXJlLWJ5dGVz"  # noqa: S105
SECRETS = {"PAT": PAT, "GH_TOKEN": GH_TOKEN, "FUNCTION_KEY": FUNCTION_KEY, "HOOK_KEY": HOOK_KEY}


def sent_forms() -> list[str]:
    """The secrets as the actions send them: what a target can echo back."""
    return [
        FUNCTION_KEY,
        base64.b64encode(f":{PAT}".encode()).decode(),  # Azure DevOps: Basic with an empty user
        f"Bearer {GH_TOKEN}",
        f"Bearer {AAD_TOKEN}",
    ]


def every_form() -> list[str]:
    """Each secret as it was given, and as it was sent."""
    return [*SECRETS.values(), AAD_TOKEN, *sent_forms()]


async def echo(received: Received) -> web.StreamResponse:
    """Answer with an error that repeats the request: its headers, body and query, as many servers do."""
    text = json.dumps({"headers": received.headers, "body": received.body.decode(), "query": received.query})
    status = 503 if received.path.endswith("/busy") else 400
    return web.Response(status=status, text=f"request refused: {text} (raw headers: {received.headers!r})")


def actions(target: str) -> list[ActionSpec]:
    raw = [
        (
            "webhook",
            {
                "url": target + "/hooks/busy",
                "secret_headers": {"x-functions-key": "${env:FUNCTION_KEY}"},
                "signature": {"secret": "${env:HOOK_KEY}"},
            },
        ),
        (
            "github_workflow",
            {"api_url": target, "owner": "o", "repo": "r", "workflow": "w.yml", "token": "${env:GH_TOKEN}"},
        ),
        (
            "azure_devops_pipeline",
            {"base_url": target, "organization": "org", "project": "p", "pipeline_id": 7, "token": "${env:PAT}"},
        ),
        ("azureml_pipeline", {"endpoint": target + "/aml/busy", "experiment": "retrain"}),
    ]
    return [
        ActionSpec(kind, index, action_types()[kind].params.model_validate(params, context={"env": SECRETS}))
        for index, (kind, params) in enumerate(raw)
    ]


@pytest.mark.integration
async def test_an_echoing_target_leaks_no_secret_into_logs_or_dead_letters(
    http_target: HttpTarget, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    http_target.respond = echo
    configure("info", "json")

    async def no_sleep(_seconds: float) -> None:
        return None

    runner = ActionRunner(
        DeadLetterDirectory(tmp_path / "dead"),
        RetryPolicy(attempts=2),
        services=Services(tokens=CredentialTokens(FixedCredential(AAD_TOKEN))),
        sleep=no_sleep,
    )
    try:
        for spec in actions(http_target.url):
            await runner.run(PlannedAction("rule-r", spec, make_event()))
    finally:
        await runner.aclose()
    sent = "\n".join(repr(request) for request in http_target.requests)
    for form in sent_forms():
        assert form in sent, f"the test does not send {form!r}"  # the target did receive them all
    logs = capsys.readouterr().err
    letters = "\n".join(path.read_text() for path in sorted((tmp_path / "dead").glob("*.json")))
    assert logs.count('"action.failed"') >= 6  # retried, then dead-lettered
    assert len(list((tmp_path / "dead").glob("*.json"))) == 4
    assert "request refused" in letters  # the target's answer is kept, scrubbed
    for form in every_form():
        assert form not in logs, f"the logs hold {form!r}"
        assert form not in letters, f"a dead letter holds {form!r}"


@pytest.mark.integration
async def test_a_replay_against_an_echoing_target_leaks_no_secret(
    http_target: HttpTarget, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole command: its output, its report, its logs and its dead letters.

    The webhook's target echoes a transient refusal (503) to the first attempt and a permanent one
    (400) to the retry, so that each event's two attempts reach it whatever the order: six 503s in a
    row from one origin would open its circuit after five, and the sixth attempt would fail without a
    request; a 400 says the target is up (so does each Azure DevOps attempt's)."""
    first_attempts: set[bytes] = set()

    async def refuse(received: Received) -> web.StreamResponse:
        if received.path.endswith("/busy") and received.body in first_attempts:
            received = dataclasses.replace(received, path=received.path.removesuffix("/busy") + "/refused")
        first_attempts.add(received.body)
        return await echo(received)

    http_target.respond = refuse
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    target = http_target.url
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f"""
rules:
  - name: every-model
    filter: {{}}
    actions:
      - type: webhook
        url: {target}/hooks/busy
        secret_headers: {{x-functions-key: "${{env:FUNCTION_KEY}}"}}
        retry: {{attempts: 2, first_delay: 0, max_delay: 0}}
      - type: azure_devops_pipeline
        base_url: {target}
        organization: org
        project: p
        pipeline_id: 7
        token: ${{env:PAT}}
        retry: {{attempts: 1}}
"""
    )
    source = capture(tmp_path / "capture", "0", list(mlevents.bodies(3)))
    report = tmp_path / "report.json"
    command = ["replay", "--rules", str(rules), "--report", str(report), "--dead-letters", str(tmp_path / "dead")]
    # The CLI runs its own event loop: in a thread, while the target answers on this one.
    code = await asyncio.to_thread(main, [*command, "--window", "0", str(source)])
    assert code == 0
    captured = capsys.readouterr()
    written = "\n".join(
        [captured.out, captured.err, report.read_text(), *(p.read_text() for p in (tmp_path / "dead").glob("*.json"))]
    )
    actions_run = orjson.loads(report.read_bytes())["rules"]["every-model"]["actions"]
    assert actions_run == {"webhook": {"dead_lettered": 3}, "azure_devops_pipeline": {"dead_lettered": 3}}
    assert sum(1 for request in http_target.requests if request.header("x-functions-key") == FUNCTION_KEY) == 6
    for form in [FUNCTION_KEY, PAT, base64.b64encode(f":{PAT}".encode()).decode()]:
        assert form not in written, f"{form!r} was written"


def test_a_report_masks_what_came_from_outside(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An event type is whatever a publisher sent: a credential in one never reaches the report."""
    body = json.dumps(
        [
            {
                "id": "e1",
                "eventType": "Bearer abcdefghijklmnopqrstuvwxyz",
                "subject": "s",
                "eventTime": "2026-11-01T09:00:00Z",
            }
        ]
    ).encode()
    source = capture(tmp_path / "capture", "0", [body])
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - name: all\n    filter: {}\n    actions: [{type: log}]\n")
    report = tmp_path / "report.json"
    assert main(["replay", "--dry-run", "--rules", str(rules), "--report", str(report), str(source)]) == 0
    written = report.read_text() + capsys.readouterr().out
    assert "abcdefghijklmnopqrstuvwxyz" not in written
    assert orjson.loads(report.read_bytes())["event_types"] == {
        "Bearer ***": {"matched": 1, "unmatched": 0, "skipped": 0, "invalid": 0, "handed_over": 0}
    }
