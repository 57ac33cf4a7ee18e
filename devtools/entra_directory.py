"""The in-memory directory of the Entra ID emulator, and Azure AD's error table.

:class:`EntraDirectory` holds tenants, app registrations (with their secrets, certificates, federated
identity credentials and consent), users and issued refresh tokens; :class:`AadError` carries an AADSTS
code whose HTTP status, OAuth error and message come from the table, worded as Azure AD sends them.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

__all__ = ["AadError", "App", "AuthorizationCode", "EntraDirectory", "FederatedCredential", "RefreshGrant", "Tenant",
           "User"]

_NO_FIC = ("No matching federated identity record found for presented assertion {what} '{value}'. Please check your "
           "federated identity credential Subject, Audience and Issuer against the presented assertion. "
           "https://learn.microsoft.com/entra/workload-id/workload-identity-federation")
_NO_USER = ("The user account {{EUII Hidden}} does not exist in the {tenant} directory. To sign into this "
            "application, the account must be added to the directory.")
# code: (HTTP status, OAuth error, message template, suberror) -- wording and statuses as Azure AD sends them.
_ERRORS: dict[int, tuple[int, str, str, str | None]] = {
    90002: (400, "invalid_request", "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID "
            "and are signing into the correct cloud. Check with your subscription administrator, this may happen if "
            "there are no active subscriptions for the tenant.", None),
    900144: (400, "invalid_request", "The request body must contain the following parameter: '{name}'.", None),
    90014: (400, "invalid_request", "The required field '{name}' is missing or invalid.", None),
    70003: (400, "unsupported_grant_type", "The app requested an unsupported grant type '{grant}'.", None),
    700016: (400, "unauthorized_client", "Application with identifier '{client_id}' was not found in the directory "
             "'{domain}'. This can happen if the application has not been installed by the administrator of the "
             "tenant or consented to by any user in the tenant. You may have sent your authentication request to "
             "the wrong tenant.", None),
    7000218: (401, "invalid_client", "The request body must contain the following parameter: 'client_assertion' "
              "or 'client_secret'.", None),
    7000215: (401, "invalid_client", "Invalid client secret provided. Ensure the secret being sent in the request "
              "is the client secret value, not the client secret ID, for a secret added to app '{client_id}'.", None),
    7000222: (401, "invalid_client", "The provided client secret keys for app '{client_id}' are expired. Visit the "
              "Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using "
              "certificate credentials for added security: https://aka.ms/certCreds.", None),
    700027: (401, "invalid_client", "Client assertion failed validation. [Reason - {reason}]", None),
    700024: (401, "invalid_client", "Client assertion is not within its valid time range.", None),
    700211: (401, "invalid_client", _NO_FIC.replace("{what}", "issuer"), None),
    700212: (401, "invalid_client", _NO_FIC.replace("{what}", "audience"), None),
    700213: (401, "invalid_client", _NO_FIC.replace("{what}", "subject"), None),
    1002012: (400, "invalid_scope", "The provided value for scope {scope} is not valid. Client credential flows "
              "must have a scope value with /.default suffixed to the resource identifier (application ID URI).",
              None),
    28000: (400, "invalid_scope", "Provided value for the input parameter scope is not valid because it contains "
            "more than one resource. Scope {scope} is not valid.", None),
    50034: (400, "invalid_grant", _NO_USER, None),
    50126: (400, "invalid_grant", "Error validating credentials due to invalid username or password.", None),
    70000: (400, "invalid_grant", "Provided grant is invalid or malformed.", None),
    50173: (400, "invalid_grant", "The provided grant has expired due to it being revoked, a fresh auth token is "
            "needed. The user might have changed or reset their password.", None),
    50013: (400, "invalid_grant", "Assertion failed validation. [Reason - {reason}]", None),
    500133: (400, "invalid_grant", "Assertion is not within its valid time range. Ensure that the access token is "
             "not expired before using it for user assertion, or request a new token.", None),
    53003: (400, "invalid_grant", "Access has been blocked by Conditional Access policies. The access policy does "
            "not allow token issuance.", None),
    50076: (400, "invalid_grant", "Due to a configuration change made by your administrator, or because you moved "
            "to a new location, you must use multi-factor authentication to access '{resource}'.", "basic_action"),
    50011: (400, "invalid_request", "The redirect URI '{redirect_uri}' specified in the request does not match the "
            "redirect URIs configured for the application '{client_id}'. Make sure the redirect URI sent in the "
            "request matches one added to your application in the Azure portal.", None),
    50058: (400, "login_required", "A silent sign-in request was sent but no user is signed in.", None),
    54005: (400, "invalid_grant", "OAuth2 Authorization code was already redeemed, please retry with a new valid code "
            "or use an existing refresh token.", None),
    70008: (400, "invalid_grant", "The provided authorization code or refresh token has expired due to inactivity. "
            "Send a new interactive authorization request for this user and resource.", None),
    500112: (400, "invalid_grant", "The reply address does not match the reply address provided when requesting "
             "Authorization code.", None),
    501481: (400, "invalid_grant", "The Code_Verifier does not match the code_challenge supplied in the authorization "
             "request.", None),
    700025: (401, "invalid_client", "Client is public so neither 'client_assertion' nor 'client_secret' should be "
             "presented.", None),
    9002325: (400, "invalid_request", "Proof Key for Code Exchange is required for cross-origin authorization code "
              "redemption.", None),
    9002326: (400, "invalid_request", "Cross-origin token redemption is permitted only for the 'Single-Page "
              "Application' client-type. Request origin: '{origin}'.", None),
    9002327: (400, "invalid_request", "Tokens issued for the 'Single-Page Application' client-type may only be "
              "redeemed via cross-origin requests.", None),
    65001: (400, "invalid_grant", "The user or administrator has not consented to use the application with ID "
            "'{client_id}' named '{app_name}'. Send an interactive authorization request for this user and "
            "resource.", "consent_required"),
}


class AadError(Exception):
    def __init__(self, code: int, *, error: str | None = None, **fields: str) -> None:
        self.status, default_error, template, self.suberror = _ERRORS[code]
        self.code, self.error = code, error or default_error
        super().__init__(template.format(**fields))


@dataclass(frozen=True)
class FederatedCredential:
    """A federated identity credential: assertions with this issuer, subject and audience authenticate the app."""

    issuer: str
    subject: str
    audience: str


@dataclass(frozen=True)
class App:  # immutable: changes swap the whole object, so a handler always sees a consistent snapshot
    client_id: str
    name: str
    secrets: tuple[tuple[str, bool], ...]  # (value, expired)
    roles: tuple[str, ...]
    consent_granted: bool
    certificates: tuple[bytes, ...]  # DER
    api_audience: str
    service_principal_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    federated: tuple[FederatedCredential, ...] = ()
    spa_redirect_uris: tuple[str, ...] = ()  # the "Single-page application" platform: a public PKCE client


@dataclass(frozen=True)
class User:
    username: str
    password: str
    oid: str
    mfa_required: bool
    conditional_access_blocked: bool
    roles: tuple[str, ...]
    name: str


@dataclass
class Tenant:
    tenant_id: str
    domain: str
    apps: dict[str, App] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)  # by lower-case username


@dataclass(frozen=True)
class AuthorizationCode:
    """What an authorization code stands for, checked when it is redeemed (once, within ``expires_at``)."""

    tenant_id: str
    client_id: str
    redirect_uri: str
    oid: str
    scope: str
    code_challenge: str
    nonce: str | None
    expires_at: float


@dataclass(frozen=True)
class RefreshGrant:
    tenant_id: str
    client_id: str
    oid: str
    scope: str
    mfa_done: bool
    revoked: bool = False


class EntraDirectory:
    """Thread-safe store of tenants, apps, users and refresh tokens; every public method is thread-safe.

    Knob: ``max_refresh_tokens`` (the oldest refresh tokens are forgotten beyond this many).
    """

    max_refresh_tokens: int = 100_000

    def __init__(self) -> None:
        super().__init__()  # cooperative: the emulator combines this class with its server base
        self._dir_lock = threading.RLock()
        self._tenants: dict[str, Tenant] = {}
        self._domains: dict[str, str] = {}  # lower-case domain -> tenant id
        self._refresh: dict[str, RefreshGrant] = {}
        self._codes: dict[str, AuthorizationCode | None] = {}  # None: already redeemed (AADSTS54005)

    def add_tenant(self, tenant_id: str | None = None, *, domain: str = "contoso.com") -> str:
        """Create a tenant (id defaults to a uuid4) reachable by id or ``domain``; returns the id."""
        tid, domain = (tenant_id or str(uuid.uuid4())).lower(), domain.lower()
        with self._dir_lock:
            if self._domains.get(domain, tid) != tid:
                raise ValueError(f"domain {domain!r} already belongs to tenant {self._domains[domain]}")
            self._tenants.setdefault(tid, Tenant(tid, domain))
            self._domains[domain] = tid
        return tid

    def register_app(self, tenant_id: str, client_id: str | None = None, *, secret: str | None = None,
                     secret_expired: bool = False, roles: Sequence[str] = (), consent_granted: bool = True,
                     certificate_pem: bytes | None = None, api_audience: str | None = None,
                     name: str | None = None, spa_redirect_uris: Sequence[str] = ()) -> str:
        """Register an app and its service principal in a tenant; returns the client id (default uuid4).

        ``roles`` become the ``roles`` claim of its app-only tokens; ``api_audience`` (default
        ``api://{client_id}``) is, besides the client id, an accepted ``aud`` of OBO assertions.
        ``spa_redirect_uris`` (the "Single-page application" platform) let browsers sign users in with the
        authorization code flow and PKCE, redeeming codes cross-origin without a client secret.
        """
        cid = client_id or str(uuid.uuid4())
        certs = (x509.load_pem_x509_certificate(certificate_pem).public_bytes(serialization.Encoding.DER),
                 ) if certificate_pem else ()
        app = App(cid, name or f"app-{cid[:8]}", ((secret, secret_expired),) if secret else (), tuple(roles),
                  consent_granted, certs, api_audience or f"api://{cid}", spa_redirect_uris=tuple(spa_redirect_uris))
        with self._dir_lock:
            self._tenant(tenant_id).apps[cid] = app
        return cid

    def rotate_secret(self, tenant_id: str, client_id: str, new_secret: str, *, keep_old: bool = False) -> None:
        """Add ``new_secret``; unless ``keep_old``, previous secrets stop working (AADSTS7000215)."""
        new = (new_secret, False)
        self._update_app(tenant_id, client_id, secrets=lambda a: (*a.secrets, new) if keep_old else (new,))

    def expire_secrets(self, tenant_id: str, client_id: str) -> None:
        """Mark every current secret of the app expired (AADSTS7000222 from now on)."""
        self._update_app(tenant_id, client_id, secrets=lambda a: tuple((v, True) for v, _ in a.secrets))

    def add_certificate(self, tenant_id: str, client_id: str, certificate_pem: bytes) -> None:
        """Register one more certificate credential for the app."""
        der = x509.load_pem_x509_certificate(certificate_pem).public_bytes(serialization.Encoding.DER)
        self._update_app(tenant_id, client_id, certificates=lambda a: (*a.certificates, der))

    def add_federated_credential(self, tenant_id: str, client_id: str, *, issuer: str, subject: str,
                                 audience: str = "api://AzureADTokenExchange") -> None:
        """Trust assertions from ``issuer`` about ``subject`` (e.g. a managed identity's token) as the app's credential.

        The emulator can only check the signature of tokens it issued itself, so ``issuer`` is meant to be
        ``EntraEmulator.issuer(tenant_id)`` and ``subject`` the managed identity's principal (object) id.
        """
        fic = FederatedCredential(issuer, subject, audience)
        self._update_app(tenant_id, client_id, federated=lambda a: (*a.federated, fic))

    def service_principal_id(self, tenant_id: str, client_id: str) -> str:
        """Object id of the app's service principal: the ``oid`` of its app-only tokens (e.g. for role assignments)."""
        with self._dir_lock:
            return self._tenant(tenant_id).apps[client_id].service_principal_id

    def set_consent(self, tenant_id: str, client_id: str, granted: bool) -> None:
        """Grant or withdraw consent for user flows of the app (AADSTS65001 when withdrawn)."""
        self._update_app(tenant_id, client_id, consent_granted=lambda _: granted)

    def add_user(self, tenant_id: str, username: str, password: str, *, oid: str | None = None,
                 mfa_required: bool = False, conditional_access_blocked: bool = False, roles: Sequence[str] = (),
                 name: str | None = None) -> str:
        """Add (or replace) a user; returns its object id (default uuid4)."""
        display = name or username.split("@")[0].replace(".", " ").title()
        user = User(username, password, oid or str(uuid.uuid4()), mfa_required, conditional_access_blocked,
                    tuple(roles), display)
        with self._dir_lock:
            self._tenant(tenant_id).users[username.lower()] = user
        return user.oid

    def update_user(self, tenant_id: str, username: str, **changes: Any) -> None:
        """Change user fields: ``password``, ``mfa_required``, ``conditional_access_blocked``, ``roles``, ``name``."""
        with self._dir_lock:
            users = self._tenant(tenant_id).users
            users[username.lower()] = dataclasses.replace(users[username.lower()], **changes)

    def revoke_refresh_tokens(self, tenant_id: str, username: str | None = None) -> int:
        """Revoke the refresh tokens of one user, or of the whole tenant (AADSTS50173); returns how many."""
        with self._dir_lock:
            tenant = self._tenant(tenant_id)
            oid = tenant.users[username.lower()].oid if username else None
            hits = [t for t, g in self._refresh.items()
                    if g.tenant_id == tenant.tenant_id and oid in (None, g.oid) and not g.revoked]
            for token in hits:
                self._refresh[token] = dataclasses.replace(self._refresh[token], revoked=True)
        return len(hits)

    def _find_tenant(self, name: str) -> Tenant | None:
        with self._dir_lock:
            return self._tenants.get(self._domains.get(name.lower(), name.lower()))

    def _tenant(self, name: str) -> Tenant:
        tenant = self._find_tenant(name)
        if tenant is None:
            raise KeyError(f"unknown tenant {name!r}")
        return tenant

    def _user_by_oid(self, tenant: Tenant, oid: Any) -> User | None:
        with self._dir_lock:  # iterating while add_user() inserts would raise
            return next((u for u in tenant.users.values() if u.oid == oid), None)

    def _update_app(self, tenant_id: str, client_id: str, **changes: Callable[[App], Any]) -> None:
        with self._dir_lock:
            apps = self._tenant(tenant_id).apps
            app = apps[client_id]
            apps[client_id] = dataclasses.replace(app, **{k: f(app) for k, f in changes.items()})

    def _issue_refresh_token(self, grant: RefreshGrant) -> str:
        token = "0.A" + secrets.token_urlsafe(64)
        with self._dir_lock:
            self._refresh[token] = grant
            if len(self._refresh) > self.max_refresh_tokens:  # long benchmark runs: forget the oldest
                del self._refresh[next(iter(self._refresh))]
        return token

    def _issue_authorization_code(self, code: AuthorizationCode) -> str:
        value = "1.A" + secrets.token_urlsafe(48)
        with self._dir_lock:
            self._codes[value] = code
            if len(self._codes) > self.max_refresh_tokens:
                del self._codes[next(iter(self._codes))]
        return value

    def _redeem_authorization_code(self, value: str) -> AuthorizationCode:
        """The code's grant, marking it redeemed; AADSTS70000 unknown, 54005 redeemed before, 70008 expired."""
        with self._dir_lock:
            if value not in self._codes:
                raise AadError(70000)
            code = self._codes[value]
            self._codes[value] = None
        if code is None:
            raise AadError(54005)
        if code.expires_at < time.time():
            raise AadError(70008)
        return code

    def spa_redirect_uris(self) -> set[str]:
        """Every registered single-page-app redirect URI, of any tenant."""
        with self._dir_lock:
            return {u for t in self._tenants.values() for a in t.apps.values() for u in a.spa_redirect_uris}

    def _refresh_grant(self, token: str) -> RefreshGrant | None:
        with self._dir_lock:
            return self._refresh.get(token)

    def _domain_known(self, domain: str) -> bool:
        with self._dir_lock:
            return domain in self._domains
