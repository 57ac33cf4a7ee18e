"""Client credentials: what the broker proves to Azure AD that it is the app registration.

A credential is a small object with :meth:`ClientCredential.for_msal`, the value MSAL's
``ConfidentialClientApplication(client_credential=...)`` takes. A secret is the first kind;
certificates and managed-identity federation plug in here as further classes.
"""

from __future__ import annotations

from typing import Any, Protocol

from .errors import ConfigurationError, SettingProblem
from .settings import Settings


class ClientCredential(Protocol):
    """The piece of configuration that authenticates the app registration."""

    #: Short, non-secret description for logs and /api/health (e.g. "client secret").
    kind: str

    def for_msal(self) -> Any:
        """The ``client_credential`` argument for ``msal.ConfidentialClientApplication``."""

    def secret_values(self) -> tuple[str, ...]:
        """Values that must be redacted from logs and never appear in a response."""


class ClientSecretCredential:
    """A client secret taken from the ``POWERBI_CLIENT_SECRET`` setting."""

    kind = "client secret"

    def __init__(self, secret: str) -> None:
        self._secret = secret

    def __repr__(self) -> str:
        return "ClientSecretCredential(secret=<redacted>)"

    def for_msal(self) -> str:
        return self._secret

    def secret_values(self) -> tuple[str, ...]:
        return (self._secret,)


def build_client_credential(settings: Settings) -> ClientCredential:
    """Choose the client credential that the settings describe."""
    if settings.client_secret:
        return ClientSecretCredential(settings.client_secret)
    raise ConfigurationError([SettingProblem("POWERBI_CLIENT_SECRET", "No client credential is configured.")])
