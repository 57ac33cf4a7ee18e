"""The function app's own Azure identity, for Key Vault, App Configuration and federation.

On App Service / Azure Functions the platform exposes the managed identity endpoint
(``IDENTITY_ENDPOINT``); ``AZURE_CLIENT_ID`` selects a user-assigned identity. Elsewhere (a developer's
machine) the Azure CLI login is used, so no secret is needed on disk. azure-identity is imported only
here and only when a configuration needs it: it costs a few hundred milliseconds of cold start.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Any

from .errors import KeyVaultError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

log = logging.getLogger(__name__)
_lock = threading.Lock()
_credentials: dict[str | None, TokenCredential] = {}


def on_managed_identity_host() -> bool:
    """True when the platform offers a managed identity endpoint (App Service, Functions)."""
    return bool(os.environ.get("IDENTITY_ENDPOINT") or os.environ.get("MSI_ENDPOINT"))


def platform_credential(client_id: str | None) -> TokenCredential:
    """The managed identity (user-assigned ``client_id`` if given), or the Azure CLI login off Azure.

    One credential per identity per process, so azure-identity's token cache is shared.
    """
    with _lock:
        credential = _credentials.get(client_id)
        if credential is None:
            if on_managed_identity_host():
                from azure.identity import ManagedIdentityCredential

                # Few retries: a caller is waiting, and the endpoint is local to the instance.
                inner: Any = ManagedIdentityCredential(client_id=client_id, retry_total=2, retry_backoff_max=1)
            else:
                from azure.identity import AzureCliCredential

                inner = AzureCliCredential(process_timeout=20)
            credential = _NamedFailures(inner, client_id)
            _credentials[client_id] = credential
        return credential


class _NamedFailures:
    """Turns "no token for the app's identity" into an error that says so.

    Without this, the SDKs that use the credential (Key Vault, App Configuration) report an unreachable
    identity endpoint exactly like an unreachable vault.
    """

    def __init__(self, inner: Any, client_id: str | None) -> None:
        self._inner = inner
        self._client_id = client_id

    def _fail(self, err: Exception) -> KeyVaultError:
        log.warning("No token from %s: %s", describe(self._client_id), type(err).__name__)
        return KeyVaultError(
            f"No token could be obtained as {describe(self._client_id)}. On Azure, check that the function app "
            "has that identity assigned and that AZURE_CLIENT_ID is its client ID; locally, run 'az login'.",
            code="managed_identity_unavailable", setting="AZURE_CLIENT_ID", title="The app's identity is unavailable")

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.exceptions import AzureError

        try:
            return self._inner.get_token(*scopes, **kwargs)
        except AzureError as err:
            raise self._fail(err) from err

    def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        from azure.core.exceptions import AzureError

        try:
            return self._inner.get_token_info(*scopes, options=options)
        except AzureError as err:
            raise self._fail(err) from err


def describe(client_id: str | None) -> str:
    """Which identity :func:`platform_credential` uses, for messages."""
    if on_managed_identity_host():
        return f"the user-assigned managed identity {client_id}" if client_id else "the system-assigned identity"
    return "the Azure CLI login (az login)"


def reset() -> None:
    """Forget the credentials (tests; the identity environment changed)."""
    with _lock:
        _credentials.clear()
