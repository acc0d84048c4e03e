"""Azure AD tokens for the actions that call Azure services: the shared token source.

:class:`CredentialTokens` is the :class:`~worker.actions.clients.TokenSource` the actions use. The
worker takes tokens from an azure.core async credential, by default azure-identity's
``DefaultAzureCredential`` (managed identity in production, environment or Azure CLI login
elsewhere), created on first use. Each action names its scope; tokens are cached by the credential.
"""

from __future__ import annotations

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import AzureError
from azure.identity import CredentialUnavailableError

from worker.errors import ActionError, TargetUnavailable
from worker.masking import MASKER


class CredentialTokens:
    """Tokens from ``credential``, or from a ``DefaultAzureCredential`` made on first use (and closed here),
    signing in at ``authority`` (the cloud's Entra ID host; None: the public cloud's)."""

    def __init__(self, credential: AsyncTokenCredential | None = None, *, authority: str | None = None) -> None:
        self._credential = credential
        self._owned = credential is None
        self._authority = authority

    def credential(self) -> AsyncTokenCredential:
        if self._credential is None:
            from azure.identity.aio import DefaultAzureCredential  # noqa: PLC0415 - heavy, and only for Entra ID

            authority = self._authority
            self._credential = DefaultAzureCredential(**({"authority": authority} if authority else {}))
        return self._credential

    async def token(self, scope: str) -> str:
        try:
            access = await self.credential().get_token(scope)
        except CredentialUnavailableError as exc:
            raise ActionError(
                f"no Azure AD credential is available for {scope} ({exc.message}); give the worker a managed "
                "identity, or sign in (environment variables or the Azure CLI)",
                transient=False,
            ) from exc
        except AzureError as exc:
            raise TargetUnavailable(f"cannot get an Azure AD token for {scope}: {exc.message}") from exc
        MASKER.add(access.token)  # a target may echo it back in an error
        return access.token

    async def aclose(self) -> None:
        if self._owned and self._credential is not None:
            await self._credential.close()
            self._credential = None
