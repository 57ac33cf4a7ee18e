"""Settings of the client credential and the master user's password: where the secrets come from.

Exactly one client credential: a secret in the app setting (``POWERBI_CLIENT_SECRET``, in Azure a
platform-resolved Key Vault reference), a secret read from Key Vault at run time
(``POWERBI_CLIENT_SECRET_URI``), a certificate in Key Vault (``POWERBI_CLIENT_CERTIFICATE_URI``) or
no secret at all (``POWERBI_CLIENT_ASSERTION=managed_identity``: federation with the managed identity).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .identity import AppIdentity
from .reader import SettingReader, SettingSpec

CREDENTIAL_SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec("POWERBI_CLIENT_SECRET_URI", "Key Vault secret identifier of the client secret, read at run time."),
    SettingSpec("POWERBI_PASSWORD_URI", "Key Vault secret identifier of the master user's password."),
    SettingSpec("POWERBI_CLIENT_CERTIFICATE_URI", "Key Vault secret identifier of a certificate with its private key."),
    SettingSpec("POWERBI_CLIENT_CERTIFICATE_SEND_X5C", "Send the certificate chain (subject name/issuer auth).",
                "false"),
    SettingSpec("POWERBI_CLIENT_ASSERTION", "managed_identity: no secret; federate with the managed identity."),
)

CLIENT_CREDENTIAL_SETTINGS = ("POWERBI_CLIENT_SECRET", "POWERBI_CLIENT_SECRET_URI", "POWERBI_CLIENT_CERTIFICATE_URI",
                              "POWERBI_CLIENT_ASSERTION")
_SECRET_PATH = re.compile(r"^/secrets/[0-9A-Za-z-]{1,127}(/[0-9A-Za-z]{1,64})?/?$")


@dataclass(frozen=True)
class CredentialSettings:
    """Where the client credential and the password come from. Secret values are kept out of ``repr``."""

    kind: str  # "secret" | "secret_uri" | "certificate_uri" | "managed_identity"
    client_secret: str | None = field(default=None, repr=False)
    client_secret_uri: str | None = None
    certificate_uri: str | None = None
    send_x5c: bool = False
    password: str | None = field(default=None, repr=False)
    password_uri: str | None = None
    #: The app's own identity (Key Vault, federation): from the bootstrap settings.
    identity: AppIdentity = field(default_factory=AppIdentity)


def _key_vault_secret_uri(read: SettingReader, name: str) -> str | None:
    value = read.raw(name)
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname or not _SECRET_PATH.match(parts.path) or parts.query:
        hint = " Use the secret behind the certificate: .../secrets/<name>." if "/certificates/" in value else ""
        read.problem(name, f"{name} must be a Key Vault secret identifier such as "
                     f"https://<vault>.vault.azure.net/secrets/<name>[/<version>].{hint}")
        return None
    return value.rstrip("/")


def read_credential_settings(read: SettingReader, *, grant_type: str, identity: AppIdentity) -> CredentialSettings:
    """Read and validate the credential settings, adding problems to ``read``."""
    configured = [name for name in CLIENT_CREDENTIAL_SETTINGS if read.is_set(name)]
    if not configured:
        read.problem("POWERBI_CLIENT_SECRET", "No client credential is configured. Set one of "
                     f"{', '.join(CLIENT_CREDENTIAL_SETTINGS)} (POWERBI_CLIENT_SECRET: the secret's Value from the "
                     "app registration's Certificates & secrets).")
    for extra in configured[1:]:
        read.problem(extra, f"{extra} and {configured[0]} are both set; configure exactly one client credential.")
    secret = read.secret("POWERBI_CLIENT_SECRET", "") if "POWERBI_CLIENT_SECRET" in configured else None
    secret_uri = _key_vault_secret_uri(read, "POWERBI_CLIENT_SECRET_URI")
    certificate_uri = _key_vault_secret_uri(read, "POWERBI_CLIENT_CERTIFICATE_URI")
    read.choice("POWERBI_CLIENT_ASSERTION", ("managed_identity",))
    send_x5c = read.flag("POWERBI_CLIENT_CERTIFICATE_SEND_X5C")
    if send_x5c and not read.is_set("POWERBI_CLIENT_CERTIFICATE_URI"):
        read.problem("POWERBI_CLIENT_CERTIFICATE_SEND_X5C", "POWERBI_CLIENT_CERTIFICATE_SEND_X5C only applies to "
                     "POWERBI_CLIENT_CERTIFICATE_URI; remove it.", severity="warning")
    password = password_uri = None
    if grant_type == "password":
        if read.is_set("POWERBI_PASSWORD") and read.is_set("POWERBI_PASSWORD_URI"):
            read.problem("POWERBI_PASSWORD_URI", "POWERBI_PASSWORD and POWERBI_PASSWORD_URI are both set; keep one.")
        elif read.is_set("POWERBI_PASSWORD_URI"):
            password_uri = _key_vault_secret_uri(read, "POWERBI_PASSWORD_URI")
        else:
            password = read.secret("POWERBI_PASSWORD", "the password grant needs the master user's password "
                                   "(or POWERBI_PASSWORD_URI).")
    else:
        for name in ("POWERBI_PASSWORD", "POWERBI_PASSWORD_URI"):
            if read.is_set(name):
                read.problem(name, f"{name} is ignored with POWERBI_GRANT_TYPE={grant_type}; remove it.",
                             severity="warning")
    kind = {"POWERBI_CLIENT_SECRET": "secret", "POWERBI_CLIENT_SECRET_URI": "secret_uri",
            "POWERBI_CLIENT_CERTIFICATE_URI": "certificate_uri", "POWERBI_CLIENT_ASSERTION": "managed_identity",
            }[configured[0]] if configured else "secret"
    return CredentialSettings(kind=kind, client_secret=secret, client_secret_uri=secret_uri,
                              certificate_uri=certificate_uri,
                              send_x5c=send_x5c, password=password, password_uri=password_uri,
                              identity=identity)

