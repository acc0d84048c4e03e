"""The ``webhook`` action: an HTTP request to any endpoint (an Azure Function, a chat hook, a service).

The body is a JSON template, by default the event as received. Every request carries the action's
idempotency key (``Idempotency-Key``), with ``signature`` an HMAC-SHA256 of the body, and with
``auth: {entra: SCOPE}`` a bearer token from the worker's Entra ID credential (an Azure Function with
built-in authentication, a Logic App, Azure Resource Manager: any endpoint Entra ID protects).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from worker.actions.base import ActionParams, PlannedAction
from worker.actions.clients import Clients, HttpRequest
from worker.actions.http import HttpExecutor, check_url, origin
from worker.actions.secrets import Secret
from worker.actions.templates import JsonTemplate, Template, context_of
from worker.jsontext import dumps
from worker.settings import insecure_url


class Signature(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    #: The HMAC key, from the environment: ``${env:NAME}``.
    secret: Secret
    header: str = "X-Signature-256"
    #: Written before the hex digest.
    prefix: str = "sha256="


class EntraAuth(BaseModel):
    """A bearer token from the worker's Entra ID credential, for ``entra``: the protected application's ID URI
    (``api://...``, ``https://...``) or a scope ending in ``/.default`` (added when missing)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    entra: str = Field(min_length=1)

    @field_validator("entra")
    @classmethod
    def _scope(cls, value: str) -> str:
        value = value.strip()
        if any(char.isspace() for char in value):
            raise ValueError(f"{value!r}: one scope, without spaces (an application ID URI, or URI/.default)")
        return value if value.endswith("/.default") else value.rstrip("/") + "/.default"


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
    #: A bearer token from the worker's Entra ID credential (the ``Authorization`` header).
    auth: EntraAuth | None = None
    idempotency_header: str = "Idempotency-Key"

    @field_validator("url")
    @classmethod
    def _fixed_origin(cls, url: Template) -> Template:
        check_url(url.source)
        return url

    @model_validator(mode="after")
    def _token_over_tls(self) -> Self:
        problem = insecure_url(self.url.source) if self.auth is not None else None
        if problem is not None:
            raise ValueError(f"auth: {problem}")
        return self


def sign(body: bytes, signature: Signature) -> str:
    """The signature header's value: the prefix and the hex HMAC-SHA256 of the body."""
    return signature.prefix + hmac.new(signature.secret.value.encode(), body, hashlib.sha256).hexdigest()


class WebhookExecutor(HttpExecutor):
    def __init__(self, params: WebhookParams, clients: Clients) -> None:
        super().__init__(clients.http, origin(params.url.source))
        self._params = params
        self._tokens = clients.tokens

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
        if params.auth is not None:
            headers["Authorization"] = f"Bearer {await self._tokens.token(params.auth.entra)}"
        return HttpRequest(params.method, params.url.render(context), headers, body)
