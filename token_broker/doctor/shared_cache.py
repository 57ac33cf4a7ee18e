"""The doctor's checks of the shared cache tier (``CACHE_REDIS_HOST``): the encryption key, then Redis itself.

The key is read as the app reads it (:class:`~token_broker.shared.keyring.KeyringSource` over Key Vault's version
list). Redis is reached with the app's own client (TLS, Entra ID or password): a PING proves the connection and
the authentication, an encrypted value written, read back, decrypted and deleted proves the database accepts
writes (not full) and the key works end to end.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from ..support.errors import BrokerError, ConfigurationError
from .check import FAIL, OK, Check, failed

if TYPE_CHECKING:
    from ..shared.tier import SharedTier

_FIXES = {
    "redis_unreachable": "Check CACHE_REDIS_HOST (host:port; Azure Managed Redis listens on 10000), the private "
                         "endpoint and its DNS zone, and the app's VNet integration.",
    "redis_timeout": "Redis did not answer in time: check its health and load, and the network path to it.",
    "redis_auth_failed": "CACHE_REDIS_AUTH=entra: assign the app's user-assigned identity (AZURE_CLIENT_ID) an access "
                         "policy on the Azure Managed Redis database, with its object id as the user. "
                         "CACHE_REDIS_AUTH=password: CACHE_REDIS_PASSWORD is not the current access key.",
    "redis_cluster_policy": "The database uses the OSS clustering policy, which needs a cluster-aware client: create "
                            "it with the Enterprise clustering policy (EnterpriseCluster; or NoCluster), which the "
                            "broker's client and its MGET across key versions need.",
    "redis_out_of_memory": "The database is full under the noeviction policy: scale it up, or use volatile-lru "
                           "(every key the broker writes has a TTL).",
}


def shared_cache_checks(shared: SharedTier) -> list[Check]:
    """The key check, and the Redis checks when the key is usable."""
    from ..shared.connection import error_type

    try:
        keyring = shared.keys.current()
    except ConfigurationError as err:  # the problem's own message names the setting and the fix
        message = " ".join(p.message for p in err.problems)
        return [Check("shared_cache:key", FAIL, message, message, err.code)]
    except BrokerError as err:
        return [failed("shared_cache:key", err)]
    versions = keyring.versions
    found = [Check("shared_cache:key", OK, f"CACHE_ENCRYPTION_KEY_URI: version {versions[0].version} encrypts"
                   + (f", version {versions[1].version} still decrypts" if len(versions) > 1 else ""))]
    settings = shared.settings
    where = f"{settings.address} ({'TLS' if settings.tls else 'no TLS, loopback'}, auth {settings.auth})"
    client = shared.connection.client()
    step = "ping"
    try:
        client.ping()
        found.append(Check("shared_cache:redis", OK, f"connected and authenticated to {where}"))
        step = "write"
        name = keyring.newest.name("doctor", secrets.token_bytes(16))
        client.set(name, keyring.encrypt(name, b"doctor"), px=10_000)
        back = client.get(name)
        client.delete(name)
        if back is None or keyring.decrypt(name, back) != b"doctor":
            found.append(Check("shared_cache:roundtrip", FAIL, "a value written to Redis did not come back intact",
                               "Check that CACHE_REDIS_HOST names the database itself, not a proxy that drops "
                               "writes.", "shared_cache_roundtrip"))
        else:
            found.append(Check("shared_cache:roundtrip", OK, "an encrypted value written, read back and deleted"))
    except Exception as err:  # redis-py's errors, the Entra ID credential's: each mapped to its fix
        kind = error_type(err)
        check = "shared_cache:redis" if step == "ping" else "shared_cache:roundtrip"
        found.append(Check(check, FAIL, f"Redis at {where}: {kind}", _FIXES.get(kind, f"Redis answered {kind}."),
                           kind))
    return found
