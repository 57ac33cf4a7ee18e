"""Offline emulator of the Microsoft Entra ID (Azure AD) v2 endpoints.

Faithful enough for unmodified MSAL (``instance_discovery=False``) and MSAL.js (``knownAuthorities``): OIDC
discovery, JWKS, user realm, the token endpoint (client credentials, password, refresh token, on-behalf-of,
authorization code with PKCE) with client secrets or certificate assertions, and the browser sign-in.
Errors use Azure AD's JSON shape, AADSTS codes and HTTP statuses.

This module holds the HTTP endpoints; the layers under :class:`EntraEmulator` are the directory and
error table (:mod:`devtools.entra_directory`), signing keys and token minting (:mod:`devtools.entra_tokens`),
the token endpoint's grants (:mod:`devtools.entra_grants`) and the interactive sign-in
(:mod:`devtools.entra_authorize`).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import jwt

from devtools.emulator_server import Request, Response, route
from devtools.entra_authorize import EntraAuthorize
from devtools.entra_directory import AadError
from devtools.entra_tokens import AZURE_CLI_CLIENT_ID, InvalidAccessToken

__all__ = ["AZURE_CLI_CLIENT_ID", "EntraEmulator", "InvalidAccessToken"]


class EntraEmulator(EntraAuthorize):
    """Entra ID emulator holding an in-memory directory. Every public method is thread-safe.

    Knobs (plain attributes): ``access_token_lifetime`` (seconds, default 3600);
    ``default_delegated_scopes`` (``scp`` of user tokens requested with ``/.default``);
    ``clock_skew`` (leeway when validating client and OBO assertions; Azure AD allows 5 minutes);
    ``max_refresh_tokens`` (the oldest refresh tokens are forgotten beyond this many).
    """

    # ------------------------------------------------------------------- counters
    def token_requests(self, grant_type: str | None = None, client_id: str | None = None) -> int:
        """Number of POSTs received by any tenant's token endpoint (faulted ones included)."""
        wanted = {k: v for k, v in (("grant_type", grant_type), ("client_id", client_id)) if v is not None}
        return sum(1 for r in self.requests if r.method == "POST" and r.path.endswith("/oauth2/v2.0/token")
                   and all(r.body.get(k) == v for k, v in wanted.items()))

    def discovery_requests(self) -> int:
        """Number of OpenID configuration requests received."""
        return self.count("/v2.0/.well-known/openid-configuration")

    # ----------------------------------------------------------- metadata routes
    @route("GET", r"/(?P<tenant>[^/]+)/v2\.0/\.well-known/openid-configuration")
    def _discovery(self, request: Request) -> Response:
        name = request.path_params["tenant"]
        tenant = self._find_tenant(name)
        if tenant is None:
            return self._error(AadError(90002, error="invalid_tenant", tenant=name), request)
        base = f"{self.base_url}/{tenant.tenant_id}"
        return Response.json({
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": self.issuer(tenant.tenant_id),
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "http_logout_supported": True, "frontchannel_logout_supported": True,
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "name", "oid", "tid", "preferred_username",
                                 "ver", "nonce", "email"],
            "tenant_region_scope": "EU", "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net", "msgraph_host": "graph.microsoft.com",
        })

    @route("GET", r"/(?P<tenant>[^/]+)/discovery/v2\.0/keys")
    def _jwks(self, request: Request) -> Response:
        name = request.path_params["tenant"]
        tenant = self._find_tenant(name)
        if tenant is None and name.lower() != "common":
            return self._error(AadError(90002, error="invalid_tenant", tenant=name), request)
        issuer = self.issuer(tenant.tenant_id if tenant else "{tenantid}")  # "common" publishes a template
        jwks = []
        for key in self._signing_keys():
            numbers = jwt.algorithms.RSAAlgorithm.to_jwk(key.private_key.public_key(), as_dict=True)
            jwks.append({"kty": "RSA", "use": "sig", "kid": key.kid, "x5t": key.kid, "n": numbers["n"],
                         "e": numbers["e"], "x5c": [base64.b64encode(key.cert_der).decode()], "issuer": issuer})
        return Response.json({"keys": jwks})

    @route("GET", r"/common/userrealm/(?P<username>[^/]+)")
    def _user_realm(self, request: Request) -> Response:
        domain = request.path_params["username"].rpartition("@")[2].lower()
        known = self._domain_known(domain)
        body: dict[str, Any] = {"ver": "1.0", "account_type": "Managed" if known else "Unknown",
                                "cloud_instance_name": "microsoftonline.com"}
        if known:
            body.update(domain_name=domain, cloud_audience_urn="urn:federation:MicrosoftOnline")
        return Response.json(body)

    # ------------------------------------------------------------- token endpoint
    @route("POST", r"/(?P<tenant>[^/]+)/oauth2/v2\.0/token")
    def _token_endpoint(self, request: Request) -> Response:
        form = request.form()
        try:
            answer = self._token(request.path_params["tenant"], form, origin=request.headers.get("origin"))
            return Response.json(answer, headers={"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"})
        except AadError as err:
            response = self._error(err, request)
        # Belt and braces: a credential the client sent is never echoed back, whatever the message says.
        body = response.body
        for name in ("client_secret", "password", "client_assertion", "assertion", "refresh_token", "code",
                     "code_verifier"):
            if len(form.get(name, "")) >= 4:
                body = body.replace(json.dumps(form[name])[1:-1].encode(), b"***")
        return dataclasses.replace(response, body=body)

    # --------------------------------------------------------------------- errors
    def _error(self, err: AadError, request: Request) -> Response:
        trace = str(uuid.uuid4())
        correlation = request.headers.get("client-request-id") or str(uuid.uuid4())  # Azure echoes MSAL's id
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        body: dict[str, Any] = {
            "error": err.error,
            "error_description": f"AADSTS{err.code}: {err}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}"
                                 f"\r\nTimestamp: {stamp}",
            "error_codes": [err.code], "timestamp": stamp, "trace_id": trace, "correlation_id": correlation,
            "error_uri": f"{self.base_url}/error?code={err.code}",
        }
        if err.suberror:
            body["suberror"] = err.suberror
        return Response.json(body, err.status, {"x-ms-request-id": trace, "client-request-id": correlation,
                                                "Cache-Control": "no-store, no-cache"})
