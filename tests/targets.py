"""In-process stand-ins for the actions' targets, on free loopback ports: an aiohttp server for the
HTTP services (webhooks, Azure ML, Data Factory, GitHub, Azure DevOps), an aiosmtpd server for mail,
a self-signed certificate for their TLS, and an Azure AD credential that hands out a fixed token."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SmtpServer  # noqa: N811 - a class, named as one
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from azure.core.credentials import AccessToken
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.servers import free_port


@dataclass(frozen=True)
class Received:
    """One request as the target saw it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        folded = name.lower()
        return next((value for key, value in self.headers.items() if key.lower() == folded), None)

    def json(self) -> Any:
        return orjson.loads(self.body)


#: How the target answers a request: a response, or None to drop the connection without one.
Responder = Callable[[Received], Awaitable[web.StreamResponse | None]]


async def ok(received: Received) -> web.StreamResponse | None:
    return web.json_response({"id": "run-1"})


class HttpTarget:
    """An aiohttp server that records every request (and when it came) and answers through ``respond``."""

    def __init__(self, *, client_max_size: int = 1024**2) -> None:
        self.requests: list[Received] = []
        #: When each request came (``time.monotonic()``), in the order of :attr:`requests`.
        self.arrived: list[float] = []
        self.respond: Responder = ok
        self.port = free_port()
        self._client_max_size = client_max_size
        self._runner: web.AppRunner | None = None
        self._arrival: asyncio.Condition | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def until(self, holds: Callable[[], bool], within: float = 60.0) -> None:
        """Until ``holds()`` is true of what the server has received (checked at each request)."""
        assert self._arrival is not None
        async with asyncio.timeout(within), self._arrival:
            await self._arrival.wait_for(holds)

    async def start(self) -> None:
        self._arrival = asyncio.Condition()
        app = web.Application(client_max_size=self._client_max_size)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        received = Received(
            request.method, request.path, dict(request.query), dict(request.headers), await request.read()
        )
        self.requests.append(received)
        self.arrived.append(time.monotonic())
        assert self._arrival is not None
        async with self._arrival:
            self._arrival.notify_all()
        response = await self.respond(received)
        if response is None:
            assert request.transport is not None
            request.transport.close()  # the connection drops without an answer
            return web.Response()
        return response


class FixedCredential:
    """An azure.core async credential handing out one token, recording the scopes asked for."""

    def __init__(self, token: str = "aad-token-for-tests") -> None:  # noqa: S107 - a test token
        self.token = token
        self.scopes: list[str] = []

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        self.scopes.extend(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> FixedCredential:
        return self

    async def __aexit__(self, *args: object) -> None:
        return None


@dataclass(frozen=True)
class Certificate:
    """A self-signed certificate for 127.0.0.1 and localhost: its PEM file, and a server context."""

    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def make_certificate(directory: Path) -> Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return Certificate(cert_file, key_file)


@dataclass
class Mailbox:
    """What an SMTP server accepted, and how it answers RCPT (``reject``: address -> reply)."""

    messages: list[Envelope] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)
    reject: dict[str, str] = field(default_factory=dict)

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SmtpServer, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.reject:
            return self.reject[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SmtpServer, session: Session, envelope: Envelope) -> str:  # noqa: N802
        self.messages.append(envelope)
        return "250 Message accepted for delivery"

    def authenticator(
        self, server: SmtpServer, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        self.logins.append((login, password))
        return AuthResult(success=(login, password) == ("ml-alerts", "smtp-secret"))


class _Connections:
    """The connections an SMTP server has open; its thread opens and closes them, the test waits."""

    def __init__(self) -> None:
        self._open: set[int] = set()
        self._changed = threading.Condition()

    def opened(self, server: SmtpServer) -> None:
        with self._changed:
            self._open.add(id(server))  # a set: STARTTLS makes the same connection again

    def closed(self, server: SmtpServer) -> None:
        with self._changed:
            self._open.discard(id(server))
            self._changed.notify_all()

    def wait_closed(self, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: not self._open, timeout)


class _CountedSmtp(SmtpServer):
    def __init__(self, handler: Any, *, connections: _Connections, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._connections = connections

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._connections.opened(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        try:
            super().connection_lost(error)
        finally:
            self._connections.closed(self)


class _MailController(Controller):
    def __init__(self, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.connections = _Connections()

    def factory(self) -> SmtpServer:
        return _CountedSmtp(self.handler, connections=self.connections, **self.SMTP_kwargs)


@contextlib.asynccontextmanager
async def mail_server(mailbox: Mailbox, **options: Any) -> AsyncIterator[int]:
    """An aiosmtpd server for ``mailbox`` on a free loopback port (yielded), in its own thread.

    It stops once every connection it accepted has closed: its loop ends with its thread, and would
    leave a connection still open then unclosed (the clients' sockets close as the test's loop runs,
    so the wait runs in a thread)."""
    controller = _MailController(mailbox, hostname="127.0.0.1", port=free_port(), **options)
    controller.start()
    try:
        yield controller.port
    finally:
        closed = await asyncio.to_thread(controller.connections.wait_closed, 30)
        controller.stop()
        assert closed, "the mail server still had connections open 30 s after the test"
