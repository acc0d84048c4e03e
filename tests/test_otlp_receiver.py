"""The test bed's OTLP receiver decodes what OpenTelemetry's own OTLP/HTTP exporter posts."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags

from tests.otlp import otlp_receiver

pytestmark = pytest.mark.integration


async def test_spans_exported_by_the_sdk_arrive_decoded() -> None:
    async with otlp_receiver() as receiver:
        provider = TracerProvider(resource=Resource.create({"service.name": "probe"}))
        exporter = OTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces")
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("probe")
        producer = SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, True, TraceFlags(1))

        def export() -> None:
            with tracer.start_as_current_span("process", kind=SpanKind.CONSUMER, links=[Link(producer)]) as parent:
                parent.set_attribute("messaging.system", "eventhubs")
                with tracer.start_as_current_span("attempt"):
                    pass
            provider.shutdown()

        await asyncio.to_thread(export)
        spans = await receiver.until(lambda spans: len(spans) == 2)
    by_name = {span.name: span for span in spans}
    assert by_name["attempt"].parent_id == by_name["process"].span_id
    assert by_name["process"].kind == "SPAN_KIND_CONSUMER"
    assert by_name["process"].attributes == {"messaging.system": "eventhubs"}
    assert by_name["process"].links == [("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")]
    assert by_name["process"].resource["service.name"] == "probe"
