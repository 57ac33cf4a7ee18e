"""``CALLER_AUTH=jwt``: verify the caller's OpenID Connect access token with PyJWT.

Only asymmetric algorithms are accepted (never ``none``, never HMAC, so a public key can never be
used as a shared secret). Only access tokens are accepted: a token with a ``nonce`` claim, or with
neither ``scp`` nor ``roles``, is an ID token (or not meant for an API) and is refused even when its
audience is listed. ``exp``, ``nbf`` and ``iat`` must be JSON numbers. The issuer's signing keys come
from its JWKS, found through its discovery document unless ``CALLER_JWT_JWKS_URI`` is set (see
:mod:`token_broker.callers.signing_keys` for caching, single flight and backoff). Callers learn only that their
token is not valid; the reason goes to the log.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Mapping
from typing import Any

import jwt
import requests

from ..config.callers import CallerSettings
from ..support.bounded import BoundedMap
from ..support.errors import (
    CallerAuthenticationError,
    CallerTokenMissingError,
    ConfigurationError,
    IssuerUnavailableError,
    SettingProblem,
)
from ..support.transport import transport_error
from .bearer import bearer_token
from .caller import Caller, caller_from_claims
from .signing_keys import SigningKeys

log = logging.getLogger(__name__)

ALLOWED_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "ES256"})
VERIFIED_TOKENS_MAX_ENTRIES = 5_000  # ~1-2 KB of claims each
MAX_TOKEN_LENGTH = 16 * 1024  # Entra ID tokens are 1-4 KB; anything far larger is an attack or a mistake
_REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud"]
_TIME_CLAIMS = ("exp", "nbf", "iat")


def _rejected(reason: str, *, code: str = "caller_token_invalid") -> CallerAuthenticationError:
    log.warning("Rejected a caller token: %s", reason)
    detail = "The bearer token has expired; sign in again." if code == "caller_token_expired" else (
        "The bearer token is not valid for this API.")
    return CallerAuthenticationError(detail, code=code)


class JwtAuthenticator:
    """Verifies ``Authorization: Bearer <JWT>`` from the configured OpenID Connect issuer."""

    mode = "jwt"

    def __init__(self, settings: CallerSettings, *, timeout: float) -> None:
        if not settings.jwt_issuer:  # the settings reader reports this; guard against building it by hand
            raise ConfigurationError([SettingProblem("CALLER_JWT_ISSUER", "CALLER_AUTH=jwt needs CALLER_JWT_ISSUER.")])
        self._settings = settings
        self._issuer = settings.jwt_issuer
        self._audiences = list(settings.jwt_audiences)
        self._timeout = timeout
        self.keys = SigningKeys(self._locate_jwks, timeout=timeout,
                                refresh_cooldown=settings.jwt_jwks_refresh_cooldown_seconds)
        # Verified claims by token SHA-256, tagged with the key generation read before they were checked:
        # a key withdrawn or replaced since makes the entry stale.
        self._verified: BoundedMap[bytes, tuple[dict[str, Any], int]] = BoundedMap(VERIFIED_TOKENS_MAX_ENTRIES)

    def _locate_jwks(self) -> str:
        if self._settings.jwt_jwks_uri:
            return self._settings.jwt_jwks_uri
        url = f"{self._issuer.rstrip('/')}/.well-known/openid-configuration"
        try:
            response = requests.get(url, timeout=self._timeout)
            response.raise_for_status()
            document = response.json()
        except (requests.RequestException, ValueError) as err:
            mapped = transport_error(err, service="The caller token issuer", setting="CALLER_JWT_ISSUER")
            cause = mapped.code if mapped is not None else "aad_bad_response"  # (a ValueError: not JSON)
            raise IssuerUnavailableError(
                f"The discovery document {url} could not be read ({cause}); check CALLER_JWT_ISSUER or set "
                "CALLER_JWT_JWKS_URI.", setting="CALLER_JWT_ISSUER") from err
        if not isinstance(document, dict):
            document = {}
        if document.get("issuer") != self._issuer or not isinstance(document.get("jwks_uri"), str):
            raise IssuerUnavailableError(
                f"The discovery document at {url} names issuer {str(document.get('issuer'))[:100]!r}, not "
                "CALLER_JWT_ISSUER; set CALLER_JWT_ISSUER to the tokens' exact iss value.",
                setting="CALLER_JWT_ISSUER")
        return str(document["jwks_uri"])

    def verify(self, token: str) -> Mapping[str, Any]:
        """The verified claims of ``token``; raises :class:`CallerAuthenticationError` otherwise.

        A token verified before (same bytes, same signing keys) is answered from a bounded cache after
        re-checking its time claims: a single-page app sends the same token for an hour, and parsing and
        checking its signature again costs far more than the rest of a cached request.
        """
        if len(token) > MAX_TOKEN_LENGTH:
            raise _rejected(f"token of {len(token)} characters")
        digest = hashlib.sha256(token.encode()).digest()
        generation = self.keys.generation  # before verifying: a key withdrawn meanwhile makes this entry stale
        cached = self._verified.get(digest)
        if cached is not None and cached[1] == generation:
            return self._still_valid(cached[0])
        claims = self._verify_signature_and_claims(token)
        self._verified.put(digest, (claims, generation))
        return claims

    def _still_valid(self, claims: Mapping[str, Any]) -> Mapping[str, Any]:
        now, leeway = time.time(), self._settings.jwt_leeway_seconds
        if claims["exp"] + leeway <= now:
            raise _rejected("expired", code="caller_token_expired")
        not_before = claims.get("nbf")
        if isinstance(not_before, int | float) and not_before - leeway > now:
            raise _rejected("not yet valid (nbf)")
        return claims

    def _verify_signature_and_claims(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as err:
            raise _rejected(f"malformed token ({type(err).__name__})") from err
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in ALLOWED_ALGORITHMS:
            raise _rejected(f"algorithm {str(algorithm)[:16]!r} is not allowed")
        if not isinstance(kid, str) or not kid:
            raise _rejected("no kid in the token header")
        key = self.keys.get(kid)
        if key is None:
            raise _rejected(f"no signing key with kid {kid[:64]!r} in the issuer's JWKS")
        if key.key_type != ("EC" if algorithm.startswith("ES") else "RSA"):
            raise _rejected(f"algorithm {algorithm} does not fit the {key.key_type} key {kid[:64]!r}")
        try:
            claims = dict(jwt.decode(
                token, key.key, algorithms=[algorithm], audience=self._audiences, issuer=self._issuer,
                leeway=self._settings.jwt_leeway_seconds, options={"require": _REQUIRED_CLAIMS},
            ))
        except jwt.ExpiredSignatureError as err:
            raise _rejected("expired", code="caller_token_expired") from err
        except (jwt.PyJWTError, ValueError, TypeError, ArithmeticError) as err:
            raise _rejected(f"{type(err).__name__}: {str(err)[:120]}") from err
        for name in _TIME_CLAIMS:  # PyJWT int()-converts strings; the cache and the broker need numbers
            if name in claims and not _is_number(claims[name]):
                raise _rejected(f"the {name} claim is a JSON {type(claims[name]).__name__}, not a number")
        if "nonce" in claims:
            raise _rejected("a nonce claim: an ID token, not an access token")
        if not claims.get("scp") and not claims.get("roles"):
            raise _rejected("neither scp nor roles: not an access token for an API (an ID token?)")
        return claims

    def authenticate(self, headers: Mapping[str, str]) -> Caller:
        token = bearer_token(headers)
        if token is None:
            raise CallerTokenMissingError(
                "Send the signed-in user's access token for this API as 'Authorization: Bearer <token>'.")
        claims = self.verify(token)
        return caller_from_claims(claims, mode=self.mode, username_claim=self._settings.username_claim,
                                  bearer=token)


def _is_number(value: Any) -> bool:
    """A finite JSON number (bool is an int in Python, not in JSON)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return isinstance(value, int) or math.isfinite(value)
