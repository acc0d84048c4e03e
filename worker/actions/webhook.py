"""The ``webhook`` action: an HTTP request to any endpoint (an Azure Function, a chat hook, a service).

The body is a JSON template, by default the event as received. Every request carries the action's
idempotency key (``Idempotency-Key``) and, with ``signature``, an HMAC-SHA256 of the body.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from worker.actions.base import ActionParams, PlannedAction
from worker.actions.clients import Clients, HttpRequest
from worker.actions.http import HttpExecutor, check_url, origin
from worker.actions.secrets import Secret
from worker.actions.templates import JsonTemplate, Template, context_of
from worker.jsontext import dumps


class Signature(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    #: The HMAC key, from the environment: ``${env:NAME}``.
    secret: Secret
    header: str = "X-Signature-256"
    #: Written before the hex digest.
    prefix: str = "sha256="


class WebhookParams(ActionParams):
    #: A template; its scheme and host are fixed.
    url: Template
    method: Literal["POST", "PUT", "PATCH", "GET", "DELETE"] = "POST"
    #: Header values are templates.
    headers: dict[str, Template] = Field(default_factory=dict)
    #: Headers whose values are secrets (``${env:NAME}``), such as ``x-functions-key``.
    secret_headers: dict[str, Secret] = Field(default_factory=dict)
    #: A JSON template; by default the event as received. ``null`` sends no body.
    body: JsonTemplate | None = JsonTemplate.compile("{{ event }}")
    signature: Signature | None = None
    idempotency_header: str = "Idempotency-Key"

    @field_validator("url")
    @classmethod
    def _fixed_origin(cls, url: Template) -> Template:
        check_url(url.source)
        return url


def sign(body: bytes, signature: Signature) -> str:
    """The signature header's value: the prefix and the hex HMAC-SHA256 of the body."""
    return signature.prefix + hmac.new(signature.secret.value.encode(), body, hashlib.sha256).hexdigest()


class WebhookExecutor(HttpExecutor):
    def __init__(self, params: WebhookParams, clients: Clients) -> None:
        super().__init__(clients.http, origin(params.url.source))
        self._params = params

    async def request(self, action: PlannedAction) -> HttpRequest:
        params, context = self._params, context_of(action)
        body = None if params.body is None else dumps(params.body.render(context))
        headers = {name: template.render(context) for name, template in params.headers.items()}
        headers.update((name, secret.value) for name, secret in params.secret_headers.items())
        if body is not None:
            headers.setdefault("Content-Type", "application/json")
        headers[params.idempotency_header] = action.idempotency_key
        if params.signature is not None:
            headers[params.signature.header] = sign(body or b"", params.signature)
        return HttpRequest(params.method, params.url.render(context), headers, body)
