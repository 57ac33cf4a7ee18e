"""Who is calling: caller authentication modes, each producing a verified :class:`Caller`, and authorization.

Handlers receive a :class:`Caller` and never read identity from a request body or query string.
``CALLER_AUTH`` has no default: unset, the token endpoints fail closed with ``503``. The ``jwt`` and
``easyauth`` modes live in their own modules, imported only when configured.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import azure.functions as func

from ..config.callers import CallerSettings
from ..support.errors import CallerAuthNotConfiguredError, CallerForbiddenError
from ..web.http import bearer_token
from .client_ip import client_key

log = logging.getLogger(__name__)

#: Caller modes whose identity is verified (by signature, or by the platform).
VERIFIED_MODES = frozenset({"jwt", "easyauth"})


@dataclass(frozen=True)
class Caller:
    """The verified identity of the caller of an endpoint.

    ``subject`` is the token's ``sub``, ``object_id`` its ``oid`` (Entra ID's stable user or app id),
    ``username`` the claim named by ``CALLER_USERNAME_CLAIM``. ``bearer_token`` is the raw token the
    caller presented (the user assertion for on-behalf-of); it is excluded from ``repr`` so it cannot
    reach a log line by accident.
    """

    mode: str
    subject: str | None = None
    object_id: str | None = None
    username: str | None = None
    tenant_id: str | None = None
    roles: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()
    bearer_token: str | None = field(default=None, repr=False)
    bearer_expires_on: float | None = None
    #: All verified claims (e.g. for ``EMBED_RLS_CUSTOM_DATA_CLAIM``); empty for modes without claims.
    claims: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @property
    def verified(self) -> bool:
        """True when the identity was verified (a signed token, or App Service Authentication)."""
        return self.mode in VERIFIED_MODES

    @property
    def principal(self) -> str | None:
        """Whose credential a value obtained for this caller was minted with, for cache keys.

        A verified caller is its tenant + object id (else its subject); an unverified one that presents
        a bearer token (anonymous mode, on-behalf-of) is the SHA-256 of that token, which only its holder
        can present again. None when there is nothing to tell callers apart.
        """
        if self.verified and self.object_id:
            return f"oid:{self.tenant_id or '-'}/{self.object_id}"
        if self.verified and self.subject:
            return f"sub:{self.subject}"
        if self.bearer_token:
            return "sha256:" + hashlib.sha256(self.bearer_token.encode()).hexdigest()
        return None

    @property
    def key(self) -> str:
        """A stable id for per-caller state (rate limits): tenant + object id, else subject."""
        if self.object_id:
            return f"{self.tenant_id or '-'}/{self.object_id}"
        return f"{self.mode}:{self.subject or 'anonymous'}"


class CallerAuthenticator(Protocol):
    """Authenticates the caller of a request or raises a :class:`~token_broker.support.errors.BrokerError`."""

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

    def __init__(self, *, trusted_proxy_hops: int = 0) -> None:
        self._hops = trusted_proxy_hops

    def authenticate(self, req: func.HttpRequest) -> Caller:
        # The bearer token, if any, is passed on unverified: only the on-behalf-of grant uses it, and
        # Azure AD verifies it there.
        return Caller(mode=self.mode, subject=_platform_client_key(req, self._hops), bearer_token=bearer_token(req))


class FunctionKeyAuthenticator:
    """``CALLER_AUTH=function_key``: the Functions host checked the key (auth level FUNCTION) before us."""

    mode = "function_key"

    def __init__(self, *, trusted_proxy_hops: int = 0) -> None:
        self._hops = trusted_proxy_hops

    def authenticate(self, req: func.HttpRequest) -> Caller:
        return Caller(mode=self.mode, subject=_platform_client_key(req, self._hops))


def _platform_client_key(req: func.HttpRequest, trusted_proxy_hops: int) -> str:
    # The client address (IPv6: its /64) as App Service's front end saw it, or one shared "unknown";
    # see client_ip for which X-Forwarded-For entry is trusted.
    forwarded = req.headers.get("x-forwarded-for")
    return client_key(str(forwarded) if forwarded else None, trusted_proxy_hops=trusted_proxy_hops)


def authorize(caller: Caller, settings: CallerSettings) -> None:
    """Raise :class:`CallerForbiddenError` unless the caller has one of the required roles and scopes."""
    if settings.required_roles and not caller.roles & set(settings.required_roles):
        raise CallerForbiddenError(
            "Your account does not have an app role that allows this. Ask an administrator to assign you "
            "one of the roles this API requires.", code="caller_missing_role",
        )
    if settings.required_scopes and not caller.scopes & set(settings.required_scopes):
        raise CallerForbiddenError(
            "The token was not issued with a scope that allows this; request one of the scopes this API "
            "requires when signing in.", code="caller_missing_scope",
        )


def build_authenticator(settings: CallerSettings, *, timeout: float) -> CallerAuthenticator:
    """The authenticator for ``CALLER_AUTH``."""
    if settings.mode == "jwt":
        from .jwt import JwtAuthenticator

        return JwtAuthenticator(settings, timeout=timeout)
    if settings.mode == "easyauth":
        from .easyauth import EasyAuthAuthenticator

        return EasyAuthAuthenticator(settings)
    if settings.mode == "function_key":
        return FunctionKeyAuthenticator(trusted_proxy_hops=settings.trusted_proxy_hops)
    if settings.mode == "anonymous":  # a warning of the settings, logged and on /api/health
        return AnonymousAuthenticator(trusted_proxy_hops=settings.trusted_proxy_hops)
    return NotConfiguredAuthenticator()


def _string(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _strings(value: Any) -> frozenset[str]:
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(v for v in value if isinstance(v, str))
    return frozenset()


def _epoch_seconds(value: Any) -> float | None:
    # Only a finite JSON number is an expiry: not a bool (an int in Python), a string, NaN or infinity, nor an
    # integer no float can hold (10**400, which PyJWT accepts).
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        seconds = float(value)
    except OverflowError:
        return None
    return seconds if math.isfinite(seconds) else None


def caller_from_claims(claims: Mapping[str, Any], *, mode: str, username_claim: str,
                       bearer: str | None = None) -> Caller:
    """A :class:`Caller` from verified claims (JWT or App Service Authentication)."""
    username = claims.get(username_claim)
    expires = claims.get("exp")
    return Caller(
        mode=mode,
        subject=_string(claims.get("sub")),
        object_id=_string(claims.get("oid")),
        username=username if isinstance(username, str) else None,
        tenant_id=_string(claims.get("tid")),
        roles=_strings(claims.get("roles")),
        scopes=_strings(claims.get("scp")),
        bearer_token=bearer,
        bearer_expires_on=_epoch_seconds(expires),
        claims=dict(claims),
    )
