"""HTTP for the actions, without I/O: requests, responses, URL checks, and what a status means.

An HTTP action's executor builds one :class:`HttpRequest` per action; the shared client
(:class:`~worker.actions.delivery.http_client.HttpClient`, the one module that imports aiohttp) sends it.
A response 2xx is success. 408, 429 and 5xx, refused or dropped connections and timeouts are
:class:`~worker.errors.TargetUnavailable` (transient; ``Retry-After`` is kept); any other status is
:class:`~worker.errors.TargetRejected` (permanent). Messages name the method and the URL without its
query string, which may hold a key.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Final
from urllib.parse import urlsplit

import structlog
from pydantic import AfterValidator

from worker.actions.base import PlannedAction
from worker.actions.clients import HttpRequest, HttpResponse, HttpSender
from worker.actions.retry import retry_after_seconds
from worker.actions.templates import Context, JsonTemplate
from worker.errors import TargetRejected, TargetUnavailable
from worker.jsontext import dumps
from worker.masking import MASKER

log = structlog.get_logger("worker.actions")

#: Bytes of a response kept (for error messages and results).
MAX_RESPONSE: Final = 64 * 1024
_EXCERPT: Final = 300


def origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL: the target an action's circuit breaker is kept for."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}".lower()


def check_url(url: str) -> str:
    """A fixed http(s) URL with a host, or ValueError (for parameter validation)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http:// or https:// URL with a host")
    if "{" in parts.netloc:
        raise ValueError(f"{url!r}: the scheme and host of a URL are fixed (templates may fill its path and query)")
    return url


#: A fixed http(s) URL parameter.
Url = Annotated[str, AfterValidator(check_url)]


def check_status(request: HttpRequest, response: HttpResponse, now: datetime) -> None:
    """Raise the error a non-2xx response stands for."""
    status = response.status
    if 200 <= status < 300:
        return
    # Masked whole, then cut: a secret the target echoes is never cut in two, half of it shown.
    excerpt = MASKER.mask(response.body[:MAX_RESPONSE].decode("utf-8", "replace"))[:_EXCERPT].strip()
    message = f"{request.where}: HTTP {status}" + (f": {excerpt}" if excerpt else "")
    if status in (408, 429) or status >= 500:
        raise TargetUnavailable(message, retry_after=retry_after_seconds(response.headers.get("retry-after"), now))
    raise TargetRejected(message)


class HttpExecutor:
    """An action that is one HTTP request: subclasses build the request, this sends it."""

    def __init__(self, client: HttpSender, target: str) -> None:
        self._http = client
        self.target = target

    async def request(self, action: PlannedAction) -> HttpRequest:
        raise NotImplementedError

    async def execute(self, action: PlannedAction) -> None:
        request = await self.request(action)
        response = await self._http.send(request)
        log.debug(
            "action.http",
            rule=action.rule,
            event_id=action.event.id,
            request=request.where,
            status=response.status,
            idempotency_key=action.idempotency_key,
        )

    async def aclose(self) -> None:
        return None


def json_request(
    action: PlannedAction, method: str, url: str, body: object, headers: Mapping[str, str] | None = None
) -> HttpRequest:
    """A JSON request carrying the action's idempotency key (``Idempotency-Key``, and as a UUID in
    ``x-ms-client-request-id``, which Azure services log)."""
    return HttpRequest(
        method,
        url,
        {
            "Content-Type": "application/json",
            "Idempotency-Key": action.idempotency_key,
            "x-ms-client-request-id": action.request_id,
            **(headers or {}),
        },
        dumps(body),
    )


def render_values(templates: Mapping[str, JsonTemplate], context: Context) -> dict[str, object]:
    return {name: template.render(context) for name, template in templates.items()}
