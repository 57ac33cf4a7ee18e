"""Client credentials: what the broker proves to Azure AD that it is the app registration.

A credential gives MSAL its ``client_credential`` (:meth:`ClientCredential.for_msal`) and can be
re-read (:meth:`ClientCredential.reload`) when Azure AD says it is no longer valid, so a rotated
secret or certificate is picked up without a restart. Kinds: a client secret (from an app setting or
Key Vault), a certificate from Key Vault, and secretless federation with the managed identity.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from typing import Any, Protocol

from ..config.credentials import CredentialSettings
from ..config.identity import AppIdentity
from ..support import redaction
from ..support.errors import ConfigurationError, CredentialError, SettingProblem
from .identity import app_credential
from .key_vault import KeyVaultSecret, StaticSecret

log = logging.getLogger(__name__)


class SecretSource(Protocol):
    """A secret value and where it comes from."""

    setting: str
    from_key_vault: bool

    def get(self) -> str: ...

    def reload(self) -> bool: ...


class ClientCredential(Protocol):
    """The piece of configuration that authenticates the app registration."""

    #: Short, non-secret description for logs and /api/health (e.g. "client secret").
    kind: str

    def for_msal(self) -> Any:
        """The ``client_credential`` argument for ``msal.ConfidentialClientApplication``."""

    def reload(self) -> bool:
        """Re-read the credential from its source; True when it changed (MSAL must then be rebuilt)."""


class ClientSecretCredential:
    """A client secret, from an app setting or from Key Vault."""

    def __init__(self, source: SecretSource) -> None:
        self._source = source
        self.kind = "client secret from Key Vault" if source.from_key_vault else "client secret"

    def __repr__(self) -> str:
        return f"ClientSecretCredential({self._source!r})"

    def for_msal(self) -> str:
        return self._source.get()

    def reload(self) -> bool:
        return self._source.reload()


class CertificateCredential:
    """A certificate with its private key, stored in Key Vault (PEM or PKCS#12, as Key Vault keeps them)."""

    kind = "certificate from Key Vault"

    def __init__(self, source: SecretSource, *, send_x5c: bool) -> None:
        self._source = source
        self._send_x5c = send_x5c

    def __repr__(self) -> str:
        return f"CertificateCredential({self._source!r}, send_x5c={self._send_x5c})"

    def for_msal(self) -> dict[str, str]:
        return certificate_for_msal(self._source.get(), send_x5c=self._send_x5c, setting=self._source.setting)

    def reload(self) -> bool:
        return self._source.reload()


def certificate_for_msal(value: str, *, send_x5c: bool, setting: str) -> dict[str, str]:
    """MSAL's certificate credential from a Key Vault certificate secret (PEM text or base64 PKCS#12)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    key: Any
    try:
        if "-----BEGIN" in value:
            key = serialization.load_pem_private_key(value.encode(), password=None)
            chain = x509.load_pem_x509_certificates(value.encode())
        else:
            key, leaf, extra = pkcs12.load_key_and_certificates(base64.b64decode(value, validate=True), None)
            chain = [c for c in (leaf, *extra) if c is not None]
    except (ValueError, TypeError, binascii.Error) as err:
        raise CredentialError(f"The secret named by {setting} is not a certificate with its private key (PEM or "
                              "PKCS#12 without a password, as Key Vault stores certificates). Point it at the "
                              "secret behind a Key Vault certificate.", code="certificate_invalid",
                              setting=setting) from err
    if key is None or not chain:
        raise CredentialError(f"The secret named by {setting} lacks the private key or the certificate.",
                              code="certificate_invalid", setting=setting)
    leaf_cert = chain[0]
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
    redaction.register_secrets([private_pem])
    credential = {
        "private_key": private_pem,
        "thumbprint": hashlib.sha1(leaf_cert.public_bytes(serialization.Encoding.DER)).hexdigest(),  # noqa: S324
    }
    if send_x5c:  # subject name/issuer authentication: Azure AD validates the chain instead of a thumbprint
        credential["public_certificate"] = "".join(
            c.public_bytes(serialization.Encoding.PEM).decode() for c in chain)
    return credential


class ManagedIdentityAssertion:
    """Secretless: the client assertion is a managed-identity token for the token exchange audience.

    The app registration trusts the user-assigned identity through a federated identity credential.
    azure-identity caches the identity's token; MSAL calls :meth:`assertion` when it needs one.
    """

    kind = "managed identity federation"

    def __init__(self, *, audience: str, identity: AppIdentity) -> None:
        self._scope = audience + "/.default"
        self._identity = identity

    def __repr__(self) -> str:
        return f"ManagedIdentityAssertion(scope={self._scope})"

    def assertion(self) -> str:
        """A managed-identity token for the token exchange audience (cached by azure-identity)."""
        return str(app_credential(self._identity).get_token(self._scope).token)

    def for_msal(self) -> dict[str, Any]:
        return {"client_assertion": self.assertion}

    def reload(self) -> bool:
        return False  # each assertion is fresh; nothing to re-read


def _source(config: CredentialSettings, value: str | None, uri: str | None, *, setting: str, uri_setting: str,
            timeout: float) -> SecretSource:
    if uri:
        return KeyVaultSecret(uri, setting=uri_setting, identity=config.identity, timeout=timeout)
    if value is None:
        raise ConfigurationError([SettingProblem(setting, f"{setting} is not set.")])
    return StaticSecret(value, setting=setting)


def build_client_credential(config: CredentialSettings, *, timeout: float, exchange_audience: str) -> ClientCredential:
    """The client credential ``config`` describes (validated by :func:`~token_broker.config.contract.load_settings`).

    ``timeout`` bounds each Key Vault read; ``exchange_audience`` is the cloud's token exchange audience
    (managed-identity federation).
    """
    if config.kind == "managed_identity":
        return ManagedIdentityAssertion(audience=exchange_audience, identity=config.identity)
    if config.kind == "certificate_uri":
        return CertificateCredential(
            _source(config, None, config.certificate_uri, setting="POWERBI_CLIENT_CERTIFICATE_URI",
                    uri_setting="POWERBI_CLIENT_CERTIFICATE_URI", timeout=timeout),
            send_x5c=config.send_x5c)
    return ClientSecretCredential(_source(config, config.client_secret, config.client_secret_uri,
                                          setting="POWERBI_CLIENT_SECRET", uri_setting="POWERBI_CLIENT_SECRET_URI",
                                          timeout=timeout))


def build_password_source(config: CredentialSettings, *, grant_type: str, timeout: float) -> SecretSource | None:
    """Where the master user's password comes from (password grant only)."""
    if grant_type != "password":
        return None
    return _source(config, config.password, config.password_uri, setting="POWERBI_PASSWORD",
                   uri_setting="POWERBI_PASSWORD_URI", timeout=timeout)
