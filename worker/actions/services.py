"""The clients the actions share: one HTTP session and one source of Azure AD tokens.

Made once per runner and handed to every executor, so connections and tokens are reused across
actions, and closed once at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from worker.actions.http import HttpClient
from worker.actions.tokens import CredentialTokens, TokenSource


@dataclass(frozen=True, slots=True)
class Services:
    http: HttpClient = field(default_factory=HttpClient)
    tokens: TokenSource = field(default_factory=CredentialTokens)

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.tokens.aclose()
