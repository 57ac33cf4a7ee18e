"""Interactive sign-in for the Entra ID emulator: the authorization endpoint, sign-out and CORS for browsers.

Enough of Azure AD's browser side for an unmodified MSAL.js single-page app (authorization code flow with
PKCE): ``GET /{tenant}/oauth2/v2.0/authorize`` validates the request like Azure AD (unknown clients and
unregistered redirect URIs get an error *page*, never a redirect; later errors are redirected back with
``error`` and ``error_description``) and shows a small sign-in page that lists the tenant's users: offline,
picking one is the sign-in, no password. Posting the choice redirects to the app with a one-time code bound
to the client, redirect URI, PKCE challenge and nonce, which the token endpoint redeems
(:meth:`devtools.entra_grants.EntraGrants._redeem_code`). There is no single sign-on session, so
``prompt=none`` answers ``login_required``. Discovery is readable from any origin, the token endpoint from the
origins of registered single-page-app redirect URIs (as Azure AD allows them to redeem codes cross-origin).
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import re
import uuid
from collections.abc import Mapping
from urllib.parse import urlencode, urlsplit

from devtools.emulator_server import Request, Response, route
from devtools.entra_directory import AadError, App, Tenant
from devtools.entra_grants import EntraGrants

__all__ = ["EntraAuthorize"]

_AUTHORIZE = r"/(?P<tenant>[^/]+)/oauth2/v2\.0/authorize"
_TOKEN_PATH = re.compile(r"/[^/]+/oauth2/v2\.0/token")
_DISCOVERY_PATH = re.compile(r"/[^/]+/v2\.0/\.well-known/openid-configuration")
_RESPONSE_MODES = ("query", "fragment", "form_post")
# The sign-in page is a top-level page only: framing it would allow clickjacking. (No form-action: the form's
# answer redirects to the app, and form-action restricts redirect targets too.)
_PAGE_HEADERS = {"Cache-Control": "no-store", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
                 "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"}
_STYLE = ("body{font:15px system-ui,sans-serif;background:#f2f2f2;margin:0;display:flex;justify-content:center}"
          "main{background:#fff;margin:48px 16px;padding:32px 40px;max-width:420px;width:100%;"
          "box-shadow:0 2px 6px #0003}h1{font-size:22px;margin:0 0 8px}p{color:#444}"
          "button{display:block;width:100%;text-align:left;margin:8px 0;padding:10px 12px;border:1px solid #ccc;"
          "background:#fff;font:inherit;cursor:pointer}button:hover{background:#eef5fc;border-color:#0067b8}"
          "small{display:block;color:#666}.error{color:#a80000}")


class _RedirectError(Exception):
    """An authorization error that is sent back to the (already validated) redirect URI."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error, self.description = error, description

    @classmethod
    def aad(cls, code: int, *, error: str | None = None) -> _RedirectError:
        """The redirect form of an AADSTS error: its OAuth error and "AADSTS<code>: <message>"."""
        aad = AadError(code)
        return cls(error or aad.error, f"AADSTS{aad.code}: {aad}")


def _origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL, as browsers write it in the ``Origin`` header."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _page(title: str, body: str, status: int = 200) -> Response:
    document = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
                f'<meta name="viewport" content="width=device-width"><style>{_STYLE}</style></head>'
                f"<body><main>{body}</main></body></html>")
    return Response(status, document.encode(), _PAGE_HEADERS, content_type="text/html; charset=utf-8")


def _error_page(err: AadError) -> Response:
    return _page("Sign in: error", f"<h1>Sorry, but we're having trouble signing you in.</h1>"
                                   f'<p class="error">AADSTS{err.code}: {html.escape(str(err))}</p>', err.status)


class EntraAuthorize(EntraGrants):
    """The authorization and sign-out endpoints, and CORS headers for browser callers."""

    # -------------------------------------------------------------------- routes
    @route("GET", _AUTHORIZE)
    def _authorize_page(self, request: Request) -> Response:
        return self._authorize(request.path_params["tenant"], request.query, username=None)

    @route("POST", _AUTHORIZE)
    def _authorize_sign_in(self, request: Request) -> Response:
        params = request.form()
        return self._authorize(request.path_params["tenant"], params, username=params.get("login", ""))

    @route("GET", r"/(?P<tenant>[^/]+)/oauth2/v2\.0/logout")
    def _logout(self, request: Request) -> Response:
        # Nothing to forget (no sign-in session); like Azure AD, only a registered address is redirected to.
        target = request.query.get("post_logout_redirect_uri", "")
        if target and target in self.spa_redirect_uris():
            state = request.query.get("state")
            return _redirect(target + (("?" + urlencode({"state": state})) if state else ""))
        return _page("Signed out", "<h1>You signed out of your account</h1><p>It's a good idea to close all "
                                   "browser windows.</p>")

    def handle(self, request: Request) -> Response:
        """The routes' answer, with the CORS headers a browser needs to read it."""
        response = super().handle(request)
        origin = request.headers.get("origin")
        if not origin:
            return response
        if _DISCOVERY_PATH.fullmatch(request.path):
            allowed = "*"  # public metadata
        elif _TOKEN_PATH.fullmatch(request.path) and origin.lower() in {_origin(u) for u in self.spa_redirect_uris()}:
            allowed = origin
        else:
            return response
        return dataclasses.replace(response, headers={**response.headers, "Access-Control-Allow-Origin": allowed,
                                                      "Vary": "Origin"})

    # ---------------------------------------------------------------- the flow
    def _authorize(self, tenant_name: str, params: Mapping[str, str], *, username: str | None) -> Response:
        """Validate an authorization request; show the sign-in page (``username`` None) or complete it."""
        try:
            tenant, app, redirect_uri = self._authorization_client(tenant_name, params)
        except AadError as err:
            return _error_page(err)
        try:
            if params.get("response_type") != "code":
                raise _RedirectError("unsupported_response_type", "AADSTS70003: The app requested an unsupported "
                                     f"response type '{params.get('response_type', '')}'.")
            if params.get("response_mode", "query") not in _RESPONSE_MODES:
                raise _RedirectError("invalid_request", "AADSTS90014: The required field 'response_mode' is "
                                     "missing or invalid.")
            if not params.get("code_challenge") or params.get("code_challenge_method") != "S256":
                raise _RedirectError.aad(9002325)
            if params.get("prompt") == "none":
                raise _RedirectError.aad(50058)
            if username is None:
                return self._sign_in_page(tenant, app, params)
            user = tenant.users.get(username.lower())
            if user is None:
                return self._sign_in_page(tenant, app, params, error=str(AadError(50034, tenant=tenant.domain)))
            if user.conditional_access_blocked:
                raise _RedirectError.aad(53003, error="access_denied")
            code = self._authorization_code(tenant, app, redirect_uri, user.oid, params.get("scope", ""),
                                            params["code_challenge"], params.get("nonce") or None)
        except _RedirectError as err:
            return _respond(redirect_uri, params, {"error": err.error, "error_description": err.description})
        client_info = json.dumps({"uid": user.oid, "utid": tenant.tenant_id}).encode()
        answer = {"code": code, "session_state": str(uuid.uuid4())}
        if params.get("client_info") == "1":
            answer["client_info"] = base64.urlsafe_b64encode(client_info).rstrip(b"=").decode()
        return _respond(redirect_uri, params, answer)

    def _authorization_client(self, tenant_name: str, params: Mapping[str, str]) -> tuple[Tenant, App, str]:
        """Tenant, app and redirect URI, or the AadError that Azure AD shows as a page instead of redirecting."""
        tenant = self._find_tenant(tenant_name)
        if tenant is None:
            raise AadError(90002, tenant=tenant_name)
        for required in ("client_id", "redirect_uri"):
            if not params.get(required):
                raise AadError(900144, name=required)
        app = tenant.apps.get(params["client_id"])
        if app is None:
            raise AadError(700016, client_id=params["client_id"], domain=tenant.domain)
        if params["redirect_uri"] not in app.spa_redirect_uris:
            raise AadError(50011, redirect_uri=params["redirect_uri"], client_id=app.client_id)
        return tenant, app, params["redirect_uri"]

    def _sign_in_page(self, tenant: Tenant, app: App, params: Mapping[str, str], *, error: str = "") -> Response:
        carried = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                          for k, v in params.items() if k != "login")
        with self._dir_lock:
            users = sorted(tenant.users.values(), key=lambda u: u.username)
        buttons = "".join(
            f'<button name="login" value="{html.escape(u.username)}">{html.escape(u.name)}'
            f"<small>{html.escape(u.username)}{' · ' + html.escape(', '.join(u.roles)) if u.roles else ''}</small>"
            "</button>" for u in users)
        problem = f'<p class="error">{html.escape(error)}</p>' if error else ""
        body = (f"<h1>Sign in</h1><p>to <b>{html.escape(app.name)}</b> ({html.escape(tenant.domain)}). "
                f"Entra ID emulator: pick an account, no password needed offline.</p>{problem}"
                f'<form method="post">{carried}{buttons}</form>')
        return _page("Sign in to your account", body)


def _redirect(location: str) -> Response:
    return Response(302, b"", {"Location": location, "Cache-Control": "no-store"}, content_type="text/html")


def _respond(redirect_uri: str, params: Mapping[str, str], answer: dict[str, str]) -> Response:
    """Send the authorization answer (plus the request's ``state``) back in the requested response mode."""
    if params.get("state"):
        answer = {**answer, "state": params["state"]}
    mode = params.get("response_mode", "query")
    if mode == "form_post":
        fields = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                         for k, v in answer.items())
        document = (f'<!doctype html><html><body onload="document.forms[0].submit()"><form method="post" '
                    f'action="{html.escape(redirect_uri)}">{fields}</form></body></html>')
        return Response(200, document.encode(), {"Cache-Control": "no-store"}, content_type="text/html; charset=utf-8")
    separator = "#" if mode == "fragment" else ("&" if "?" in redirect_uri else "?")
    return _redirect(redirect_uri + separator + urlencode(answer))
