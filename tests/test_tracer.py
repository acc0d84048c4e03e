"""The OpenTelemetry tracer, read through the SDK's in-memory exporter: links to producers, the
spans of rules that remember, attempts and their requests under their event, and sampling."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from aiohttp import web
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.probe import no_sleep
from tests.servers import free_port
from tests.targets import HttpTarget, Received
from worker.actions.clients import HttpRequest
from worker.actions.delivery.http_client import HttpClient
from worker.actions.delivery.runner import ActionRunner, DeadLetterDirectory, RetryPolicy
from worker.actions.delivery.services import Services
from worker.core.decoding import decode_body
from worker.core.partition import PartitionCore
from worker.driver import PartitionDriver
from worker.errors import TargetUnavailable
from worker.events import Event, Message, Position
from worker.rulefiles.loading import load_rules
from worker.settings import CoreSettings, DriverSettings, Scope
from worker.telemetry.context import TraceContext, parse_traceparent
from worker.telemetry.otel import OtelTracer, provider
from worker.telemetry.setup import TracingSettings

SCOPE = Scope("ml.servicebus.windows.net", "ml-events", "actions")
PRODUCER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
CLOUDEVENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def recorded() -> Iterator[tuple[OtelTracer, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    made = TracerProvider()
    made.add_span_processor(SimpleSpanProcessor(exporter))
    yield OtelTracer(made, SCOPE), exporter
    made.shutdown()


def event(properties: dict[str, object] | None = None, **extra: object) -> Event:
    envelope = {
        "specversion": "1.0",
        "id": "ev-1",
        "source": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws",
        "subject": "experiments/e/runs/r",
        "type": "Microsoft.MachineLearningServices.RunCompleted",
        "time": "2026-12-08T09:00:00Z",
        "data": {},
        **extra,
    }
    (decoded,) = decode_body(json.dumps(envelope), Position("2", "64", 7), properties)
    assert isinstance(decoded, Event)
    return decoded


def attributes(span: ReadableSpan) -> Mapping[str, object]:
    assert span.attributes is not None
    return span.attributes


def links_of(span: ReadableSpan) -> list[tuple[int, int]]:
    return [(link.context.trace_id, link.context.span_id) for link in span.links]


@pytest.mark.parametrize(
    ("properties", "extra", "expected"),
    [
        ({"traceparent": PRODUCER}, {}, [PRODUCER]),
        ({"Diagnostic-Id": PRODUCER}, {}, [PRODUCER]),
        ({}, {"traceparent": CLOUDEVENT}, [CLOUDEVENT]),
        ({"traceparent": PRODUCER}, {"traceparent": CLOUDEVENT}, [PRODUCER, CLOUDEVENT]),
        ({"traceparent": PRODUCER}, {"traceparent": PRODUCER}, [PRODUCER]),
        ({"Diagnostic-Id": "|4bf92f3577b34da6a3ce929d0e0e4736.1."}, {}, []),
        ({"traceparent": "00-not-a-context"}, {}, []),
        ({}, {}, []),
    ],
    ids=["traceparent", "diagnostic-id", "cloudevent", "both", "same-twice", "request-id", "invalid", "none"],
)
def test_the_event_span_links_to_each_producer_context_the_message_carries(
    recorded: tuple[OtelTracer, InMemorySpanExporter],
    properties: dict[str, object],
    extra: dict[str, object],
    expected: list[str],
) -> None:
    tracer, exporter = recorded
    tracer.event(event(properties, **extra), rules=["r"], late=False, memo=None).end()
    [span] = exporter.get_finished_spans()
    contexts = [parse_traceparent(value) for value in expected]
    assert links_of(span) == [(c.trace_id, c.span_id) for c in contexts if c is not None]
    assert span.parent is None
    assert span.kind is SpanKind.CONSUMER
    assert span.name == "process ml-events"


def test_a_rule_that_remembers_fires_in_a_span_named_for_it(recorded: tuple[OtelTracer, InMemorySpanExporter]) -> None:
    tracer, exporter = recorded
    tracer.event(event(), rules=["deploy-expected"], late=False, memo="expiry").end()
    tracer.event(event(), rules=["failures-digest"], late=True, memo="group").end()
    expired, notified = exporter.get_finished_spans()
    assert (expired.name, expired.kind, attributes(expired)["azml_worker.memo"]) == (
        "expire deploy-expected",
        SpanKind.INTERNAL,
        "expiry",
    )
    assert (notified.name, attributes(notified)["azml_worker.late"]) == ("notify failures-digest", True)


RULES = """
rules:
  - name: hook
    filter: {}
    actions:
      - type: webhook
        url: "URL/{{ event.subject }}"
        retry: {attempts: 2}
"""


def runs(subject: str, sequence: int) -> Message:
    body = {
        "id": f"ev-{sequence}",
        "topic": "ws",
        "subject": subject,
        "eventType": "Microsoft.MachineLearningServices.RunCompleted",
        "eventTime": f"2026-12-08T09:00:0{sequence}Z",
        "data": {},
    }
    return Message(json.dumps([body]).encode(), Position("0", str(sequence), sequence))


@pytest.mark.integration
async def test_attempts_and_their_requests_are_children_of_their_event(
    recorded: tuple[OtelTracer, InMemorySpanExporter], tmp_path: Path
) -> None:
    """``flaky`` fails once and then answers; ``gone`` rejects: dead-lettered after one attempt."""
    tracer, exporter = recorded
    calls: dict[str, int] = {}

    async def respond(received: Received) -> web.StreamResponse:
        calls[received.path] = calls.get(received.path, 0) + 1
        if received.path == "/gone":
            return web.Response(status=400, text="no such hook")
        return web.Response(status=503 if calls[received.path] == 1 else 200)

    target = HttpTarget()
    target.respond = respond
    await target.start()
    try:
        rules = tmp_path / "rules.yaml"
        rules.write_text(RULES.replace("URL", target.url))
        core = PartitionCore("0", load_rules([rules]), CoreSettings(window=0))
        runner = ActionRunner(
            DeadLetterDirectory(tmp_path / "dead-letters"),
            RetryPolicy(attempts=2),
            services=Services(tracer=tracer),
            sleep=no_sleep,
            tracer=tracer,
        )
        try:
            async with PartitionDriver(core, runner, DriverSettings(), tracer=tracer) as driver:
                await driver.feed(runs("flaky", 1))
                await driver.feed(runs("gone", 2))
                await driver.finish()
        finally:
            await runner.aclose()
    finally:
        await target.stop()

    spans = exporter.get_finished_spans()
    by_event = {
        attributes(span)["cloudevents.event_subject"]: span for span in spans if span.name == "process ml-events"
    }
    flaky, gone = by_event["flaky"], by_event["gone"]
    assert flaky.status.status_code is StatusCode.UNSET
    assert attributes(flaky)["azml_worker.actions"] == 1
    assert gone.status.status_code is StatusCode.ERROR
    assert (attributes(gone)["azml_worker.dead_lettered"], gone.status.description) == (
        1,
        "1 of 1 actions dead-lettered",
    )

    def children(parent: ReadableSpan) -> list[ReadableSpan]:
        assert parent.context is not None
        return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]

    first, second = children(flaky)
    assert [
        (a.name, attributes(a)["azml_worker.attempt"], attributes(a)["azml_worker.attempt.result"])
        for a in (first, second)
    ] == [
        ("attempt webhook", 1, "transient"),
        ("attempt webhook", 2, "ok"),
    ]
    assert first.status.status_code is StatusCode.ERROR
    assert "503" in (first.status.description or "")
    [(rejected_attempt)] = children(gone)
    assert attributes(rejected_attempt)["azml_worker.attempt.result"] == "permanent"

    requests = [request for attempt in (first, second, rejected_attempt) for request in children(attempt)]
    assert [(r.name, r.kind, attributes(r)["http.response.status_code"]) for r in requests] == [
        ("POST", SpanKind.CLIENT, 503),
        ("POST", SpanKind.CLIENT, 200),
        ("POST", SpanKind.CLIENT, 400),
    ]
    assert [r.status.status_code for r in requests] == [StatusCode.ERROR, StatusCode.UNSET, StatusCode.ERROR]
    # Each request told its target its own client span, in the trace of its event (the subjects ran
    # at once: in no set order).
    told = {parse_traceparent(received.header("traceparent")) for received in target.requests}
    assert told == {
        TraceContext(r.context.trace_id, r.context.span_id, sampled=True) for r in requests if r.context is not None
    }
    assert len(told) == 3


@pytest.mark.integration
async def test_a_trace_sampled_out_sends_nothing_but_still_tells_the_target(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    exporter = InMemorySpanExporter()
    made = provider(TracingSettings(frozenset()), {}, role="pipeline")  # its sampler, from the variable
    made.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = OtelTracer(made, SCOPE)
    target = HttpTarget()
    await target.start()
    try:
        rules = tmp_path / "rules.yaml"
        rules.write_text(RULES.replace("URL", target.url))
        core = PartitionCore("0", load_rules([rules]), CoreSettings(window=0))
        runner = ActionRunner(DeadLetterDirectory(tmp_path), services=Services(tracer=tracer), tracer=tracer)
        try:
            async with PartitionDriver(core, runner, DriverSettings(), tracer=tracer) as driver:
                await driver.feed(runs("sampled-out", 1))
                await driver.finish()
        finally:
            await runner.aclose()
    finally:
        await target.stop()
        made.shutdown()
    assert exporter.get_finished_spans() == ()
    told = parse_traceparent(target.requests[0].header("traceparent"))
    assert told is not None
    assert not told.sampled  # the target knows this trace is not recorded


SLACK_RULES = """
rules:
  - {name: tell, filter: {}, actions: [{type: slack, url: "${env:TRACED_HOOK_URL}"}]}
"""


@pytest.mark.integration
async def test_a_webhook_url_that_is_a_secret_stays_out_of_the_spans(
    recorded: tuple[OtelTracer, InMemorySpanExporter], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Slack incoming webhook's secret is its path: the span says where the request went, masked."""
    tracer, exporter = recorded
    target = HttpTarget()
    await target.start()
    try:
        monkeypatch.setenv("TRACED_HOOK_URL", f"{target.url}/services/T0001/B0002/hook-secret-in-the-path")
        rules = tmp_path / "rules.yaml"
        rules.write_text(
            'rules:\n  - {name: tell, filter: {}, actions: [{type: slack, url: "${env:TRACED_HOOK_URL}"}]}\n'
        )
        core = PartitionCore("0", load_rules([rules]), CoreSettings(window=0))
        runner = ActionRunner(DeadLetterDirectory(tmp_path), services=Services(tracer=tracer), tracer=tracer)
        try:
            async with PartitionDriver(core, runner, DriverSettings(), tracer=tracer) as driver:
                await driver.feed(runs("secret", 1))
                await driver.finish()
        finally:
            await runner.aclose()
    finally:
        await target.stop()
    assert [received.path for received in target.requests] == ["/services/T0001/B0002/hook-secret-in-the-path"]
    [request] = [span for span in exporter.get_finished_spans() if span.kind is SpanKind.CLIENT]
    assert attributes(request)["url.full"] == "***"
    assert attributes(request)["server.port"] == target.port
    assert not any("hook-secret" in repr(dict(attributes(span))) for span in exporter.get_finished_spans())


@pytest.mark.integration
async def test_a_request_that_gets_no_answer_is_a_failed_client_span(
    recorded: tuple[OtelTracer, InMemorySpanExporter],
) -> None:
    tracer, exporter = recorded
    client = HttpClient(tracer)
    try:
        with pytest.raises(TargetUnavailable):
            await client.send(HttpRequest("POST", f"http://127.0.0.1:{free_port()}/hook?sig=s3cr3t", {}, b"{}"))
    finally:
        await client.aclose()
    [request] = exporter.get_finished_spans()
    assert request.status.status_code is StatusCode.ERROR
    assert attributes(request)["error.type"] == "ClientConnectorError"
    assert str(attributes(request)["url.full"]).endswith("/hook")
    assert "http.response.status_code" not in attributes(request)
