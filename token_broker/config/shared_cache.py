"""Settings of the shared cache tier on Redis (Azure Managed Redis): the ``CACHE_*`` part of the contract.

Off unless ``CACHE_REDIS_HOST`` is set; then every instance shares embed tokens, Power BI metadata, the
per-caller rate limit and the executeQueries budget through Redis (docs/CACHING.md). Values are encrypted
with AES-GCM under the key in ``CACHE_ENCRYPTION_KEY_URI`` (a Key Vault secret), so the tier fails closed:
Redis without that setting is a configuration error, never plaintext tokens in Redis.

``CACHE_REDIS_AUTH``: ``entra`` (the app's managed identity, through ``redis-entraid``; Azure Managed Redis'
default), ``password`` (``CACHE_REDIS_PASSWORD``, a Key Vault reference the platform resolves) or ``none``
(development only: accepted only for a loopback host). TLS is always on except with ``none`` on loopback.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .reader import SettingReader, SettingSpec

SHARED_CACHE_SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec("CACHE_REDIS_HOST", "Redis host:port of the shared cache tier (Azure Managed Redis: "
                "<name>.<region>.redis.azure.net:10000); unset: memory caches only."),
    SettingSpec("CACHE_REDIS_AUTH", "entra (the app's managed identity) | password (CACHE_REDIS_PASSWORD) | none "
                "(loopback only, development).", "entra"),
    SettingSpec("CACHE_REDIS_PASSWORD", "Redis access key for CACHE_REDIS_AUTH=password (a Key Vault reference).",
                secret=True),
    SettingSpec("CACHE_ENCRYPTION_KEY_URI", "Versionless Key Vault secret identifier of the shared cache's AES-256 "
                "key (base64 of 32 random bytes); required with CACHE_REDIS_HOST."),
)
AUTH_MODES = ("entra", "password", "none")
_HOST_PORT = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(?P<port>[0-9]{1,5})$")
_SECRET_PATH = re.compile(r"^/secrets/[0-9A-Za-z-]{1,127}/?$")


@dataclass(frozen=True)
class SharedCacheSettings:
    """Where the shared tier is and how to reach it; ``enabled`` is False without ``CACHE_REDIS_HOST``."""

    host: str | None = None
    port: int = 6380
    auth: str = "entra"
    password: str | None = field(default=None, repr=False)
    key_uri: str | None = None

    @property
    def enabled(self) -> bool:
        return self.host is not None

    @property
    def tls(self) -> bool:
        """TLS everywhere except ``none`` on loopback (development)."""
        return self.auth != "none"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and addresses in 127.0.0.0/8 or ``::1``."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_shared_cache_settings(read: SettingReader) -> SharedCacheSettings:
    """The ``CACHE_*`` settings, every problem reported with its setting (values never echoed)."""
    related = ("CACHE_REDIS_AUTH", "CACHE_REDIS_PASSWORD", "CACHE_ENCRYPTION_KEY_URI")
    if not read.is_set("CACHE_REDIS_HOST"):
        for name in related:
            if read.is_set(name):
                read.problem(name, f"{name} is ignored without CACHE_REDIS_HOST; set CACHE_REDIS_HOST to use the "
                             "shared cache tier, or remove it.", severity="warning")
        return SharedCacheSettings()
    raw = read.raw("CACHE_REDIS_HOST") or ""
    match = _HOST_PORT.match(raw)
    host, port = (match.group("host").strip("[]"), int(match.group("port"))) if match else (None, 0)
    if host is None or not 0 < port < 65536:
        read.problem("CACHE_REDIS_HOST", "CACHE_REDIS_HOST must be host:port, such as "
                     "contoso-cache.westeurope.redis.azure.net:10000 (Azure Managed Redis listens on 10000, TLS).")
        host = None
    auth = read.choice("CACHE_REDIS_AUTH", AUTH_MODES) or "entra"
    if auth == "none" and host is not None and not is_loopback(host):
        read.problem("CACHE_REDIS_AUTH", "CACHE_REDIS_AUTH=none is accepted only for a Redis on loopback "
                     "(development). Use entra (the app's managed identity) or password for a remote Redis.")
    password = None
    if auth == "password":
        password = read.secret("CACHE_REDIS_PASSWORD", "CACHE_REDIS_AUTH=password needs the Redis access key "
                               "(a Key Vault reference: @Microsoft.KeyVault(SecretUri=...)).")
    elif read.is_set("CACHE_REDIS_PASSWORD"):
        read.problem("CACHE_REDIS_PASSWORD", f"CACHE_REDIS_PASSWORD is ignored with CACHE_REDIS_AUTH={auth}; remove "
                     "it.", severity="warning")
    key_uri = _key_uri(read)
    if host is None:
        return SharedCacheSettings()
    return SharedCacheSettings(host=host, port=port, auth=auth, password=password, key_uri=key_uri)


def _key_uri(read: SettingReader) -> str | None:
    name = "CACHE_ENCRYPTION_KEY_URI"
    value = read.raw(name)
    if value is None:
        read.problem(name, "CACHE_ENCRYPTION_KEY_URI is not set, and the shared cache never stores tokens "
                     "unencrypted. Create a Key Vault secret holding base64 of 32 random bytes (openssl rand -base64 "
                     "32) and set CACHE_ENCRYPTION_KEY_URI to its versionless identifier, "
                     "https://<vault>.vault.azure.net/secrets/<name>.")
        return None
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
        read.problem(name, "CACHE_ENCRYPTION_KEY_URI must be a Key Vault secret identifier such as "
                     "https://<vault>.vault.azure.net/secrets/<name>.")
        return None
    if not _SECRET_PATH.match(parts.path):
        read.problem(name, "CACHE_ENCRYPTION_KEY_URI must be the versionless identifier "
                     "https://<vault>.vault.azure.net/secrets/<name>: the newest enabled version encrypts and the one "
                     "before it still decrypts, so that the key can be rotated without a restart.")
        return None
    return value.rstrip("/")
