"""The clients the actions share: HTTP, SMTP, Event Hubs producers, one source of Entra ID tokens, and the Azure cloud.

Made once per runner and handed to every executor, so connections and tokens are reused across
actions, and closed once at the end. These are the actions' I/O edges: each client is the one
module that imports its library, and translates that library's failures into
:class:`~worker.errors.ActionError`. Executors only build what to send, so the action types'
modules (and ``validate`` and ``explain``, which load them) import no network library.
"""

from __future__ import annotations

from worker.actions.clients import TokenSource
from worker.actions.delivery.http_client import HttpClient
from worker.actions.delivery.hub_client import HubProducers
from worker.actions.delivery.smtp_client import SmtpClient
from worker.actions.delivery.tokens import CredentialTokens
from worker.settings import AzureSettings
from worker.telemetry.spans import NO_TRACER, Tracer


class Services:
    """The shared clients; each one not given is made here (and closed by :meth:`aclose`)."""

    def __init__(
        self,
        *,
        http: HttpClient | None = None,
        tokens: TokenSource | None = None,
        smtp: SmtpClient | None = None,
        hubs: HubProducers | None = None,
        azure: AzureSettings | None = None,
        tracer: Tracer = NO_TRACER,
    ) -> None:
        """``tracer``: the client spans of the HTTP client made here."""
        self.azure = azure or AzureSettings()
        self.http = http or HttpClient(tracer)
        self.tokens = tokens or CredentialTokens(authority=self.azure.authority)
        self.smtp = smtp or SmtpClient()
        self.hubs = hubs or HubProducers(self.tokens)

    async def aclose(self) -> None:
        try:
            await self.hubs.aclose()
            await self.smtp.aclose()
            await self.http.aclose()
        finally:
            await self.tokens.aclose()
