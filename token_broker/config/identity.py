"""Which Azure identity the app itself uses (Key Vault, App Configuration, federation): a value, no SDK.

Built from the bootstrap settings (``AZURE_CLIENT_ID``, ``IDENTITY_ENDPOINT``) by
:attr:`~token_broker.config.bootstrap.Bootstrap.app_identity`; :func:`token_broker.aad.identity.app_credential`
turns it into an azure-identity credential when a configuration needs one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AppIdentity:
    """Which identity the app uses for Azure resources: built from the bootstrap settings, never read here.

    ``client_id`` is ``AZURE_CLIENT_ID`` (a user-assigned identity; None: the system-assigned one);
    ``on_managed_identity_host`` is True where the platform exposes ``IDENTITY_ENDPOINT``.
    """

    client_id: str | None = None
    on_managed_identity_host: bool = False

    def describe(self) -> str:
        """Which identity the credential uses, for messages."""
        if self.on_managed_identity_host:
            return (f"the user-assigned managed identity {self.client_id}" if self.client_id
                    else "the system-assigned identity")
        return "the Azure CLI login (az login)"
