"""The offline stack's shared cache tier (``python -m devtools --redis``): Debian's ``redis-server`` on loopback,
and the Key Vault holding the cache's encryption key, read with the app's managed identity (both emulated).

The app runs "on App Service" for this: the managed identity emulator's ``IDENTITY_ENDPOINT`` and
``IDENTITY_HEADER``, and ``AZURE_CLIENT_ID`` naming a user-assigned identity the vault lets read secrets.
"""

from __future__ import annotations

import base64
import os

from .entra import EntraEmulator
from .keyvault import KeyVaultEmulator
from .managed_identity import ManagedIdentityEmulator
from .redis_server import RedisServer, RedisServerMissing, redis_server_path
from .tls import DevCertificateAuthority

KEY_SECRET = "cache-encryption-key"


class SharedCacheStack:
    """redis-server + the Key Vault and managed identity emulators, for one offline stack."""

    def __init__(self, ca: DevCertificateAuthority, entra: EntraEmulator) -> None:
        self._ca = ca
        self._entra = entra
        self.redis: RedisServer | None = None
        self.vault: KeyVaultEmulator | None = None
        self.identity: ManagedIdentityEmulator | None = None
        self._client_id = ""

    def start(self, tenant_id: str) -> dict[str, str]:
        """Start everything; returns the platform's environment (managed identity endpoint and header).

        Raises :class:`RedisServerMissing` (its message says what to install) before starting anything.
        """
        redis_server_path()
        self.identity = ManagedIdentityEmulator(entra=self._entra, tenant_id=tenant_id).start()
        identity = self.identity.add_identity()
        self._client_id = identity.client_id
        self.vault = KeyVaultEmulator(ca=self._ca, entra=self._entra, tenant_id=tenant_id).start()
        self.vault.grant_secrets_user(identity.principal_id)
        self.vault.set_secret(KEY_SECRET, base64.b64encode(os.urandom(32)).decode())  # openssl rand -base64 32
        self.redis = RedisServer().start()
        return self.identity.environ()

    def settings(self) -> dict[str, str]:
        """The CACHE_* settings (and AZURE_CLIENT_ID) pointing at these servers."""
        if self.redis is None or self.vault is None:
            return {}
        return {"CACHE_REDIS_HOST": self.redis.address, "CACHE_REDIS_AUTH": "none",
                "CACHE_ENCRYPTION_KEY_URI": f"{self.vault.vault_url}/secrets/{KEY_SECRET}",
                "AZURE_CLIENT_ID": self._client_id}

    def stop(self) -> None:
        for server in (self.redis, self.vault, self.identity):
            if server is not None:
                server.stop()


__all__ = ["KEY_SECRET", "RedisServerMissing", "SharedCacheStack"]
