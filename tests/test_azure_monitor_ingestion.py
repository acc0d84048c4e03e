"""Azure Monitor's exporter, as the worker sets it up from ``APPLICATIONINSIGHTS_CONNECTION_STRING``,
posting an event's span to a local ingestion endpoint named in the connection string."""

from __future__ import annotations

import asyncio
import gzip
import json

import pytest
from aiohttp import web

from tests.servers import free_port
from tests.test_tracer import SCOPE, event
from worker.telemetry.otel import OtelTracer, provider
from worker.telemetry.setup import tracing_settings

pytestmark = pytest.mark.integration

PRODUCER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def test_the_exporter_posts_its_envelopes_to_the_ingestion_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL", "true")
    received: list[dict[str, object]] = []
    arrived = asyncio.Event()

    async def track(request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        received.extend(json.loads(body))
        arrived.set()
        return web.json_response({"itemsReceived": len(received), "itemsAccepted": len(received), "errors": []})

    app = web.Application()
    # The exporter joins the endpoint and its path with slashes to spare ("////v2.1/track"), which
    # the service takes: so does this one.
    app.router.add_post(r"/{slashes:/*}v2.1/track", track)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        connection = (
            f"InstrumentationKey=00000000-0000-0000-0000-000000000001;IngestionEndpoint=http://127.0.0.1:{port}/"
        )
        environ = {"APPLICATIONINSIGHTS_CONNECTION_STRING": connection}
        made = provider(tracing_settings(environ), environ, role="pipeline")
        tracer = OtelTracer(made, SCOPE)

        def export() -> None:
            tracer.event(event({"traceparent": PRODUCER}), rules=["tell"], late=False, memo=None).end()
            tracer.close()  # the batch is sent now

        await asyncio.to_thread(export)
        async with asyncio.timeout(30):
            await arrived.wait()
    finally:
        await runner.cleanup()
    [request] = [envelope for envelope in received if envelope["data"]["baseData"].get("name") == "process ml-events"]  # type: ignore[index]
    data = request["data"]["baseData"]  # type: ignore[index]
    # A consumer span is a request to Application Insights: with the event's attributes, and its
    # link to the producer kept as the exporter's _MS.links property.
    assert request["name"] == "Microsoft.ApplicationInsights.Request"
    assert data["properties"]["cloudevents.event_id"] == "ev-1"
    assert request["tags"]["ai.cloud.role"] == "azml-worker"  # type: ignore[index]
    assert data["properties"]["cloudevents.event_type"] == "Microsoft.MachineLearningServices.RunCompleted"
    assert json.loads(data["properties"]["_MS.links"]) == [
        {"operation_Id": "0af7651916cd43dd8448eb211c80319c", "id": "b7ad6b7169203331"}
    ]
    assert all(envelope["iKey"] == "00000000-0000-0000-0000-000000000001" for envelope in received)
