"""The interfaces of the actions' shared clients, and the records an executor hands them to send.

An executor builds what to send (an :class:`HttpRequest`, a mail and its :class:`SmtpServer`, a
:class:`HubMessage`) and hands it to one of the :class:`Clients`; the clients are the I/O edges
(``http_client``, ``smtp_client``, ``hub_client``, ``tokens``), made once per runner by
:class:`~worker.actions.delivery.services.Services`. Pure: the action types' modules depend on this one, not
on the clients, so loading the rules loads no network library.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol
from urllib.parse import urlsplit

from worker.settings import AzureSettings

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None

    @property
    def where(self) -> str:
        """Method and URL without query string, for messages."""
        parts = urlsplit(self.url)
        return f"{self.method} {parts.scheme}://{parts.netloc}{parts.path}"


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    #: Names in lower case.
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class SmtpServer:
    """Where and how a mail is sent: the server, its TLS, and the login."""

    host: str
    port: int
    tls: Literal["starttls", "implicit", "none"]
    ca_file: Path | None
    username: str | None
    password: str | None = field(repr=False)

    @property
    def target(self) -> str:
        return f"smtp://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class HubDestination:
    """The Event Hub a message goes to, and how it is reached: a connection string, or Azure AD."""

    eventhub: str
    connection_string: str | None = field(repr=False)
    namespace: str | None

    @property
    def target(self) -> str:
        return f"eventhub://{self.namespace or _namespace_of(self.connection_string)}/{self.eventhub}"


@dataclass(frozen=True, slots=True)
class HubMessage:
    """One message to forward: its body, ids and properties, and its partition key (None: no key)."""

    body: bytes
    message_id: str
    properties: dict[str, object]
    partition_key: str | None
    content_type: str = "application/json"


class HttpSender(Protocol):
    async def send(self, request: HttpRequest) -> HttpResponse:
        """Send ``request``; return a 2xx response, else raise TargetUnavailable or TargetRejected."""
        ...

    async def exchange(self, request: HttpRequest, *, limit: int) -> HttpResponse:
        """Send ``request``; return whatever the target answered (its body cut at ``limit`` bytes), for
        callers that read a service's errors themselves. Raises TargetUnavailable when there is no answer."""
        ...


class MailSender(Protocol):
    async def send(self, message: EmailMessage, server: SmtpServer) -> None:
        """Send ``message`` through ``server``. Raises ActionError."""
        ...


class HubSender(Protocol):
    async def send(self, destination: HubDestination, message: HubMessage) -> None:
        """Send ``message`` to ``destination``. Raises ActionError."""
        ...


class TokenSource(Protocol):
    async def token(self, scope: str) -> str:
        """A bearer token for ``scope``. Raises ActionError."""
        ...

    def credential(self) -> AsyncTokenCredential:
        """The credential itself, for SDK clients that take one."""
        ...

    async def aclose(self) -> None: ...


class Clients(Protocol):
    """The clients every executor is given."""

    @property
    def http(self) -> HttpSender: ...

    @property
    def tokens(self) -> TokenSource: ...

    @property
    def smtp(self) -> MailSender: ...

    @property
    def hubs(self) -> HubSender: ...

    @property
    def azure(self) -> AzureSettings:
        """The Azure cloud (ARM, the token scopes) and the Azure ML API version."""
        ...


def _namespace_of(connection_string: str | None) -> str:
    """The host of a connection string's ``Endpoint=sb://HOST/`` (not secret)."""
    text = connection_string or ""
    for part in text.split(";"):
        name, _, value = part.partition("=")
        if name.strip().lower() == "endpoint":
            return value.strip().removeprefix("sb://").rstrip("/")
    return "unknown-namespace"
