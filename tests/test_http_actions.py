"""The HTTP actions against a real aiohttp server on loopback: paths, headers, bodies, tokens,
signatures, idempotency keys; and how failures are told apart (retried, or dead-lettered at once)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from tests.servers import free_port
from tests.support import make_event
from tests.targets import FixedCredential, HttpTarget, Received
from worker.actions import ActionSpec, PlannedAction, action_types, idempotency_key
from worker.actions.base import ActionFate
from worker.actions.breaker import BreakerSettings
from worker.actions.delivery.runner import ActionRunner, DeadLetterDirectory, RunnerSettings
from worker.actions.delivery.services import Services
from worker.actions.delivery.tokens import CredentialTokens
from worker.actions.retry import RetryPolicy

pytestmark = pytest.mark.integration

SECRETS = {"HOOK_KEY": "hook-signing-key-1234", "FUNCTION_KEY": "function-key-5678", "GH_TOKEN": "ghp_test_token_90"}


def spec(kind: str, index: int = 0, **params: object) -> ActionSpec:
    validated = action_types()[kind].params.model_validate(params, context={"env": SECRETS})
    return ActionSpec(kind, index, validated)


class Harness:
    """A runner with a recording sleep (no waiting), a fixed Azure AD credential and a dead-letter directory."""

    def __init__(self, dead: Path, *, attempts: int = 3, breaker: BreakerSettings | None = None) -> None:
        self.credential = FixedCredential()
        self.waits: list[float] = []
        self.dead = dead
        self.runner = ActionRunner(
            DeadLetterDirectory(dead),
            RetryPolicy(attempts=attempts, first_delay=0.001, max_delay=0.01),
            services=Services(tokens=CredentialTokens(self.credential)),
            settings=RunnerSettings(breaker=breaker or BreakerSettings(failures=100)),
            sleep=self._sleep,
        )

    async def _sleep(self, seconds: float) -> None:
        self.waits.append(seconds)

    async def run(self, action_spec: ActionSpec, rule: str = "rule-a", **event: Any) -> ActionFate:
        return await self.runner.run(PlannedAction(rule, action_spec, make_event(**event)))

    def letters(self) -> list[dict[str, Any]]:
        return [orjson.loads(p.read_bytes()) for p in sorted(self.dead.glob("*.json"))]


@pytest.fixture
async def harness(tmp_path: Path):
    made = Harness(tmp_path / "dead")
    yield made
    await made.runner.aclose()


# --- webhook --------------------------------------------------------------------------------------


async def test_a_webhook_posts_the_templated_body_signed_with_its_key(http_target: HttpTarget, harness: Harness):
    hook = spec(
        "webhook",
        url=http_target.url + "/hooks/{{ data.modelName }}?v={{ data.modelTags.stage }}",
        headers={"X-Rule": "{{ rule }}", "X-Subject": "{{ subject }}"},
        secret_headers={"x-functions-key": "${env:FUNCTION_KEY}"},
        body={"model": "{{ data.ModelName }}", "tags": "{{ data.modelTags }}", "text": "on {{ subject }}", "n": 1},
        signature={"secret": "${env:HOOK_KEY}"},
    )
    assert await harness.run(hook) is ActionFate.DONE
    (request,) = http_target.requests
    assert (request.method, request.path, request.query) == ("POST", "/hooks/churn", {"v": "production"})
    assert request.json() == {
        "model": "churn",
        "tags": {"stage": "production"},
        "text": "on models/churn:3",
        "n": 1,
    }
    assert request.header("Content-Type") == "application/json"
    assert request.header("Idempotency-Key") == idempotency_key("ev-1", "rule-a", 0)
    assert request.header("X-Rule") == "rule-a"
    assert request.header("X-Subject") == "models/churn:3"
    assert request.header("x-functions-key") == SECRETS["FUNCTION_KEY"]
    expected = hmac.new(SECRETS["HOOK_KEY"].encode(), request.body, hashlib.sha256).hexdigest()
    assert request.header("X-Signature-256") == f"sha256={expected}"


async def test_a_webhook_forwards_the_event_as_received_by_default(http_target: HttpTarget, harness: Harness):
    assert await harness.run(spec("webhook", url=http_target.url + "/events"), rule="stream", event_id="ev-7") is (
        ActionFate.DONE
    )
    (request,) = http_target.requests
    event = request.json()
    assert event["id"] == "ev-7"
    assert event["eventType"] == "Microsoft.MachineLearningServices.ModelRegistered"
    assert event["data"] == {"modelName": "churn", "modelTags": {"stage": "production"}}
    assert request.header("Idempotency-Key") == idempotency_key("ev-7", "stream", 0)
    assert request.header("X-Signature-256") is None


async def test_a_webhook_without_a_body(http_target: HttpTarget, harness: Harness):
    hook = spec("webhook", url=http_target.url + "/ping", method="GET", body=None, idempotency_header="X-Request-Key")
    assert await harness.run(hook) is ActionFate.DONE
    (request,) = http_target.requests
    assert (request.method, request.body) == ("GET", b"")
    assert request.header("X-Request-Key") == idempotency_key("ev-1", "rule-a", 0)
    assert request.header("Content-Type") is None


async def test_503_is_retried_with_the_same_key_and_retry_after_is_honoured(http_target: HttpTarget, harness: Harness):
    async def flaky(received: Received) -> web.StreamResponse | None:
        if len(http_target.requests) < 3:
            return web.Response(status=503, headers={"Retry-After": "7"}, text="busy")
        return web.Response(status=200)

    http_target.respond = flaky
    harness_spec = spec("webhook", url=http_target.url + "/h", retry={"attempts": 3, "max_delay": 5})
    assert await harness.run(harness_spec) is ActionFate.DONE
    keys = {request.header("Idempotency-Key") for request in http_target.requests}
    assert len(http_target.requests) == 3
    assert keys == {idempotency_key("ev-1", "rule-a", 0)}
    assert harness.waits == [5, 5]  # Retry-After: 7, capped at the policy's max_delay
    assert harness.letters() == []


async def test_a_4xx_is_dead_lettered_at_once_and_the_letter_holds_no_secret(http_target: HttpTarget, harness: Harness):
    async def echo(received: Received) -> web.StreamResponse | None:
        # A careless server that echoes the request's headers in its error.
        return web.json_response({"error": "bad request", "headers": received.headers}, status=400)

    http_target.respond = echo
    hook = spec(
        "webhook",
        url=http_target.url + "/h",
        secret_headers={"x-functions-key": "${env:FUNCTION_KEY}"},
        signature={"secret": "${env:HOOK_KEY}"},
    )
    with capture_logs() as logs:
        assert await harness.run(hook) is ActionFate.DEAD_LETTERED
    assert len(http_target.requests) == 1
    assert [(log["event"], log["log_level"]) for log in logs] == [
        ("action.failed", "warning"),
        ("action.dead_lettered", "error"),
    ]
    assert logs[0]["attempt"] == 1
    assert logs[0]["transient"] is False
    assert logs[1]["attempts"] == 1
    assert all(secret not in repr(logs) for secret in SECRETS.values())
    (letter,) = harness.letters()
    (attempt,) = letter["attempts"]
    assert attempt["transient"] is False
    assert "HTTP 400" in attempt["error"]
    assert "***" in attempt["error"]  # the echoed key, masked
    text = b"".join(p.read_bytes() for p in harness.dead.iterdir()).decode()
    assert SECRETS["FUNCTION_KEY"] not in text
    assert SECRETS["HOOK_KEY"] not in text
    assert letter["idempotency_key"] == idempotency_key("ev-1", "rule-a", 0)
    assert letter["rule"] == "rule-a"
    assert letter["action"] == {"type": "webhook", "index": 0}


async def test_a_refused_connection_is_retried_then_dead_lettered(harness: Harness):
    closed = f"http://127.0.0.1:{free_port()}/h"
    assert await harness.run(spec("webhook", url=closed)) is ActionFate.DEAD_LETTERED
    (letter,) = harness.letters()
    assert [a["transient"] for a in letter["attempts"]] == [True, True, True]
    assert all("ClientConnectorError" in a["error"] for a in letter["attempts"])
    assert len(harness.waits) == 2


async def test_a_slow_target_times_out(http_target: HttpTarget, harness: Harness):
    async def slow(received: Received) -> web.StreamResponse | None:
        await asyncio.sleep(0.5)  # the server waits for its handlers when it stops
        return web.Response()

    http_target.respond = slow
    hook = spec("webhook", url=http_target.url + "/slow", timeout=0.1, retry={"attempts": 2})
    assert await harness.run(hook) is ActionFate.DEAD_LETTERED
    (letter,) = harness.letters()
    assert [a["error"] for a in letter["attempts"]] == [f"{http_target.url}: no answer within 0.1 s"] * 2


async def test_a_template_that_fails_on_the_event_makes_no_request(http_target: HttpTarget, harness: Harness):
    hook = spec("webhook", url=http_target.url + "/h", body={"run": "{{ data.runId }}"})
    assert await harness.run(hook) is ActionFate.DEAD_LETTERED
    assert http_target.requests == []
    (letter,) = harness.letters()
    (attempt,) = letter["attempts"]
    assert attempt["transient"] is False
    assert "runId" in attempt["error"]


async def test_an_open_circuit_spares_the_target(tmp_path: Path):
    made = Harness(tmp_path / "dead", attempts=4, breaker=BreakerSettings(failures=2, reset_after=3600))
    closed = f"http://127.0.0.1:{free_port()}/h"
    try:
        for n in range(5):
            assert await made.run(spec("webhook", url=closed), event_id=f"ev-{n}") is ActionFate.DEAD_LETTERED
    finally:
        await made.runner.aclose()
    letters = made.letters()
    errors = [a["error"] for letter in letters for a in letter["attempts"]]
    assert len(errors) == 20
    assert sum("ClientConnectorError" in e for e in errors) == 2  # then the circuit opened
    assert sum("circuit open" in e for e in errors) == 18


# --- Azure ML, Data Factory, GitHub, Azure DevOps --------------------------------------------------


async def test_azureml_pipeline_submits_a_run_with_a_token(http_target: HttpTarget, harness: Harness):
    endpoint = http_target.url + "/pipelines/v1.0/subscriptions/s/PipelineRuns/PipelineSubmit/abc"
    action = spec(
        "azureml_pipeline",
        endpoint=endpoint,
        experiment="retrain-{{ data.modelName }}",
        parameters={"stage": "{{ data.modelTags.stage }}", "threshold": 0.5, "model": "{{ data }}"},
    )
    assert await harness.run(action) is ActionFate.DONE
    (request,) = http_target.requests
    assert request.path == "/pipelines/v1.0/subscriptions/s/PipelineRuns/PipelineSubmit/abc"
    assert request.header("Authorization") == "Bearer aad-token-for-tests"
    assert harness.credential.scopes == ["https://ml.azure.com/.default"]
    assert request.json() == {
        "ExperimentName": "retrain-churn",
        "ParameterAssignments": {
            "stage": "production",
            "threshold": 0.5,
            "model": {"modelName": "churn", "modelTags": {"stage": "production"}},
        },
    }
    key = idempotency_key("ev-1", "rule-a", 0)
    assert request.header("x-ms-client-request-id") == f"{key[:8]}-{key[8:12]}-{key[12:16]}-{key[16:20]}-{key[20:]}"


async def test_datafactory_creates_a_pipeline_run_through_arm(http_target: HttpTarget, harness: Harness):
    action = spec(
        "datafactory_pipeline",
        subscription="sub-1",
        resource_group="data rg",
        factory="adf",
        pipeline="refresh",
        parameters={"model": "{{ data.modelName }}"},
        arm_url=http_target.url,
    )
    assert await harness.run(action) is ActionFate.DONE
    (request,) = http_target.requests
    factory = "/subscriptions/sub-1/resourceGroups/data rg/providers/Microsoft.DataFactory/factories/adf"
    assert request.path == factory + "/pipelines/refresh/createRun"
    assert request.query == {"api-version": "2018-06-01"}
    assert request.json() == {"model": "churn"}
    assert request.header("Authorization") == "Bearer aad-token-for-tests"
    assert harness.credential.scopes == [http_target.url + "/.default"]


async def test_github_workflow_dispatch(http_target: HttpTarget, harness: Harness):
    async def accepted(received: Received) -> web.StreamResponse | None:
        return web.Response(status=204)

    http_target.respond = accepted
    action = spec(
        "github_workflow",
        owner="contoso",
        repo="ml-deploy",
        workflow="deploy.yml",
        ref="release/{{ data.modelTags.stage }}",
        inputs={"model": "{{ data.modelName }}"},
        token="${env:GH_TOKEN}",  # noqa: S106 - a reference to the environment
        api_url=http_target.url,
    )
    assert await harness.run(action) is ActionFate.DONE
    (request,) = http_target.requests
    assert request.path == "/repos/contoso/ml-deploy/actions/workflows/deploy.yml/dispatches"
    assert request.json() == {"ref": "release/production", "inputs": {"model": "churn"}}
    assert request.header("Authorization") == f"Bearer {SECRETS['GH_TOKEN']}"
    assert request.header("Accept") == "application/vnd.github+json"
    assert request.header("X-GitHub-Api-Version") == "2022-11-28"
    assert harness.credential.scopes == []


@pytest.mark.parametrize("with_pat", [True, False], ids=["personal-access-token", "azure-ad"])
async def test_azure_devops_runs_a_pipeline(http_target: HttpTarget, harness: Harness, with_pat: bool):
    action = spec(
        "azure_devops_pipeline",
        organization="contoso",
        project="ml platform",
        pipeline_id=42,
        ref="refs/heads/main",
        template_parameters={"model": "{{ data.modelName }}"},
        base_url=http_target.url,
        **({"token": "${env:GH_TOKEN}"} if with_pat else {}),  # type: ignore[arg-type]
    )
    assert await harness.run(action) is ActionFate.DONE
    (request,) = http_target.requests
    assert request.path == "/contoso/ml platform/_apis/pipelines/42/runs"
    assert request.query == {"api-version": "7.1"}
    assert request.json() == {
        "templateParameters": {"model": "churn"},
        "resources": {"repositories": {"self": {"refName": "refs/heads/main"}}},
    }
    if with_pat:
        basic = base64.b64encode(f":{SECRETS['GH_TOKEN']}".encode()).decode()
        assert request.header("Authorization") == f"Basic {basic}"
        assert harness.credential.scopes == []
    else:
        assert request.header("Authorization") == "Bearer aad-token-for-tests"
        assert harness.credential.scopes == ["499b84ac-1321-427f-aa17-267ca6975798/.default"]


async def test_the_type_default_policy_applies_where_the_rule_sets_only_part(tmp_path: Path):
    runner = ActionRunner(DeadLetterDirectory(tmp_path), sleep=Harness(tmp_path)._sleep)
    closed = f"http://127.0.0.1:{free_port()}/h"
    action = spec("webhook", url=closed, retry={"first_delay": 0, "max_delay": 0})
    try:
        assert await runner.run(PlannedAction("r", action, make_event())) is ActionFate.DEAD_LETTERED
    finally:
        await runner.aclose()
    (path,) = tmp_path.glob("*.json")
    assert len(orjson.loads(path.read_bytes())["attempts"]) == action_types()["webhook"].retry.attempts == 5
