"""The actions' SMTP client: sends a mail with aiosmtplib, and translates its failures once, here.

Replies 4xx, refused or dropped connections and timeouts are
:class:`~worker.errors.TargetUnavailable` (transient); replies 5xx (a rejected login, sender or
recipient) are :class:`~worker.errors.TargetRejected` (permanent); an extension the server lacks
(STARTTLS, AUTH) is a permanent :class:`~worker.errors.ActionError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib

from worker.actions.clients import SmtpServer
from worker.errors import ActionError, TargetRejected, TargetUnavailable


class SmtpClient:
    """Sends mails, one connection per mail, closed before :meth:`send` returns; TLS contexts are made
    once per CA file."""

    def __init__(self) -> None:
        self._tls: dict[Path | None, ssl.SSLContext] = {}

    async def send(self, message: EmailMessage, server: SmtpServer) -> None:
        target = server.target
        client = aiosmtplib.SMTP(
            hostname=server.host,
            port=server.port,
            use_tls=server.tls == "implicit",
            start_tls=server.tls == "starttls",
            tls_context=None if server.tls == "none" else self._context(server.ca_file),
            timeout=None,  # the runner bounds each attempt
        )
        connection: asyncio.BaseTransport | None = None
        try:
            await client.connect()  # and starts TLS
            connection = client.transport
            if server.username is not None and server.password is not None:
                await client.login(server.username, server.password)
            await client.send_message(message)
            await client.quit()
        except aiosmtplib.SMTPResponseException as exc:
            await _quit(client)
            raise _reply_error(target, exc.code, exc.message) from exc
        except aiosmtplib.SMTPRecipientsRefused as exc:
            await _quit(client)
            refused = exc.recipients
            code = min((r.code for r in refused), default=550)
            text = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in refused)
            raise _reply_error(target, code, f"recipients refused: {text}") from exc
        except aiosmtplib.SMTPNotSupported as exc:
            raise ActionError(f"{target}: {exc}", transient=False) from exc
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
            raise TargetUnavailable(f"{target}: {type(exc).__name__}: {exc}") from exc
        finally:
            # The dialogue is over (QUIT answered, or it failed, or the attempt's time ran out): close
            # the socket now. A TLS connection's graceful close would go on in the background, waiting
            # for the server's close_notify, and a loop that ends first (a worker stopping) would leave
            # its socket open; a server that stalls would hold a QUIT sent after a failure.
            if isinstance(connection, asyncio.WriteTransport):
                connection.abort()

    def _context(self, ca_file: Path | None) -> ssl.SSLContext:
        context = self._tls.get(ca_file)
        if context is None:
            context = self._tls[ca_file] = ssl.create_default_context()
            if ca_file is not None:
                context.load_verify_locations(cafile=ca_file)
        return context

    async def aclose(self) -> None:
        return None


async def _quit(client: aiosmtplib.SMTP) -> None:
    """End a dialogue the server refused a step of, as a client should; it may have hung up already."""
    with contextlib.suppress(aiosmtplib.SMTPException, OSError):
        await client.quit()


def _reply_error(target: str, code: int, text: str) -> ActionError:
    message = f"{target}: SMTP {code}: {text}"
    return TargetUnavailable(message) if 400 <= code < 500 else TargetRejected(message)
