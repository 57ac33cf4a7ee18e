"""Secrets read from Key Vault at run time with the app's identity: cached, re-read on demand.

A rotated secret is picked up without a restart: when Azure AD rejects the credential, the token
service calls :meth:`KeyVaultSecret.reload` and retries once with the new value. Every value read
is registered with the log redaction filter before it is used.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from ..config.identity import AppIdentity
from ..support import redaction, telemetry
from ..support.errors import KeyVaultError
from .identity import app_credential

log = logging.getLogger(__name__)
T = TypeVar("T")


class StaticSecret:
    """A secret given directly in an app setting."""

    def __init__(self, value: str, *, setting: str) -> None:
        self._value = value
        self.setting = setting
        self.from_key_vault = False

    def __repr__(self) -> str:
        return f"StaticSecret(setting={self.setting})"

    def get(self) -> str:
        return self._value

    def reload(self) -> bool:
        return False  # an app setting only changes with a restart


class KeyVaultSecret:
    """A secret identified by a Key Vault secret identifier, read with the platform identity."""

    def __init__(self, uri: str, *, setting: str, identity: AppIdentity, timeout: float) -> None:
        parts = urlsplit(uri)
        segments = parts.path.strip("/").split("/")
        self.uri = uri
        self.setting = setting
        self.from_key_vault = True
        self._vault_url = f"https://{parts.netloc}"
        self._name = segments[1]
        self._version = segments[2] if len(segments) > 2 else None
        self._identity = identity
        self._timeout = timeout
        self._value: str | None = None
        self._lock = threading.Lock()
        self.reads = 0

    def __repr__(self) -> str:
        return f"KeyVaultSecret(setting={self.setting}, uri={self.uri})"

    def get(self) -> str:
        """The cached value, read from the vault on first use."""
        value = self._value
        if value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._read()
                value = self._value
        return value

    def reload(self) -> bool:
        """Read the secret again; True when the value changed (a rotation)."""
        with self._lock:
            previous, self._value = self._value, self._read()
        changed = previous != self._value
        log.info("Re-read %s from Key Vault: %s", self.setting, "a new value" if changed else "unchanged")
        return changed

    def _read(self) -> str:
        from azure.keyvault.secrets import SecretClient

        credential = app_credential(self._identity)
        # Bounded: two retries, short back-off and timeouts, so a caller never waits minutes on a vault.
        client = SecretClient(self._vault_url, credential, retry_total=2, retry_backoff_max=2,
                              connection_timeout=self._timeout, read_timeout=self._timeout)
        where = f"{self.setting} ({self._name} in {self._vault_url})"
        with telemetry.upstream_call("keyvault", "get_secret"):
            secret = self._get_secret(client, where)
        self.reads += 1
        if not secret.value:
            raise KeyVaultError(f"The secret named by {where} is empty.", code="keyvault_secret_empty",
                                setting=self.setting)
        redaction.register_secrets([secret.value])
        log.info("Read %s from Key Vault (version %s)", self.setting, secret.properties.version)
        return str(secret.value)

    def _get_secret(self, client: Any, where: str) -> Any:
        return _mapped(lambda: client.get_secret(self._name, self._version), where, self.setting, self._identity)


def _mapped(call: Callable[[], T], where: str, setting: str, identity: AppIdentity) -> T:
    """``call()``, with the Key Vault SDK's errors turned into :class:`KeyVaultError` naming ``setting``."""
    from azure.core.exceptions import (
        AzureError,
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
        ServiceRequestError,
    )

    try:
        return call()
    except ResourceNotFoundError as err:
        raise KeyVaultError(f"The secret named by {where} does not exist (or that version does not). Check the "
                            "secret name and version in the URI.", code="keyvault_secret_not_found",
                            setting=setting) from err
    except ClientAuthenticationError as err:  # the vault rejected the identity's token
        raise KeyVaultError(
            f"Key Vault did not accept the token of {identity.describe()} "
            f"for {where}: is the vault in the same tenant as the identity?", code="keyvault_unauthorized",
            setting=setting) from err
    except HttpResponseError as err:
        raise _from_http_error(err, where, setting, identity) from err
    except ServiceRequestError as err:
        raise KeyVaultError(f"Key Vault could not be reached for {where}: check the vault name, its firewall "
                            "and private endpoint settings, and the app's outbound network.",
                            code="keyvault_unreachable", setting=setting) from err
    except AzureError as err:  # e.g. ServiceResponseError: the vault took longer than the read timeout
        raise KeyVaultError(f"Key Vault did not answer in time for {where} ({type(err).__name__}); try again "
                            "shortly. If it persists, check the vault's health and the app's outbound network.",
                            code="keyvault_unreachable", setting=setting, retry_after=5) from err


def _from_http_error(err: object, where: str, setting: str, identity: AppIdentity) -> KeyVaultError:
    status = getattr(err, "status_code", None)
    error = getattr(err, "error", None)
    codes = {getattr(error, "code", None), getattr(getattr(error, "innererror", None), "code", None)}
    text = str(err)
    if status == 403 and ("SecretDisabled" in codes or "disabled secret" in text):
        return KeyVaultError(f"The secret named by {where} is disabled. Enable it, or point {setting} at an enabled "
                             "version.", code="keyvault_secret_disabled", setting=setting)
    if status == 403:
        return KeyVaultError(
            f"Key Vault refused to let {identity.describe()} read {where}. Give it the 'Key Vault "
            "Secrets User' role on the vault (RBAC), or a 'Get' secret permission (access policies), and check the "
            "vault's network rules.", code="keyvault_forbidden", setting=setting)
    if status == 429:
        return KeyVaultError(f"Key Vault is throttling requests for {where}; try again shortly.",
                             code="keyvault_throttled", setting=setting, retry_after=5)
    return KeyVaultError(f"Key Vault answered HTTP {status} for {where}; try again shortly.", setting=setting)


class KeyVaultKeyVersions:
    """The newest enabled versions of a versionless secret (a key that rotates), newest first.

    Used for the shared cache's encryption key: the newest version encrypts, the one before it still
    decrypts. Listing versions needs the secret's metadata ("Key Vault Secrets User" includes it).
    """

    def __init__(self, uri: str, *, setting: str, identity: AppIdentity, timeout: float) -> None:
        parts = urlsplit(uri)
        self.uri = uri
        self.setting = setting
        self._vault_url = f"https://{parts.netloc}"
        self._name = parts.path.strip("/").split("/")[1]
        self._identity = identity
        self._timeout = timeout

    def read(self, count: int = 2) -> list[tuple[str, str]]:
        """``(version, value)`` of the ``count`` newest enabled, currently valid versions, newest first."""
        from azure.keyvault.secrets import SecretClient

        credential = app_credential(self._identity)
        client = SecretClient(self._vault_url, credential, retry_total=2, retry_backoff_max=2,
                              connection_timeout=self._timeout, read_timeout=self._timeout)
        where = f"{self.setting} ({self._name} in {self._vault_url})"
        now = time.time()
        with telemetry.upstream_call("keyvault", "list_secret_versions"):
            listed = _mapped(lambda: list(client.list_properties_of_secret_versions(self._name)), where,
                             self.setting, self._identity)
        usable = [p for p in listed if p.enabled and p.version
                  and (p.not_before is None or p.not_before.timestamp() <= now)
                  and (p.expires_on is None or p.expires_on.timestamp() > now)]
        usable.sort(key=lambda p: p.created_on.timestamp() if p.created_on else 0.0, reverse=True)
        if not usable:
            raise KeyVaultError(f"The secret named by {where} has no enabled version.",
                                code="keyvault_secret_disabled", setting=self.setting)
        found: list[tuple[str, str]] = []
        for properties in usable[:count]:
            versioned = KeyVaultSecret(f"{self.uri}/{properties.version}", setting=self.setting,
                                       identity=self._identity, timeout=self._timeout)
            found.append((str(properties.version), versioned.get()))
        return found

