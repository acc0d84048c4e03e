"""The actions' SMTP client: sends a mail with aiosmtplib, and translates its failures once, here.

Replies 4xx, refused or dropped connections and timeouts are
:class:`~worker.errors.TargetUnavailable` (transient); replies 5xx (a rejected login, sender or
recipient) are :class:`~worker.errors.TargetRejected` (permanent); an extension the server lacks
(STARTTLS, AUTH) is a permanent :class:`~worker.errors.ActionError`.
"""

from __future__ import annotations

import ssl
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib

from worker.actions.clients import SmtpServer
from worker.errors import ActionError, TargetRejected, TargetUnavailable


class SmtpClient:
    """Sends mails, one connection per mail; TLS contexts are made once per CA file."""

    def __init__(self) -> None:
        self._tls: dict[Path | None, ssl.SSLContext] = {}

    async def send(self, message: EmailMessage, server: SmtpServer) -> None:
        target = server.target
        try:
            await aiosmtplib.send(
                message,
                hostname=server.host,
                port=server.port,
                username=server.username,
                password=server.password,
                use_tls=server.tls == "implicit",
                start_tls=server.tls == "starttls",
                tls_context=None if server.tls == "none" else self._context(server.ca_file),
                timeout=None,  # the runner bounds each attempt
            )
        except aiosmtplib.SMTPResponseException as exc:
            raise _reply_error(target, exc.code, exc.message) from exc
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients
            code = min((r.code for r in refused), default=550)
            text = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in refused)
            raise _reply_error(target, code, f"recipients refused: {text}") from exc
        except aiosmtplib.SMTPNotSupported as exc:
            raise ActionError(f"{target}: {exc}", transient=False) from exc
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
            raise TargetUnavailable(f"{target}: {type(exc).__name__}: {exc}") from exc

    def _context(self, ca_file: Path | None) -> ssl.SSLContext:
        context = self._tls.get(ca_file)
        if context is None:
            context = self._tls[ca_file] = ssl.create_default_context()
            if ca_file is not None:
                context.load_verify_locations(cafile=ca_file)
        return context

    async def aclose(self) -> None:
        return None


def _reply_error(target: str, code: int, text: str) -> ActionError:
    message = f"{target}: SMTP {code}: {text}"
    return TargetUnavailable(message) if 400 <= code < 500 else TargetRejected(message)
