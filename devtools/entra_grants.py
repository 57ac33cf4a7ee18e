"""The grants of the Entra ID emulator's token endpoint.

:class:`EntraGrants` validates a token request -- tenant, grant type, client and its credential (client
secret, certificate assertion or federated assertion) -- and runs the grant: client credentials, password
(ROPC), refresh token, on-behalf-of or authorization code (PKCE, for single-page apps that redeem codes
cross-origin without a secret, see :mod:`devtools.entra_authorize`). Failures raise
:class:`~devtools.entra_directory.AadError` with Azure AD's codes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

import jwt
from cryptography import x509

from devtools.entra_directory import AadError, App, AuthorizationCode, Tenant
from devtools.entra_tokens import EntraTokenIssuer, InvalidAccessToken, scope_resource, thumbprint

__all__ = ["EntraGrants"]

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
GRANTS = frozenset({"client_credentials", "password", "refresh_token", "authorization_code", JWT_BEARER})
PUBLIC_CLIENT_GRANTS = frozenset({"authorization_code", "refresh_token"})  # what a single-page app may redeem
AUTHORIZATION_CODE_LIFETIME = 600  # seconds; Azure AD's codes are short-lived too


class EntraGrants(EntraTokenIssuer):
    """Token-endpoint logic: :meth:`_token` turns a request form into a token response or an ``AadError``.

    Knob: ``clock_skew`` (leeway when validating client and OBO assertions; Azure AD allows 5 minutes).
    """

    clock_skew: int = 300

    def _token(self, tenant_name: str, form: dict[str, str], *, origin: str | None = None) -> dict[str, Any]:
        """``origin``: the request's ``Origin`` header, which browsers send on cross-origin calls."""
        tenant = self._find_tenant(tenant_name)
        if tenant is None:
            raise AadError(90002, tenant=tenant_name)
        grant, client_id = form.get("grant_type", ""), form.get("client_id", "")
        if not grant:
            raise AadError(900144, name="grant_type")
        if grant not in GRANTS:
            raise AadError(70003, grant=grant)
        if not client_id:
            raise AadError(900144, name="client_id")
        app = tenant.apps.get(client_id)
        if app is None:
            raise AadError(700016, client_id=client_id, domain=tenant.domain)
        acr = self._authenticate_client(tenant, app, form, origin)
        if grant == "authorization_code":
            return self._redeem_code(tenant, app, form, acr)
        if grant == "client_credentials":
            return self._client_credentials(tenant, app, form, acr)
        if grant == "password":
            for required in ("username", "password", "scope"):
                if not form.get(required):
                    raise AadError(900144, name=required)
            user = tenant.users.get(form["username"].lower())
            if user is None:
                raise AadError(50034, tenant=tenant.tenant_id)
            if not hmac.compare_digest(user.password.encode(), form["password"].encode()):
                raise AadError(50126)
            return self._user_tokens(tenant, app, user, form, acr, mfa_done=False)
        if grant == "refresh_token":
            return self._redeem_refresh_token(tenant, app, form, acr)
        return self._on_behalf_of(tenant, app, form, acr)

    def _authenticate_client(self, tenant: Tenant, app: App, form: dict[str, str], origin: str | None) -> str:
        """Check the client credential; returns ``appidacr``: "0" public, "1" secret, "2" certificate."""
        presented = bool(form.get("client_assertion") or form.get("client_secret"))
        public = bool(app.spa_redirect_uris) and form.get("grant_type") in PUBLIC_CLIENT_GRANTS
        # Like Azure AD: only the single-page-app platform redeems cross-origin, always as a public client, and its
        # codes and refresh tokens are bound to the browser (a server redeeming them is refused).
        if origin is not None:
            if not public:
                raise AadError(9002326, origin=origin)
            if presented:
                raise AadError(700025)
            return "0"
        if public and not presented:
            raise AadError(9002327)
        if form.get("client_assertion"):
            self._check_client_assertion(tenant, app, form)
            return "2"
        sent = form.get("client_secret", "")
        if not sent:
            raise AadError(7000218)
        for value, expired in app.secrets:
            if hmac.compare_digest(value.encode(), sent.encode()):
                if expired:
                    raise AadError(7000222, client_id=app.client_id)
                return "1"
        raise AadError(7000215, client_id=app.client_id)

    def _check_client_assertion(self, tenant: Tenant, app: App, form: dict[str, str]) -> None:
        if form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE:
            raise AadError(700027, reason=f"client_assertion_type must be '{CLIENT_ASSERTION_TYPE}'.")
        assertion = form["client_assertion"]
        try:
            header = jwt.get_unverified_header(assertion)
            x5c = header.get("x5c")
            leaf = base64.b64decode(x5c[0]) if isinstance(x5c, list) and x5c else None
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except (jwt.PyJWTError, ValueError):
            raise AadError(700027, reason="The token is malformed.") from None
        # Like Azure AD: an assertion the app signed itself names the app as issuer; any other issuer is federated.
        if app.federated and unverified.get("iss") != app.client_id:
            self._check_federated_assertion(app, assertion, unverified)
            return
        # MSAL keeps the base64 padding on thumbprints, Azure AD accepts both forms.
        x5t, x5t256 = (str(header.get(name, "")).rstrip("=") for name in ("x5t", "x5t#S256"))
        for der in app.certificates:
            if (x5t256 == thumbprint(der, hashlib.sha256) or x5t == thumbprint(der, hashlib.sha1)
                    or (not (x5t or x5t256) and leaf == der)):
                break
        else:
            thumb = x5t256 or x5t
            raise AadError(700027, reason="The certificate with identifier used to sign the client assertion is not "
                            f"registered on application. The key was not found. Thumbprint of key used by client: "
                            f"'{thumb}'.")
        if leaf is not None and leaf != der:
            raise AadError(700027, reason="The x5c certificate does not match the thumbprint.")
        endpoint = f"{self.base_url}/{{}}/oauth2/v2.0/token"
        audiences = [endpoint.format(tenant.tenant_id), endpoint.format(tenant.domain), self.issuer(tenant.tenant_id)]
        try:
            claims = jwt.decode(assertion, x509.load_der_x509_certificate(der).public_key(),  # type: ignore[arg-type]
                                algorithms=["RS256", "PS256"], audience=audiences, issuer=app.client_id,
                                leeway=self.clock_skew, options={"require": ["exp", "aud", "iss", "sub"]})
        except (jwt.ExpiredSignatureError, jwt.ImmatureSignatureError):
            raise AadError(700024) from None
        except jwt.InvalidAudienceError:
            raise AadError(700027, reason=f"The audience must be one of {audiences}.") from None
        except jwt.PyJWTError as exc:
            raise AadError(700027, reason=f"{type(exc).__name__}: {exc}") from None
        if claims["sub"] != app.client_id:
            raise AadError(700027, reason="The 'sub' claim must be the client id.")

    def _check_federated_assertion(self, app: App, assertion: str, unverified: dict[str, Any]) -> None:
        """Match the assertion to a federated identity credential (issuer, then subject, then audience), then verify it.

        Only tokens this emulator issued can be verified (e.g. managed-identity tokens); no clock skew is allowed.
        """
        aud = unverified.get("aud")
        audiences = [aud] if isinstance(aud, str) else [str(a) for a in aud or []]
        matches = [f for f in app.federated if f.issuer == unverified.get("iss")]
        if not matches:
            raise AadError(700211, value=str(unverified.get("iss", "")))
        matches = [f for f in matches if f.subject == unverified.get("sub")]
        if not matches:
            raise AadError(700213, value=str(unverified.get("sub", "")))
        matches = [f for f in matches if f.audience in audiences]
        if not matches:
            raise AadError(700212, value=", ".join(audiences))
        try:
            self.verify_access_token(assertion, audience=matches[0].audience)
        except InvalidAccessToken as exc:
            if exc.expired:
                raise AadError(700024) from None
            raise AadError(700027, reason=f"The federated assertion failed validation: {exc.reason}.") from None

    def _client_credentials(self, tenant: Tenant, app: App, form: dict[str, str], acr: str) -> dict[str, Any]:
        scope = form.get("scope", "")
        if not scope:
            raise AadError(900144, name="scope")
        for item in scope.split():
            if not item.endswith("/.default"):
                raise AadError(1002012, scope=item)
        resource, _ = scope_resource(scope)
        claims = self._claims(tenant, app.client_id, resource, None, roles=app.roles, acr=acr,
                              sp_id=app.service_principal_id)
        return self._token_response(scope, self._sign(claims))

    def _authorization_code(self, tenant: Tenant, app: App, redirect_uri: str, oid: str, scope: str,
                            code_challenge: str, nonce: str | None) -> str:
        """A one-time code for a user who signed in interactively (the authorize endpoint's answer)."""
        return self._issue_authorization_code(AuthorizationCode(
            tenant.tenant_id, app.client_id, redirect_uri, oid, scope, code_challenge, nonce,
            time.time() + AUTHORIZATION_CODE_LIFETIME))

    def _redeem_code(self, tenant: Tenant, app: App, form: dict[str, str], acr: str) -> dict[str, Any]:
        for required in ("code", "redirect_uri"):
            if not form.get(required):
                raise AadError(900144, name=required)
        code = self._redeem_authorization_code(form["code"])
        if (code.tenant_id, code.client_id) != (tenant.tenant_id, app.client_id):
            raise AadError(70000)  # issued to another client or tenant
        if form["redirect_uri"] != code.redirect_uri:
            raise AadError(500112)
        if not form.get("code_verifier"):
            raise AadError(900144, name="code_verifier")
        digest = base64.urlsafe_b64encode(hashlib.sha256(form["code_verifier"].encode()).digest()).rstrip(b"=")
        if not hmac.compare_digest(digest, code.code_challenge.encode()):
            raise AadError(501481)
        user = self._user_by_oid(tenant, code.oid)
        if user is None:
            raise AadError(50034, tenant=tenant.tenant_id)
        # An interactive sign-in is where a user completes MFA, so users who need it have done it.
        result = self._user_tokens(tenant, app, user, {**form, "scope": form.get("scope") or code.scope}, acr,
                                   mfa_done=user.mfa_required)
        if code.nonce and "id_token" in result:
            # The ID token must echo the sign-in request's nonce (clients reject it otherwise): mint it again with it.
            claims = jwt.decode(result["id_token"], options={"verify_signature": False})
            result["id_token"] = self._sign({**claims, "nonce": code.nonce})
        return result

    def _redeem_refresh_token(self, tenant: Tenant, app: App, form: dict[str, str], acr: str) -> dict[str, Any]:
        if not form.get("refresh_token"):
            raise AadError(900144, name="refresh_token")
        grant = self._refresh_grant(form["refresh_token"])
        if grant is None or (grant.tenant_id, grant.client_id) != (tenant.tenant_id, app.client_id):
            raise AadError(70000)  # unknown, or bound to another client/tenant
        if grant.revoked:
            raise AadError(50173)
        user = self._user_by_oid(tenant, grant.oid)
        if user is None:
            raise AadError(70000)
        return self._user_tokens(tenant, app, user, {**form, "scope": form.get("scope") or grant.scope}, acr,
                                 mfa_done=grant.mfa_done)

    def _on_behalf_of(self, tenant: Tenant, app: App, form: dict[str, str], acr: str) -> dict[str, Any]:
        for required in ("requested_token_use", "assertion", "scope"):
            if not form.get(required):
                raise AadError(900144, name=required)
        if form["requested_token_use"] != "on_behalf_of":
            raise AadError(90014, name="requested_token_use")
        try:
            kid = jwt.get_unverified_header(form["assertion"]).get("kid")
        except jwt.PyJWTError:
            raise AadError(50013, reason="The token is malformed.") from None
        key = next((k for k in self._signing_keys() if k.kid == kid), None)
        if key is None:
            raise AadError(50013, reason=f"The key was not found. Thumbprint of key used by client: '{kid}'.")
        try:
            claims: dict[str, Any] = jwt.decode(
                form["assertion"], key.private_key.public_key(), algorithms=["RS256"], leeway=self.clock_skew,
                audience=[app.client_id, app.api_audience], issuer=self.issuer(tenant.tenant_id),
                options={"require": ["exp", "aud", "iss"]})
        except jwt.ExpiredSignatureError:
            raise AadError(500133) from None
        except jwt.InvalidAudienceError:
            raise AadError(50013, reason="The audience in the assertion does not match the client presenting it: "
                            f"expected '{app.client_id}' or '{app.api_audience}'.") from None
        except jwt.PyJWTError as exc:
            raise AadError(50013, reason=f"{type(exc).__name__}: {exc}") from None
        if claims.get("idtyp") == "app" or "scp" not in claims:
            raise AadError(50013, reason="The assertion is an app-only token; on-behalf-of needs a user token.")
        user = self._user_by_oid(tenant, claims.get("oid"))
        if user is None:
            raise AadError(50034, tenant=tenant.tenant_id)
        return self._user_tokens(tenant, app, user, form, acr, mfa_done="mfa" in claims.get("amr", []))
