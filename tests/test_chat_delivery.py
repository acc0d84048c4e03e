"""The ``teams`` and ``slack`` actions against local stand-ins for a Teams Workflows webhook (202) and a
Slack incoming webhook (200 ``ok``; 429 with ``Retry-After`` above its rate; 400 with an error code):
what they post, what is retried and what is dead-lettered, and the pace of a burst."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from tests.support import TOPIC, decode_one
from tests.targets import HttpTarget, Received
from worker.actions import ActionSpec, PlannedAction, action_types
from worker.actions.base import ActionFate
from worker.actions.breaker import BreakerSettings
from worker.actions.delivery.runner import ActionRunner, DeadLetterDirectory, RunnerSettings

pytestmark = pytest.mark.integration

FAILED: dict[str, Any] = {
    "id": "run-failed-1",
    "topic": TOPIC,
    "subject": "experiments/0fa9/runs/fraud_detection_9011",
    "eventType": "Microsoft.MachineLearningServices.RunStatusChanged",
    "eventTime": "2026-12-07T14:03:12Z",
    "data": {"runId": "fraud_detection_9011", "experimentName": "fraud-detection", "runStatus": "Failed"},
}


class Chat:
    """A runner posting to the stand-in; retries wait no time, but are recorded."""

    def __init__(self, target: HttpTarget, dead: Path) -> None:
        self.target = target
        self.dead = dead
        self.waits: list[float] = []
        self.runner = ActionRunner(
            DeadLetterDirectory(dead), settings=RunnerSettings(breaker=BreakerSettings(failures=100)), sleep=self._sleep
        )

    async def _sleep(self, seconds: float) -> None:
        self.waits.append(seconds)

    def spec(self, kind: str, **params: object) -> ActionSpec:
        env = {"HOOK": f"{self.target.url}/workflows/abc/triggers/manual/paths/invoke?sig=s3cr3t"}
        return ActionSpec(
            kind, 0, action_types()[kind].params.model_validate({"url": "${env:HOOK}", **params}, context={"env": env})
        )

    async def run(self, spec: ActionSpec, event: dict[str, Any] = FAILED) -> ActionFate:
        return await self.runner.run(PlannedAction("tell-risk", spec, decode_one(event)))

    def letters(self) -> list[dict[str, Any]]:
        return [orjson.loads(p.read_bytes()) for p in sorted(self.dead.glob("*.json"))]


@pytest.fixture
async def chat(http_target: HttpTarget, tmp_path: Path) -> AsyncIterator[Chat]:
    made = Chat(http_target, tmp_path / "dead")
    yield made
    await made.runner.aclose()


async def accepted(received: Received) -> web.StreamResponse:
    return web.Response(status=202)  # a Workflows webhook: accepted, posted later


async def slack_ok(received: Received) -> web.StreamResponse:
    return web.Response(status=200, text="ok")


async def test_teams_posts_the_adaptive_card_and_a_202_is_done(chat: Chat) -> None:
    chat.target.respond = accepted
    assert await chat.run(chat.spec("teams")) is ActionFate.DONE
    [request] = chat.target.requests
    assert (request.method, request.path, request.query["sig"]) == (
        "POST",
        "/workflows/abc/triggers/manual/paths/invoke",
        "s3cr3t",
    )
    assert request.header("Content-Type") == "application/json"
    card = request.json()["attachments"][0]["content"]
    assert card["body"][0]["items"][0]["text"] == "Run fraud_detection_9011 failed"


async def test_slack_posts_block_kit_and_waits_out_a_429_s_retry_after(chat: Chat) -> None:
    async def limited(received: Received) -> web.StreamResponse:
        if len(chat.target.requests) == 1:
            return web.Response(status=429, headers={"Retry-After": "3"}, text="rate_limited")
        return web.Response(status=200, text="ok")

    chat.target.respond = limited
    assert await chat.run(chat.spec("slack")) is ActionFate.DONE
    assert len(chat.target.requests) == 2
    assert chat.waits == [3]
    first, second = (request.json() for request in chat.target.requests)
    assert first == second
    assert first["text"] == "Run fraud_detection_9011 failed · ml-prod (resource group rg)"
    assert first["blocks"][0]["type"] == "header"


async def test_a_4xx_is_dead_lettered_at_once_without_the_webhook_s_signature(chat: Chat) -> None:
    async def refused(received: Received) -> web.StreamResponse:
        return web.Response(status=400, text="invalid_blocks")

    chat.target.respond = refused
    assert await chat.run(chat.spec("slack")) is ActionFate.DEAD_LETTERED
    assert len(chat.target.requests) == 1
    [letter] = chat.letters()
    assert letter["attempts"][-1]["reason"] == "rejected"
    assert "invalid_blocks" in letter["attempts"][-1]["error"]
    assert "s3cr3t" not in orjson.dumps(letter).decode()


async def test_a_message_over_the_limits_is_dead_lettered_naming_the_limit_and_nothing_is_posted(chat: Chat) -> None:
    chat.target.respond = accepted
    huge = {"type": "AdaptiveCard", "version": "1.5", "body": [{"type": "TextBlock", "text": "{{ data.notes }}"}]}
    event = {**FAILED, "data": {**FAILED["data"], "notes": "n" * 40_000}}
    assert await chat.run(chat.spec("teams", card=huge), event) is ActionFate.DEAD_LETTERED
    assert chat.target.requests == []
    [letter] = chat.letters()
    [attempt] = letter["attempts"]
    assert attempt["reason"] == "over_limit"
    assert "over the 28,672 a Workflows webhook posts" in attempt["error"]


async def test_a_digest_too_long_for_a_card_is_shortened_and_posted(chat: Chat) -> None:
    chat.target.respond = accepted
    long_facts = {"Notes": "{{ data.notes }}"}
    event = {**FAILED, "data": {**FAILED["data"], "notes": "n" * 40_000}}
    assert await chat.run(chat.spec("teams", facts=long_facts), event) is ActionFate.DONE
    [request] = chat.target.requests
    assert len(request.body) <= 28 * 1024
    facts = request.json()["attachments"][0]["content"]["body"][1]["facts"]
    assert facts[0]["title"] == "Notes"
    assert facts[0]["value"].endswith("…")


async def test_a_burst_to_slack_is_paced_at_a_message_a_second(chat: Chat) -> None:
    chat.target.respond = slack_ok
    spec = chat.spec("slack")
    events = [{**FAILED, "id": f"run-failed-{n}"} for n in range(3)]
    fates = await asyncio.gather(*(chat.run(spec, event) for event in events))
    assert fates == [ActionFate.DONE] * 3
    assert chat.waits == []  # no request refused, none retried
    # A pace is a floor on the time between requests: a busy machine only spaces them more.
    arrived = chat.target.arrived
    assert len(arrived) == 3
    assert all(later - earlier >= 0.9 for earlier, later in itertools.pairwise(arrived))
