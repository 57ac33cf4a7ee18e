"""Who is calling: caller authentication modes, each producing a verified :class:`Caller`.

Handlers receive a :class:`Caller` and never read identity from a request body or query string.
``CALLER_AUTH`` has no default: unset, the token endpoints fail closed with ``503``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

import azure.functions as func

from .errors import CallerAuthNotConfiguredError
from .http import bearer_token
from .settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Caller:
    """The verified identity of the caller of an endpoint.

    ``bearer_token`` is the raw token the caller presented (the user assertion for on-behalf-of);
    it is excluded from ``repr`` so it cannot reach a log line by accident.
    """

    mode: str
    subject: str | None = None
    username: str | None = None
    tenant_id: str | None = None
    roles: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()
    bearer_token: str | None = field(default=None, repr=False)
    bearer_expires_on: float | None = None


class CallerAuthenticator(Protocol):
    """Authenticates the caller of a request or raises a :class:`~token_broker.errors.BrokerError`."""

    mode: str

    def authenticate(self, req: func.HttpRequest) -> Caller: ...


class NotConfiguredAuthenticator:
    """``CALLER_AUTH`` unset: refuse every token request (fail closed)."""

    mode = "unset"

    def authenticate(self, req: func.HttpRequest) -> Caller:  # noqa: ARG002 - the protocol's signature
        raise CallerAuthNotConfiguredError(
            "CALLER_AUTH is not set, so no caller can be authenticated and no token is issued. Set "
            "CALLER_AUTH to jwt (recommended for single-page apps), easyauth or function_key; or to "
            "anonymous to let anyone who can reach the function get a token.",
            setting="CALLER_AUTH",
        )


class AnonymousAuthenticator:
    """``CALLER_AUTH=anonymous``: everyone who can reach the function is a caller. An explicit opt-in."""

    mode = "anonymous"

    def authenticate(self, req: func.HttpRequest) -> Caller:
        # The bearer token, if any, is passed on unverified: only the on-behalf-of grant uses it, and
        # Azure AD verifies it there.
        return Caller(mode=self.mode, bearer_token=bearer_token(req))


def build_authenticator(settings: Settings) -> CallerAuthenticator:
    """The authenticator for ``CALLER_AUTH``."""
    if settings.caller_auth == "anonymous":
        log.warning(
            "CALLER_AUTH=anonymous: anyone who can reach this function gets a Power BI token with the "
            "rights of %s. Use it only behind another gate.",
            "the signed-in user" if settings.grant_type == "on_behalf_of" else "the configured identity",
        )
        return AnonymousAuthenticator()
    return NotConfiguredAuthenticator()
