"""Signing keys and token minting of the Entra ID emulator.

:class:`EntraTokenIssuer` owns the RSA signing keys (published as the JWKS) and mints access, ID and
refresh tokens with the claims Azure AD v2 puts in them, for the token endpoint as well as for tests
(:meth:`EntraTokenIssuer.issue_access_token`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from devtools.emulator_server import EmulatorServer
from devtools.entra_directory import AadError, App, EntraDirectory, RefreshGrant, Tenant, User
from devtools.tls import DevCertificateAuthority

__all__ = [
    "AZURE_CLI_CLIENT_ID", "EntraTokenIssuer", "InvalidAccessToken", "SigningKey", "scope_resource", "thumbprint",
]

AZURE_CLI_CLIENT_ID = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"  # a well-known public client: default token caller
OIDC_SCOPES = frozenset({"openid", "profile", "offline_access", "email"})


class InvalidAccessToken(Exception):
    """A bearer token presented to an emulator is not one this Entra ID emulator would accept."""

    def __init__(self, reason: str, *, expired: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.expired = expired


@dataclass(frozen=True)
class SigningKey:
    """A token-signing key and its self-signed certificate (DER), published in the JWKS under ``kid``."""

    kid: str
    private_key: rsa.RSAPrivateKey
    cert_der: bytes


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def thumbprint(der: bytes, algorithm: Callable[[bytes], Any]) -> str:
    """Unpadded base64url certificate thumbprint (``x5t`` with SHA-1, ``x5t#S256`` with SHA-256)."""
    return _b64url(algorithm(der).digest())


def _pairwise(oid: str, key: str) -> str:
    # Azure's "sub" is stable for a (user, application) pair but differs between applications.
    return _b64url(hashlib.sha256(f"{oid}|{key}".encode()).digest())


def _new_signing_key() -> SigningKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "devtools-entra-token-signing")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=365)).sign(key, hashes.SHA256()))
    der = cert.public_bytes(serialization.Encoding.DER)
    return SigningKey(thumbprint(der, hashlib.sha1), key, der)  # like Azure AD: kid == x5t (SHA-1 thumbprint)


class EntraTokenIssuer(EmulatorServer, EntraDirectory):  # EmulatorServer first: it takes the arguments
    """The emulator's signing keys and token minting, over its directory. Every public method is thread-safe.

    Knobs: ``access_token_lifetime`` (seconds, default 3600); ``default_delegated_scopes`` (``scp`` of user
    tokens requested with ``/.default``).
    """

    access_token_lifetime: int = 3600
    default_delegated_scopes: str = "Report.Read.All Dataset.Read.All"

    def __init__(self, *, ca: DevCertificateAuthority, host: str | None = None, port: int | None = None) -> None:
        super().__init__(ca=ca, host=host, port=port)
        self._keys: list[SigningKey] = [_new_signing_key()]  # current key first

    # ----------------------------------------------------------------------- keys
    def rotate_signing_key(self, *, drop_old: bool = False) -> str:
        """Make a new signing key current; older keys stay in the JWKS unless ``drop_old``. Returns its kid."""
        key = _new_signing_key()
        with self._dir_lock:
            self._keys = [key] if drop_old else [key, *self._keys]
        return key.kid

    @property
    def signing_kid(self) -> str:
        """``kid`` of the current signing key."""
        with self._dir_lock:
            return self._keys[0].kid

    @property
    def signing_key_pem(self) -> bytes:
        """The current private signing key (PKCS#8 PEM), for tests that forge tokens."""
        with self._dir_lock:
            key = self._keys[0].private_key
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    def verify_access_token(self, token: str, *, audience: str | Sequence[str]) -> dict[str, Any]:
        """Claims of an access token this emulator issued, for other emulators that check bearer tokens.

        Verifies the signature (any published key), ``aud``, ``exp``/``nbf`` and that ``iss`` is the
        issuer of the token's own tenant. Raises :class:`InvalidAccessToken` naming what failed.
        """
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as exc:
            raise InvalidAccessToken("malformed token") from exc
        key = next((k for k in self._signing_keys() if k.kid == kid), None)
        if key is None:
            raise InvalidAccessToken(f"unknown signing key {kid!r}")
        audiences = [audience] if isinstance(audience, str) else list(audience)
        try:
            claims: dict[str, Any] = jwt.decode(token, key.private_key.public_key(), algorithms=["RS256"],
                                                audience=audiences, options={"require": ["exp", "aud", "iss", "tid"]})
        except jwt.ExpiredSignatureError as exc:
            raise InvalidAccessToken("expired", expired=True) from exc
        except jwt.PyJWTError as exc:
            raise InvalidAccessToken(f"{type(exc).__name__}: {exc}") from exc
        if claims["iss"] != self.issuer(str(claims["tid"])):
            raise InvalidAccessToken(f"issuer {claims['iss']!r} is not this emulator's")
        return claims

    def issuer(self, tenant_id: str) -> str:
        """The v2 issuer of a tenant: ``{base_url}/{tenant_id}/v2.0``."""
        return f"{self.base_url}/{tenant_id}/v2.0"

    def _sign(self, claims: Mapping[str, Any], headers: Mapping[str, Any] | None = None) -> str:
        with self._dir_lock:
            key = self._keys[0]
        return jwt.encode(dict(claims), key.private_key, algorithm="RS256",
                          headers={"typ": "JWT", "kid": key.kid, "x5t": key.kid, **(headers or {})})

    def _signing_keys(self) -> list[SigningKey]:
        """A snapshot of the published keys, current key first."""
        with self._dir_lock:
            return list(self._keys)

    # -------------------------------------------------------------------- minting
    def _user_tokens(self, tenant: Tenant, app: App, user: User, form: dict[str, str], acr: str, *,
                     mfa_done: bool) -> dict[str, Any]:
        scope = form.get("scope", "")
        resource, names = scope_resource(scope)
        if user.conditional_access_blocked:
            raise AadError(53003)
        if user.mfa_required and not mfa_done:
            raise AadError(50076, resource=resource)
        if not app.consent_granted:
            raise AadError(65001, client_id=app.client_id, app_name=app.name)
        scp = self.default_delegated_scopes if set(names) <= {".default"} else " ".join(names)
        claims = self._claims(tenant, app.client_id, resource, None, user=user, scp=scp, roles=user.roles, acr=acr,
                              mfa_done=mfa_done)
        result = self._token_response(scope, self._sign(claims))
        requested = set(scope.split())
        if "offline_access" in requested:  # like Azure AD: a refresh token only when asked for
            grant = RefreshGrant(tenant.tenant_id, app.client_id, user.oid, scope, mfa_done)
            result["refresh_token"] = self._issue_refresh_token(grant)
        if "openid" in requested:
            now = int(time.time())
            result["id_token"] = self._sign({
                "aud": app.client_id, "iss": self.issuer(tenant.tenant_id), "iat": now, "nbf": now, "exp": now + 3600,
                "name": user.name, "oid": user.oid, "preferred_username": user.username, "tid": tenant.tenant_id,
                "sub": _pairwise(user.oid, app.client_id), "ver": "2.0", "uti": _b64url(secrets.token_bytes(16))})
        if form.get("client_info") == "1":
            result["client_info"] = _b64url(json.dumps({"uid": user.oid, "utid": tenant.tenant_id}).encode())
        return result

    def _token_response(self, scope: str, access_token: str) -> dict[str, Any]:
        lifetime = int(self.access_token_lifetime)
        return {"token_type": "Bearer", "scope": scope, "expires_in": lifetime, "ext_expires_in": lifetime,
                "access_token": access_token}

    def _claims(self, tenant: Tenant, client_id: str, audience: str, lifetime: int | None, *,
                user: User | None = None, scp: str = "", roles: Sequence[str] = (), acr: str = "1",
                mfa_done: bool = False, sp_id: str | None = None) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "aud": audience, "iss": self.issuer(tenant.tenant_id), "iat": now, "nbf": now,
            "exp": now + int(self.access_token_lifetime if lifetime is None else lifetime),
            "tid": tenant.tenant_id, "appid": client_id, "azp": client_id, "appidacr": acr, "azpacr": acr,
            "ver": "2.0", "uti": _b64url(secrets.token_bytes(16)), "jti": str(uuid.uuid4()),
        }
        if user is None:
            sp = sp_id or str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant.tenant_id}/{client_id}"))
            claims.update(oid=sp, sub=sp, idtyp="app")
        else:
            claims.update(oid=user.oid, sub=_pairwise(user.oid, audience), upn=user.username, name=user.name,
                          preferred_username=user.username, scp=scp, amr=["pwd", "mfa"] if mfa_done else ["pwd"])
        if roles:  # Azure AD omits an empty roles claim
            claims["roles"] = list(roles)
        return claims

    def issue_access_token(self, *, tenant_id: str, audience: str, subject_username: str | None = None,
                           client_id: str = AZURE_CLI_CLIENT_ID, scopes: str | Sequence[str] | None = None,
                           roles: Sequence[str] | None = None, lifetime: int | None = None,
                           extra_claims: Mapping[str, Any] | None = None,
                           headers: Mapping[str, Any] | None = None) -> str:
        """Mint an access token signed with the current key, as Entra ID would issue it to a caller.

        With ``subject_username`` it is a delegated token of that user (``scp`` from ``scopes``, default
        :attr:`default_delegated_scopes`; ``roles`` default to the user's); otherwise an app-only token
        (``idtyp: app``; ``roles`` default to the app's when ``client_id`` is registered in the tenant).
        ``extra_claims`` and ``headers`` are applied last, e.g. ``{"amr": ["pwd", "mfa"]}`` or ``{"kid": "x"}``.
        """
        with self._dir_lock:
            tenant = self._tenant(tenant_id)
            app = tenant.apps.get(client_id)
            user = tenant.users.get(subject_username.lower()) if subject_username else None
        if subject_username and user is None:
            raise KeyError(f"unknown user {subject_username!r} in tenant {tenant.tenant_id}")
        if user is not None:
            scp = scopes if isinstance(scopes, str) else " ".join(scopes or [self.default_delegated_scopes])
            claims = self._claims(tenant, client_id, audience, lifetime, user=user, scp=scp,
                                  roles=user.roles if roles is None else roles)
        else:
            app_roles = app.roles if app else ()
            claims = self._claims(tenant, client_id, audience, lifetime, roles=app_roles if roles is None else roles,
                                  sp_id=app.service_principal_id if app else None)
        return self._sign({**claims, **(extra_claims or {})}, headers)


def scope_resource(scope: str) -> tuple[str, list[str]]:
    """Split scopes into (resource, scope names); like Azure AD, one resource per request."""
    resources: dict[str, list[str]] = {}
    for item in scope.split():
        if item not in OIDC_SCOPES:
            resource, slash, name = item.rpartition("/")
            resources.setdefault(resource if slash else "https://graph.microsoft.com", []).append(name)
    if len(resources) > 1:
        raise AadError(28000, scope=scope)
    return next(iter(resources.items()), ("00000003-0000-0000-c000-000000000000", []))  # OIDC only: Graph
