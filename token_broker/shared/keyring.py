"""The shared cache's keys: AES-256-GCM for values, HMAC-SHA256 for Redis key names, from one Key Vault secret.

``CACHE_ENCRYPTION_KEY_URI`` names a versionless secret holding base64 of 32 random bytes. The newest enabled
version encrypts; the one before it still decrypts (and its key names are still looked up), so a rotation
never empties the cache. Each version's secret is expanded with HKDF into two independent keys: one names
Redis keys (an HMAC of the cache key, so Redis shows no report id, user name or tenant), one encrypts values.
The Redis key is the AES-GCM associated data: a value copied under another key does not decrypt.

A stored value is ``0x01 || version tag (8 bytes) || nonce (12) || ciphertext+tag``. A value whose version
this instance does not know, or that does not authenticate, is a miss, never an error.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..support import redaction
from ..support.errors import BrokerError, ConfigurationError, SettingProblem

log = logging.getLogger(__name__)

SETTING = "CACHE_ENCRYPTION_KEY_URI"
FORMAT = b"\x01"
TAG_BYTES = 8
NONCE_BYTES = 12
#: How often the key versions are listed again (a rotation reaches every instance within this time).
REFRESH_SECONDS = 600.0
#: After a passing failure of the first read, requests skip the shared tier this long before reading again.
RETRY_SECONDS = 30.0
#: Key Vault errors that say the configuration is wrong (not a passing outage).
PERMANENT = frozenset({"keyvault_forbidden", "keyvault_unauthorized", "keyvault_secret_not_found",
                       "keyvault_secret_disabled", "keyvault_secret_empty", "managed_identity_unavailable"})


def _derive(secret: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"token-broker shared cache " + purpose).derive(
        secret)


@dataclass(frozen=True)
class KeyVersion:
    """One version of the cache key, expanded."""

    version: str
    tag: bytes
    name_key: bytes = field(repr=False)
    aead: AESGCM = field(repr=False)

    @classmethod
    def from_secret(cls, version: str, value: str) -> KeyVersion:
        try:
            secret = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            secret = b""
        if len(secret) != 32:
            raise ConfigurationError([SettingProblem(SETTING, f"The secret named by {SETTING} (version {version}) is "
                                     "not base64 of 32 bytes. Store a new version made with 'openssl rand -base64 "
                                     "32'.")], code="cache_encryption_key_invalid")
        tag = hashlib.sha256(version.encode()).digest()[:TAG_BYTES]
        return cls(version, tag, _derive(secret, b"key names"), AESGCM(_derive(secret, b"values")))

    def name(self, namespace: str, canonical: bytes) -> bytes:
        digest = hmac.new(self.name_key, namespace.encode() + b"\x00" + canonical, hashlib.sha256).digest()
        return f"tb:{namespace}:".encode() + base64.urlsafe_b64encode(digest).rstrip(b"=")


class Keyring:
    """The usable key versions, newest first."""

    def __init__(self, versions: Sequence[KeyVersion]) -> None:
        if not versions:
            raise ValueError("a keyring needs at least one key version")
        self.versions = tuple(versions)
        self._by_tag = {v.tag: v for v in versions}

    @property
    def newest(self) -> KeyVersion:
        return self.versions[0]

    def names(self, namespace: str, canonical: bytes) -> list[bytes]:
        """The Redis key of ``canonical`` under each version, newest first."""
        return [v.name(namespace, canonical) for v in self.versions]

    def encrypt(self, name: bytes, plaintext: bytes) -> bytes:
        """Encrypt under the newest version, bound to the Redis key ``name``."""
        newest = self.newest
        nonce = os.urandom(NONCE_BYTES)
        return FORMAT + newest.tag + nonce + newest.aead.encrypt(nonce, plaintext, name)

    def decrypt(self, name: bytes, blob: bytes) -> bytes | None:
        """The plaintext, or None when the version is unknown or the value does not authenticate under ``name``."""
        header = len(FORMAT) + TAG_BYTES
        if len(blob) < header + NONCE_BYTES + 16 or blob[:1] != FORMAT:
            return None
        version = self._by_tag.get(blob[1:header])
        if version is None:
            return None
        try:
            return version.aead.decrypt(blob[header:header + NONCE_BYTES], blob[header + NONCE_BYTES:], name)
        except InvalidTag:
            return None


class KeyringSource:
    """Loads the keyring from Key Vault on first use and lists the versions again every ``REFRESH_SECONDS``.

    ``read`` returns ``(version, base64 value)`` pairs, newest first (``KeyVaultKeyVersions.read``). A first
    load that fails for a configuration reason raises :class:`ConfigurationError` naming the setting; a
    passing outage raises the Key Vault error (the caller then skips the shared tier). A failed refresh
    keeps the keys already loaded.
    """

    def __init__(self, read: Callable[[], list[tuple[str, str]]], *, clock: Callable[[], float] = time.monotonic,
                 refresh_seconds: float = REFRESH_SECONDS) -> None:
        self._read = read
        self._clock = clock
        self._refresh_seconds = refresh_seconds
        self._keyring: Keyring | None = None
        self._due = 0.0
        self._failure: BrokerError | None = None  # a passing failure of the first read, until _due
        self._lock = threading.Lock()
        self.problem: ConfigurationError | None = None

    def current(self) -> Keyring:
        keyring = self._keyring
        if keyring is not None and self._clock() < self._due:
            return keyring
        with self._lock:
            if self._clock() < self._due:
                if self._keyring is not None:
                    return self._keyring
                if self._failure is not None:
                    raise self._failure  # Key Vault failed moments ago: do not make every request wait on it
            try:
                self._keyring = self._load()
                self.problem = self._failure = None
            except BrokerError as err:
                if self._keyring is None:
                    failure = self._problem(err)
                    if not isinstance(failure, ConfigurationError):
                        self._failure = failure
                        self._due = self._clock() + RETRY_SECONDS
                        log.warning("Reading %s failed (%s); the shared cache is skipped for %d s", SETTING,
                                    failure.code, RETRY_SECONDS)
                    raise failure from err
                log.warning("Re-reading %s failed (%s); keeping the keys already loaded", SETTING,
                            getattr(err, "code", type(err).__name__))
            self._due = self._clock() + self._refresh_seconds
            return self._keyring

    def _load(self) -> Keyring:
        versions = [KeyVersion.from_secret(version, value) for version, value in self._read()]
        redaction.register_secrets([v.name_key.hex() for v in versions])
        previous = self._keyring
        if previous is None or previous.newest.version != versions[0].version:
            log.info("Shared cache key: version %s encrypts%s", versions[0].version,
                     f", version {versions[1].version} still decrypts" if len(versions) > 1 else "")
        return Keyring(versions)

    def _problem(self, err: BrokerError) -> BrokerError:
        if isinstance(err, ConfigurationError):
            self.problem = err
            return err
        if err.code not in PERMANENT:
            return err
        self.problem = ConfigurationError([SettingProblem(SETTING, f"The shared cache's encryption key cannot be "
                                           f"used: {err.detail}")], code="cache_encryption_key_unusable")
        return self.problem
