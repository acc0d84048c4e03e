"""The actions' HTTP client: one aiohttp session, and its failures translated once, here.

Connection failures and timeouts become :class:`~worker.errors.TargetUnavailable`, an invalid URL
:class:`~worker.errors.TargetRejected`; what a response's status means is decided by
:func:`~worker.actions.http.check_status`.
"""

from __future__ import annotations

from datetime import UTC, datetime

import aiohttp

from worker.actions.clients import HttpRequest, HttpResponse
from worker.actions.http import MAX_RESPONSE, check_status
from worker.errors import TargetRejected, TargetUnavailable
from worker.telemetry.spans import NO_TRACER, Tracer


class HttpClient:
    """Sends requests on one shared session, created on first use (inside the running event loop).

    Each request is a client span of ``tracer``, whose W3C ``traceparent`` goes with it."""

    def __init__(self, tracer: Tracer = NO_TRACER) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._tracer = tracer

    async def send(self, request: HttpRequest) -> HttpResponse:
        """Send ``request``; return a 2xx response, else raise TargetUnavailable or TargetRejected."""
        response = await self.exchange(request, limit=MAX_RESPONSE)
        check_status(request, response, datetime.now(UTC))
        return response

    async def exchange(self, request: HttpRequest, *, limit: int) -> HttpResponse:
        """Send ``request``; return the answer, whatever its status (its body cut at ``limit`` bytes)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        sent = dict(request.headers)
        with self._tracer.request(request.method, request.url, sent) as span:
            try:
                async with self._session.request(
                    request.method, request.url, headers=sent, data=request.body, allow_redirects=False
                ) as reply:
                    body = await _read(reply.content, limit)
                    headers = {name.lower(): value for name, value in reply.headers.items()}
            except aiohttp.InvalidURL as exc:
                span.failed("invalid URL", type(exc).__name__)
                raise TargetRejected(f"{request.where}: invalid URL ({exc})") from exc
            except (aiohttp.ClientError, TimeoutError) as exc:
                reason = f"{type(exc).__name__}: {str(exc) or type(exc).__name__}"
                span.failed(reason, type(exc).__name__)
                raise TargetUnavailable(f"{request.where}: {reason}") from exc
            span.set("http.response.status_code", reply.status)
            if reply.status >= 400:
                span.failed(f"HTTP {reply.status}", str(reply.status))
            return HttpResponse(reply.status, headers, body)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _read(content: aiohttp.StreamReader, limit: int) -> bytes:
    """The body up to ``limit`` bytes: a read returns what has arrived, so read until the end or the limit."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
