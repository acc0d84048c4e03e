"""The ``email`` action: a mail through an SMTP server, from subject and body templates.

STARTTLS, implicit TLS, or plain on a trusted network; with authentication, to and cc, and a text
body (optionally HTML as well).

The message id is derived from the action's idempotency key (``<KEY@azureml-events-worker>``, also
in ``X-Idempotency-Key``), so a mail sent twice can be recognised.

The executor builds the mail; the shared :class:`~worker.actions.delivery.smtp_client.SmtpClient` (the one
module that imports aiosmtplib) sends it. SMTP failures: replies 4xx, refused or dropped connections
and timeouts are transient; replies 5xx (a rejected login, sender or recipient) are permanent.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Literal

from pydantic import Field

from worker.actions.base import ActionParams, PlannedAction
from worker.actions.clients import Clients, SmtpServer
from worker.actions.secrets import Secret
from worker.actions.templates import HtmlTemplate, Template, context_of

_PORTS = {"starttls": 587, "implicit": 465, "none": 25}


class MailParams(ActionParams):
    host: str
    #: Default: 587 for STARTTLS, 465 for implicit TLS, 25 without TLS.
    port: int | None = Field(default=None, ge=1, le=65535)
    tls: Literal["starttls", "implicit", "none"] = "starttls"
    #: A CA certificate (PEM) to trust besides the system's, for a relay with a private CA.
    ca_file: Path | None = None
    username: str | None = None
    #: ``${env:SMTP_PASSWORD}``.
    password: Secret | None = None
    sender: str
    to: list[str] = Field(min_length=1)
    cc: list[str] = Field(default_factory=list)
    subject: Template
    text: Template
    html: HtmlTemplate | None = None


def build_message(action: PlannedAction, params: MailParams) -> EmailMessage:
    """The mail for one action."""
    context = context_of(action)
    message = EmailMessage()
    message["From"] = params.sender
    message["To"] = ", ".join(params.to)
    if params.cc:
        message["Cc"] = ", ".join(params.cc)
    message["Subject"] = " ".join(params.subject.render(context).split())
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = f"<{action.idempotency_key}@azureml-events-worker>"
    message["X-Idempotency-Key"] = action.idempotency_key
    message.set_content(params.text.render(context))
    if params.html is not None:
        message.add_alternative(params.html.render(context), subtype="html")
    return message


class MailExecutor:
    def __init__(self, params: MailParams, clients: Clients) -> None:
        self._params = params
        self._smtp = clients.smtp
        self._server = SmtpServer(
            params.host,
            params.port or _PORTS[params.tls],
            params.tls,
            params.ca_file,
            params.username,
            params.password.value if params.password else None,
        )
        self.target = self._server.target

    async def execute(self, action: PlannedAction) -> None:
        await self._smtp.send(build_message(action, self._params), self._server)

    async def aclose(self) -> None:
        return None
