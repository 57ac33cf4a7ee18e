"""The shared tier, built from the settings: one Redis connection, one keyring, the L2 cache and the counters.

:mod:`token_broker.broker` builds it when ``CACHE_REDIS_HOST`` is set and hands its parts to the embed
service, the proxy's query budget and the rate limiter, which know only the protocols of
:mod:`token_broker.support.shared`. Nothing here touches the network until the first request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..aad.key_vault import KeyVaultKeyVersions
from ..config.identity import AppIdentity
from ..config.shared_cache import SharedCacheSettings
from ..support.errors import BrokerError, ConfigurationError, SettingProblem
from .cache import SharedCacheTier
from .connection import UNAVAILABLE, RedisConnection
from .counters import SharedCountersTier
from .keyring import SETTING, KeyringSource


@dataclass
class SharedTier:
    """Everything the broker shares between instances through Redis."""

    settings: SharedCacheSettings
    connection: RedisConnection
    keys: KeyringSource
    cache: SharedCacheTier
    counters: SharedCountersTier

    @classmethod
    def build(cls, settings: SharedCacheSettings, identity: AppIdentity, *, http_timeout: float) -> SharedTier:
        if settings.key_uri is None or settings.host is None:  # load_settings refuses this; never plaintext
            raise ConfigurationError([SettingProblem(SETTING, f"{SETTING} is required with CACHE_REDIS_HOST.")])
        versions = KeyVaultKeyVersions(settings.key_uri, setting=SETTING, identity=identity,
                                       timeout=min(http_timeout, 10.0))
        keys = KeyringSource(versions.read)
        connection = RedisConnection(settings, identity)
        # A holder's lock covers its upstream calls (an Azure AD token, metadata, GenerateToken).
        cache = SharedCacheTier(connection, keys, lock_seconds=min(max(2 * http_timeout, 5.0), 30.0))
        return cls(settings, connection, keys, cache, SharedCountersTier(connection, keys))

    def problems(self, *, probe: bool = False) -> list[SettingProblem]:
        """The encryption key's problem, if any; ``probe`` reads the key first when it was never read."""
        if probe:
            try:
                self.keys.current()
            except ConfigurationError:
                pass
            except BrokerError:
                return []  # a passing Key Vault outage: the tier is skipped, nothing to fix
        problem = self.keys.problem
        return list(problem.problems) if problem is not None else []

    def health(self) -> dict[str, Any]:
        """Non-secret facts for /api/health (no network)."""
        return {"host": self.settings.address, "auth": self.settings.auth, "tls": self.settings.tls,
                "circuit": "open" if self.connection.breaker.is_open else "closed"}

    def ping(self) -> bool:
        """One PING (the doctor)."""
        return self.connection.call("ping", lambda r: r.ping()) not in (UNAVAILABLE, False)
