"""Traces of the live worker, sent to the test bed's own OTLP/HTTP receiver: one event, from the
producer's context to the webhook's request, through both of the worker's processes."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest
from azure.eventhub import EventData
from azure.eventhub.aio import EventHubProducerClient

from tests.live import local_hub, start_worker, stop_worker, worker_env
from tests.otlp import ReceivedSpan, otlp_receiver
from tests.servers import Azurite
from tests.targets import HttpTarget
from worker.telemetry.context import TraceContext, parse_traceparent

pytestmark = pytest.mark.integration

PRODUCER_TRACE = "0af7651916cd43dd8448eb211c80319c"
PRODUCER_SPAN = "b7ad6b7169203331"

RULES = """
rules:
  - name: tell-the-team
    filter: {includedEventTypes: [Microsoft.MachineLearningServices.RunCompleted]}
    actions:
      - type: webhook
        url: "URL/hooks/runs"
"""

EVENT = {
    "id": "ev-traced-1",
    "topic": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws",
    "subject": "experiments/e1/runs/run-1",
    "eventType": "Microsoft.MachineLearningServices.RunCompleted",
    "eventTime": "2026-12-08T09:00:00Z",
    "data": {"runId": "run-1", "runStatus": "Completed"},
    "dataVersion": "2",
    "metadataVersion": "1",
}


def named(spans: list[ReceivedSpan], prefix: str) -> list[ReceivedSpan]:
    return [span for span in spans if span.name.startswith(prefix)]


def checkpointed(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    """The spans of writing the checkpoint at the event (partition 1's first)."""
    return [span for span in named(spans, "checkpoint 1") if span.attributes["azml_worker.sequence_number"] == 0]


def complete(spans: list[ReceivedSpan]) -> bool:
    """The event's, its attempt's and its request's spans, and its checkpoint's: the SDK's spans under
    it end before it, so they came with it or earlier."""
    return all(named(spans, name) for name in ("process ", "attempt webhook", "POST")) and bool(checkpointed(spans))


async def test_one_event_is_traced_from_its_producer_to_the_webhook(tmp_path: Path, azurite: Azurite) -> None:
    target = HttpTarget()
    await target.start()
    (tmp_path / "rules.yaml").write_text(RULES.replace("URL", target.url))
    container = f"traces-{uuid.uuid4().hex[:12]}"
    try:
        async with otlp_receiver() as receiver, local_hub("traced", partitions=2) as hub:
            env = worker_env(hub, azurite, container, tmp_path / "rules.yaml")
            env.update(
                OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
                OTEL_BSP_SCHEDULE_DELAY="100",
                OTEL_SERVICE_NAME="ml-actions",
            )
            worker = await start_worker(env, tmp_path)
            try:
                async with EventHubProducerClient.from_connection_string(hub.connection_string()) as producer:
                    message = EventData(orjson.dumps([EVENT]))
                    message.properties = {"traceparent": f"00-{PRODUCER_TRACE}-{PRODUCER_SPAN}-01"}
                    await producer.send_batch([message], partition_id="1")
                await target.until(lambda: len(target.requests) == 1)
                spans = await receiver.until(complete)
            finally:
                assert await stop_worker(worker) == 0, (tmp_path / "worker.log").read_text()
    finally:
        await target.stop()

    # The worker process's own spans: the Event Hubs SDK's (azure-core's plugin), linked to the producer too.
    receiving = [span for span in spans if span.name.startswith("EventHubs.")]
    assert {span.name for span in receiving} >= {"EventHubs.receive", "EventHubs.process"}
    assert all(span.resource["azml_worker.process"] == "worker" for span in receiving)
    assert all((PRODUCER_TRACE, PRODUCER_SPAN) in span.links for span in receiving)

    [event] = named(spans, "process ")
    assert event.name == "process traced"
    assert event.kind == "SPAN_KIND_CONSUMER"
    assert event.parent_id == ""  # a trace of its own ...
    assert event.links == [(PRODUCER_TRACE, PRODUCER_SPAN)]  # ... linked to the producer's
    assert event.attributes == event.attributes | {
        "messaging.system": "eventhubs",
        "messaging.operation.name": "process",
        "messaging.operation.type": "process",
        "messaging.destination.name": "traced",
        "messaging.consumer.group.name": "$Default",
        "messaging.destination.partition.id": "1",
        "messaging.message.id": "ev-traced-1",
        "server.address": f"127.0.0.1:{hub.port}",
        "cloudevents.event_id": "ev-traced-1",
        "cloudevents.event_type": "Microsoft.MachineLearningServices.RunCompleted",
        "cloudevents.event_subject": "experiments/e1/runs/run-1",
        "cloudevents.event_source": EVENT["topic"],
        "azml_worker.rules": ["tell-the-team"],
        "azml_worker.late": False,
        "azml_worker.sequence_number": 0,
        "azml_worker.actions": 1,
    }
    assert event.status == "STATUS_CODE_UNSET"
    assert event.resource["service.name"] == "ml-actions"
    assert event.resource["azml_worker.process"] == "pipeline"

    [attempt] = named(spans, "attempt ")
    assert (attempt.trace_id, attempt.parent_id) == (event.trace_id, event.span_id)
    assert attempt.attributes == {
        "azml_worker.rule": "tell-the-team",
        "azml_worker.action.type": "webhook",
        "azml_worker.action.index": 0,
        "azml_worker.target": target.url,
        "azml_worker.attempt": 1,
        "azml_worker.attempt.result": "ok",
    }

    [request] = named(spans, "POST")
    assert (request.trace_id, request.parent_id) == (event.trace_id, attempt.span_id)
    assert request.kind == "SPAN_KIND_CLIENT"
    assert request.attributes == {
        "http.request.method": "POST",
        "url.full": f"{target.url}/hooks/runs",
        "server.address": "127.0.0.1",
        "server.port": target.port,
        "http.response.status_code": 200,
    }
    # The webhook's own trace joins: it was told the client span's context (sampled; the SDK also
    # sets the W3C level 2 flag saying the trace id is random).
    told = parse_traceparent(target.requests[0].header("traceparent"))
    assert told == TraceContext(int(event.trace_id, 16), int(request.span_id, 16), sampled=True)

    # The checkpoint after the event, with the Azure SDK's spans of its blob write under it.
    checkpoints = checkpointed(spans)
    under = {span.span_id: span for span in spans}
    wanted = {span.span_id for span in checkpoints}
    sdk = {span.name for span in spans if _ancestor(span, under, wanted)}
    assert sdk == {"BlobClient.upload_blob", "PUT"}  # the SDK's call, and its request


def _ancestor(span: ReceivedSpan, spans: dict[str, ReceivedSpan], wanted: set[str]) -> bool:
    """Whether one of ``wanted`` is among ``span``'s ancestors."""
    parent = span.parent_id
    while parent:
        if parent in wanted:
            return True
        found = spans.get(parent)
        parent = found.parent_id if found is not None else ""
    return False
