"""Who is calling: the verified :class:`Caller` value and the :class:`CallerAuthenticator` protocol.

Handlers receive a :class:`Caller` and never read identity from a request body or query string. Each
``CALLER_AUTH`` mode is an authenticator that takes the request's headers (a case-insensitive mapping,
as ``func.HttpRequest.headers`` is) and returns a :class:`Caller`; :mod:`.modes` picks one.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..config.profiles import Profile

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
    #: Profile mode: the caller's customer's Power BI profile, set only by the broker from ``POWERBI_PROFILE_CLAIM``
    #: and ``POWERBI_PROFILES`` (:func:`~token_broker.callers.profiles.resolve_profile`), never from a request.
    profile: Profile | None = None

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

    def authenticate(self, headers: Mapping[str, str]) -> Caller: ...



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
