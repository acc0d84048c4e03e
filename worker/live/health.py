"""The health and metrics server: ``/healthz``, ``/readyz`` and ``/metrics`` (Prometheus).

``/healthz`` answers while the event loop runs (a stuck loop fails the probe); ``/readyz`` answers
200 once the hub was reached and the rules loaded, 503 with the reason otherwise.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from worker.settings import OpsSettings

#: Returns None when ready, or why not.
Readiness = Callable[[], str | None]


def application(registry: CollectorRegistry, readiness: Readiness) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"}, dumps=_dumps)

    async def readyz(_: web.Request) -> web.Response:
        reason = readiness()
        if reason is None:
            return web.json_response({"status": "ready"}, dumps=_dumps)
        return web.json_response({"status": "not ready", "reason": reason}, status=503, dumps=_dumps)

    async def metrics(_: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


@contextlib.asynccontextmanager
async def serve(settings: OpsSettings, registry: CollectorRegistry, readiness: Readiness) -> AsyncIterator[int | None]:
    """Serve until the block ends; yields the bound port (None when turned off with port 0)."""
    if settings.port == 0:
        yield None
        return
    runner = web.AppRunner(application(registry, readiness), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        yield settings.port
    finally:
        await runner.cleanup()


def _dumps(value: object) -> str:
    return orjson.dumps(value).decode()
