"""``CALLER_AUTH=easyauth``: the caller as App Service Authentication (Easy Auth) vouches for it.

The platform authenticates the request before it reaches the function and passes the identity in
``X-MS-CLIENT-PRINCIPAL`` (base64 JSON with a list of claims). It strips that header from incoming
requests, so the header is trustworthy **only behind the platform with authentication enabled**;
the settings refuse this mode elsewhere unless ``CALLER_EASYAUTH_ALLOW_LOCAL=true``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Mapping
from typing import Any

from ..config.callers import CallerSettings
from ..support.errors import CallerAuthenticationError
from .caller import Caller, caller_from_claims

log = logging.getLogger(__name__)

MAX_PRINCIPAL_LENGTH = 64 * 1024

# Easy Auth keeps Entra ID's long claim type URIs; map them to the JWT names the rest of the broker uses.
_CLAIM_ALIASES = {
    "http://schemas.microsoft.com/identity/claims/objectidentifier": "oid",
    "http://schemas.microsoft.com/identity/claims/tenantid": "tid",
    "http://schemas.microsoft.com/identity/claims/scope": "scp",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier": "sub",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn": "upn",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress": "email",
    "http://schemas.microsoft.com/ws/2008/06/identity/claims/role": "roles",
}
_MULTI_VALUED = {"roles", "groups"}


def _unauthenticated(reason: str) -> CallerAuthenticationError:
    log.warning("Rejected an App Service Authentication principal: %s", reason)
    return CallerAuthenticationError(
        "Sign in first: this API accepts only requests authenticated by App Service Authentication.",
        code="caller_unauthenticated",
    )


def parse_client_principal(header: str) -> dict[str, Any]:
    """Claims from an ``X-MS-CLIENT-PRINCIPAL`` value, keyed by JWT claim names (roles as a list)."""
    if len(header) > MAX_PRINCIPAL_LENGTH:
        raise _unauthenticated("X-MS-CLIENT-PRINCIPAL is too large")
    try:
        document = json.loads(base64.b64decode(header.strip() + "=" * (-len(header.strip()) % 4), validate=True))
    except (binascii.Error, ValueError, RecursionError) as err:  # RecursionError: JSON nested too deeply
        raise _unauthenticated(f"X-MS-CLIENT-PRINCIPAL is not base64 JSON ({type(err).__name__})") from err
    if not isinstance(document, dict) or not isinstance(document.get("claims"), list):
        raise _unauthenticated("X-MS-CLIENT-PRINCIPAL has no claims list")
    role_type = document.get("role_typ")
    claims: dict[str, Any] = {}
    for item in document["claims"]:
        if not isinstance(item, dict) or not isinstance(item.get("typ"), str) or not isinstance(item.get("val"), str):
            raise _unauthenticated("X-MS-CLIENT-PRINCIPAL has a malformed claim")
        claim_type: str = item["typ"]
        name = "roles" if claim_type == role_type else _CLAIM_ALIASES.get(claim_type, claim_type)
        if name in _MULTI_VALUED:
            claims.setdefault(name, []).append(item["val"])
        else:
            claims.setdefault(name, item["val"])
    return claims


class EasyAuthAuthenticator:
    """Reads the caller from ``X-MS-CLIENT-PRINCIPAL``."""

    mode = "easyauth"

    def __init__(self, settings: CallerSettings) -> None:
        self._username_claim = settings.username_claim

    def authenticate(self, headers: Mapping[str, str]) -> Caller:
        header = headers.get("x-ms-client-principal")
        if not header:
            raise _unauthenticated("no X-MS-CLIENT-PRINCIPAL header (the request was not authenticated)")
        claims = parse_client_principal(str(header))
        if not (claims.get("oid") or claims.get("sub")):
            raise _unauthenticated("the principal has neither an object id nor a subject")
        return caller_from_claims(claims, mode=self.mode, username_claim=self._username_claim)
