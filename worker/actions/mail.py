"""The ``email`` action: a mail through an SMTP server (STARTTLS, implicit TLS, or plain on a trusted
network), with authentication, to/cc, and subject and body templates (text, optionally HTML).

The message id is derived from the action's idempotency key (``<KEY@azureml-events-worker>``, also
in ``X-Idempotency-Key``), so a mail sent twice can be recognised.

SMTP failures: replies 4xx, refused or dropped connections and timeouts are transient; replies 5xx
(a rejected login, sender or recipient) are permanent.
"""

from __future__ import annotations

import ssl
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Literal

import aiosmtplib
from pydantic import Field

from worker.actions.base import ActionParams, PlannedAction
from worker.actions.registry import ActionType, register
from worker.actions.retry import RetryPolicy
from worker.actions.secrets import Secret
from worker.actions.services import Services
from worker.actions.templates import HtmlTemplate, Template, context_of
from worker.errors import ActionError, TargetRejected, TargetUnavailable

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
    def __init__(self, params: MailParams, services: Services) -> None:
        self._params = params
        self._port = params.port or _PORTS[params.tls]
        self.target = f"smtp://{params.host}:{self._port}"
        self._tls: ssl.SSLContext | None = None

    async def execute(self, action: PlannedAction) -> None:
        params = self._params
        message = build_message(action, params)
        if self._tls is None and params.tls != "none":
            self._tls = ssl.create_default_context()
            if params.ca_file is not None:
                self._tls.load_verify_locations(cafile=params.ca_file)
        try:
            await aiosmtplib.send(
                message,
                hostname=params.host,
                port=self._port,
                username=params.username,
                password=params.password.value if params.password else None,
                use_tls=params.tls == "implicit",
                start_tls=params.tls == "starttls",
                tls_context=self._tls,
                timeout=None,  # the runner bounds each attempt
            )
        except aiosmtplib.SMTPResponseException as exc:
            raise _reply_error(self.target, exc.code, exc.message) from exc
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients
            code = min((r.code for r in refused), default=550)
            text = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in refused)
            raise _reply_error(self.target, code, f"recipients refused: {text}") from exc
        except aiosmtplib.SMTPNotSupported as exc:
            raise ActionError(f"{self.target}: {exc}", transient=False) from exc
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
            raise TargetUnavailable(f"{self.target}: {type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        return None


def _reply_error(target: str, code: int, text: str) -> ActionError:
    message = f"{target}: SMTP {code}: {text}"
    return TargetUnavailable(message) if 400 <= code < 500 else TargetRejected(message)


EMAIL = register(
    ActionType(
        "email",
        MailParams,
        MailExecutor,
        "send a mail through SMTP (subject and body templates)",
        retry=RetryPolicy(attempts=5, first_delay=5.0, max_delay=120.0),
        timeout=60.0,
    )
)
