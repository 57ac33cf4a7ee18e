"""The function app's own Azure identity, for Key Vault, App Configuration and federation.

On App Service / Azure Functions the platform exposes the managed identity endpoint
(``IDENTITY_ENDPOINT``); ``AZURE_CLIENT_ID`` selects a user-assigned identity. Both are bootstrap
settings (:mod:`token_broker.config.bootstrap`), handed over as an
:class:`~token_broker.config.identity.AppIdentity`. Elsewhere (a developer's
machine) the Azure CLI login is used, so no secret is needed on disk. azure-identity is imported only
here and only when a configuration needs it: it costs a few hundred milliseconds of cold start.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from ..config.identity import AppIdentity
from ..support import telemetry
from ..support.errors import ManagedIdentityUnavailableError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

log = logging.getLogger(__name__)
_lock = threading.Lock()
_credentials: dict[tuple[str | None, bool], TokenCredential] = {}


def app_credential(identity: AppIdentity) -> TokenCredential:
    """The managed identity, or the Azure CLI login off Azure; one per identity per process.

    Sharing one credential per identity shares azure-identity's token cache.
    """
    key = (identity.client_id, identity.on_managed_identity_host)
    with _lock:
        credential = _credentials.get(key)
        if credential is None:
            if identity.on_managed_identity_host:
                from azure.identity import ManagedIdentityCredential

                # Few retries: a caller is waiting, and the endpoint is local to the instance.
                inner: Any = ManagedIdentityCredential(client_id=identity.client_id, retry_total=2,
                                                       retry_backoff_max=1)
            else:
                from azure.identity import AzureCliCredential

                inner = AzureCliCredential(process_timeout=20)
            credential = _NamedFailures(inner, identity)
            _credentials[key] = credential
        return credential


class _NamedFailures:
    """Turns "no token for the app's identity" into an error that says so.

    Without this, the SDKs that use the credential (Key Vault, App Configuration) report an unreachable
    identity endpoint exactly like an unreachable vault.
    """

    def __init__(self, inner: Any, identity: AppIdentity) -> None:
        self._inner = inner
        self._identity = identity
        # azure-identity answers from its own token cache when it can; the span's duration tells which.
        self._upstream = "managed_identity" if identity.on_managed_identity_host else "azure_cli"

    def _fail(self, err: Exception) -> ManagedIdentityUnavailableError:
        log.warning("No token from %s: %s", self._identity.describe(), type(err).__name__)
        return ManagedIdentityUnavailableError(
            f"No token could be obtained as {self._identity.describe()}. On Azure, check that the function app "
            "has that identity assigned and that AZURE_CLIENT_ID is its client ID; locally, run 'az login'.",
            setting="AZURE_CLIENT_ID")

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.exceptions import AzureError

        with telemetry.upstream_call(self._upstream, "get_token"):
            try:
                return self._inner.get_token(*scopes, **kwargs)
            except AzureError as err:
                raise self._fail(err) from err

    def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        from azure.core.exceptions import AzureError

        with telemetry.upstream_call(self._upstream, "get_token"):
            try:
                return self._inner.get_token_info(*scopes, options=options)
            except AzureError as err:
                raise self._fail(err) from err


def reset() -> None:
    """Forget the credentials (tests; the identity environment changed)."""
    with _lock:
        _credentials.clear()
