"""An OTLP/HTTP trace receiver of the test bed's own: what an exporter posts to ``/v1/traces``
(protobuf, gzip or not), decoded into spans the tests read."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.servers import free_port


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    #: "" for a root span.
    parent_id: str
    #: SPAN_KIND_CONSUMER and so on, as the protobuf names them.
    kind: str
    attributes: dict[str, Any]
    #: The spans it links to: (trace id, span id).
    links: list[tuple[str, str]]
    #: STATUS_CODE_OK, STATUS_CODE_ERROR or STATUS_CODE_UNSET.
    status: str
    #: The resource's attributes (service.name...).
    resource: dict[str, Any]


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


@dataclass
class OtlpReceiver:
    port: int
    spans: list[ReceivedSpan] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        export = ExportTraceServiceRequest.FromString(body)
        for resource_spans in export.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    self.spans.append(
                        ReceivedSpan(
                            span.name,
                            span.trace_id.hex(),
                            span.span_id.hex(),
                            span.parent_span_id.hex(),
                            span.SpanKind.Name(span.kind),
                            {a.key: _value(a.value) for a in span.attributes},
                            [(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
                            span.status.StatusCode.Name(span.status.code),
                            resource,
                        )
                    )
        self.arrived.set()
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(), content_type="application/x-protobuf"
        )

    async def until(self, found: Any, within: float = 30) -> list[ReceivedSpan]:
        """Wait until ``found(spans)`` is true; the spans then."""
        async with asyncio.timeout(within):
            while not found(self.spans):
                self.arrived.clear()
                await self.arrived.wait()
        return self.spans


@asynccontextmanager
async def otlp_receiver() -> AsyncIterator[OtlpReceiver]:
    receiver = OtlpReceiver(free_port())
    app = web.Application(client_max_size=64 * 1024**2)
    app.router.add_post("/v1/traces", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", receiver.port).start()
    try:
        yield receiver
    finally:
        await runner.cleanup()
