"""The offline stack: the Entra ID and Power BI emulators plus the function app served on localhost.

``python -m devtools`` (what ``scripts/offline-stack.sh`` runs) starts it in the foreground. Tests
and benchmarks use :class:`OfflineStack` as a context manager on ephemeral ports. The function app
runs in this process, dispatched through its own ``app.get_functions()`` index, with app settings
that point at the emulators and a throwaway CA trusted through ``REQUESTS_CA_BUNDLE``.

The Power BI emulator holds a demo workspace (shared capacity, the app's service principal a member)
with one report, which the embed settings allow. The dev server also serves ``samples/`` under
``/samples/``: the sample single-page app (``/samples/spa/``) signs users in against the Entra ID
emulator, whose directory registers it as a single-page-app client with the dev server's redirect URIs.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import logging
import os
import secrets
import shlex
import socket
import ssl
import sys
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import urlencode

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .devserver import DevServer
from .emulator_server import EmulatorServer
from .entra import EntraEmulator
from .functions_host import FunctionsHost, HostResponse, route_prefix_from_host_json
from .powerbi import PowerBIEmulator
from .powerbi_embed_page import EMBED_HOST
from .shared_stack import SharedCacheStack
from .tls import DevCertificateAuthority

ROOT = Path(__file__).resolve().parents[1]

# Fixed, recognisable ids so that a developer can keep the same settings across restarts.
TENANT_ID = "0ff1ce00-0000-4000-8000-00000000d0c5"
CLIENT_ID = "0ff1ce00-0000-4000-8000-0000000b40c3"
SPA_CLIENT_ID = "0ff1ce00-0000-4000-8000-0000000005aa"  # the sample single-page app's registration
MASTER_USER = "pbi-master@contoso.com"
DEMO_USER = "alice@contoso.com"  # has the app role the jwt mode requires
NO_ROLE_USER = "bob@contoso.com"  # signs in, but lacks the role: 403
VIEWER_ROLE = "Report.Viewer"
WORKSPACE_ID = "0ff1ce00-0000-4000-8000-00000000da7a"
DATASET_ID = "0ff1ce00-0000-4000-8000-000000da7a5e"
REPORT_ID = "0ff1ce00-0000-4000-8000-0000000e4b3d"
#: With ``profiles=True``: the demo tenant's customer profile, owned by the broker's service principal.
PROFILE_ID = "0ff1ce00-0000-4000-8000-0000000c0570"
SPA_PATH = "/samples/spa/"

PASSWORD_NEEDS_PORT_443 = (
    "the password grant cannot work here: MSAL's user-realm lookup for it always goes to port 443, and the "
    "Entra ID emulator could not bind port 443 on its loopback address. Run as root, lower "
    "net.ipv4.ip_unprivileged_port_start to 443 (sudo sysctl -w net.ipv4.ip_unprivileged_port_start=443), "
    "or use --grant-type client_credentials or on_behalf_of."
)

log = logging.getLogger(__name__)


class OfflineStackError(Exception):
    """The offline stack cannot run as asked in this environment (the message says why and what to do)."""


class OfflineStack:
    """Emulators + function app + dev server, configured for one grant type.

    ``token_lifetime`` is the lifetime of every Azure AD token the Entra ID emulator issues; embed tokens
    never outlive the Azure AD token that created them, so a short one exercises embed token refresh.
    ``static_dir`` (default ``samples/``) is served under ``/samples/``. ``entra_port`` is the Entra ID
    emulator's port (default: 443 when it can be bound, else any). ``spa_options`` add to the sample SPA's
    configuration, which the dev server serves as ``/samples/spa/config.json`` (e.g. ``refreshMarginSeconds``).
    """

    def __init__(
        self,
        *,
        port: int = 7071,
        grant_type: str = "client_credentials",
        caller_auth: str = "anonymous",
        token_lifetime: int = 3600,
        latency: float = 0.0,
        extra_settings: Mapping[str, str] | None = None,
        cors_origins: tuple[str, ...] = (),
        static_dir: Path | None = None,
        entra_port: int | None = None,
        spa_options: Mapping[str, str] | None = None,
        redis: bool = False,
        profiles: bool = False,
    ) -> None:
        self.ca = DevCertificateAuthority()
        self.entra = EntraEmulator(ca=self.ca, port=entra_port)  # None: 443 when it can be bound
        self.powerbi = PowerBIEmulator(ca=self.ca, entra=self.entra)
        self._client_secret = secrets.token_urlsafe(24)
        self._user_password = secrets.token_urlsafe(12)
        self._port = port
        self._grant_type = grant_type
        self._caller_auth = caller_auth
        self._token_lifetime = token_lifetime
        self._latency = latency
        self._extra = dict(extra_settings or {})
        self._cors_origins = cors_origins
        self._static_dir = static_dir if static_dir is not None else ROOT / "samples"
        self._spa_options = dict(spa_options or {})
        self.shared: SharedCacheStack | None = SharedCacheStack(self.ca, self.entra) if redis else None
        self._profiles = profiles
        self.server: DevServer | None = None
        self._saved_environ: dict[str, str | None] = {}

    @property
    def url(self) -> str:
        """Base URL of the function app, e.g. ``http://127.0.0.1:7071``."""
        assert self.server is not None, "start() first"
        return self.server.url

    def settings(self) -> dict[str, str]:
        """The app settings the function app runs with (they include the emulator's secrets)."""
        values = {
            "POWERBI_TENANT_ID": TENANT_ID,
            "POWERBI_CLIENT_ID": CLIENT_ID,
            "POWERBI_CLIENT_SECRET": self._client_secret,
            "POWERBI_GRANT_TYPE": self._grant_type,
            "POWERBI_AUTHORITY_HOST": self.entra.base_url,
            "CALLER_AUTH": self._caller_auth,
            "HEALTH_DETAILS": "true",  # local development: /api/health names every problem and warning
            "POWERBI_API_URL": self.powerbi.api_url,
            "POWERBI_WORKSPACE_ID": WORKSPACE_ID,
            "EMBED_ALLOWED_WORKSPACES": WORKSPACE_ID,
        }
        if self._caller_auth == "jwt":  # the README's recommended setup for a single-page app
            values |= {"CALLER_JWT_ISSUER": self.entra.issuer(TENANT_ID), "CALLER_JWT_AUDIENCE": f"api://{CLIENT_ID}",
                       "CALLER_REQUIRED_ROLES": VIEWER_ROLE,
                       "POWERBI_PROXY_ENABLED": "true"}  # the sample SPA's data calls (issue 16)
        if self._grant_type == "password":
            values |= {"POWERBI_USERNAME": MASTER_USER, "POWERBI_PASSWORD": self._user_password}
        if self.shared is not None:
            values |= self.shared.settings()
        if self._profiles:  # multitenancy (docs/MULTITENANCY.md): the demo tenant is one customer with a profile
            values |= {"POWERBI_PROFILE_CLAIM": "tid", "POWERBI_PROFILES": json.dumps({TENANT_ID: PROFILE_ID})}
        return values | self._extra

    def user_token(self, username: str = DEMO_USER, *, lifetime: int = 3600) -> str:
        """An access token for this app's API, as a signed-in user's SPA would send it."""
        return self.entra.issue_access_token(
            tenant_id=TENANT_ID, audience=f"api://{CLIENT_ID}", subject_username=username,
            scopes="access_as_user", lifetime=lifetime,
        )

    def spa_config(self) -> dict[str, str]:
        """The sample SPA's configuration for this stack, served as ``/samples/spa/config.json``."""
        return {"authority": f"{self.entra.base_url}/{TENANT_ID}", "clientId": SPA_CLIENT_ID,
                "scope": f"api://{CLIENT_ID}/access_as_user", "reportId": REPORT_ID, "workspaceId": WORKSPACE_ID,
                "powerbiApiUrl": self.powerbi.api_url, **self._spa_options}

    def spa_url(self, **options: str) -> str:
        """The sample SPA's address, as the README gives it (``http://localhost:<port>/samples/spa/``).

        The page reads its settings from ``config.json`` beside it; ``options`` go into the query string,
        which overrides them.
        """
        port = self.url.rpartition(":")[2]
        return f"http://localhost:{port}{SPA_PATH}" + (f"?{urlencode(options)}" if options else "")

    def browser_flags(self) -> list[str]:
        """Chromium flags that make a browser reach and trust the emulators, as a user's would reach Azure's.

        ``--ignore-certificate-errors-spki-list`` accepts exactly the emulators' keys (a browser does not read
        ``REQUESTS_CA_BUNDLE``); ``--host-resolver-rules`` sends Power BI's embed host to the Power BI emulator,
        because powerbi-client embeds only URLs on Power BI's own hosts.
        """
        return [f"--ignore-certificate-errors-spki-list={','.join(self.browser_spki_hashes())}",
                f"--host-resolver-rules=MAP {EMBED_HOST} {self.powerbi.host}"]

    def chromium_command(self) -> str:
        """A shell command that opens the sample SPA in a Chromium that reaches the emulators."""
        flags = ["--user-data-dir=$(mktemp -d)", *(shlex.quote(flag) for flag in self.browser_flags())]
        return " ".join(["chromium", *flags, self.spa_url()])

    def browser_spki_hashes(self) -> list[str]:
        """SPKI hashes of the emulators' certificates, for ``chromium --ignore-certificate-errors-spki-list``.

        A browser does not read ``REQUESTS_CA_BUNDLE``; this flag makes Chromium accept exactly these keys.
        """
        return [_spki_sha256(emulator) for emulator in (self.entra, self.powerbi)]

    def start(self) -> Self:
        """Start the emulators, configure the environment, import the app and serve it.

        Raises :class:`OfflineStackError` for a configuration that cannot work here (the password grant
        without port 443) and ``OSError`` when the port is taken; either way nothing is left running.
        """
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> Self:
        self.entra.start()
        if self._grant_type == "password" and not self.entra.on_port_443:
            raise OfflineStackError(PASSWORD_NEEDS_PORT_443)
        verified = self._caller_auth in ("jwt", "easyauth")
        if self._profiles and (self._grant_type != "client_credentials" or not verified):
            raise OfflineStackError("--profiles needs --grant-type client_credentials and --caller-auth jwt (profiles "
                                    "belong to a service principal and map verified callers; docs/MULTITENANCY.md)")
        self.entra.access_token_lifetime = self._token_lifetime
        self.entra.latency = self._latency
        self.entra.add_tenant(TENANT_ID, domain="contoso.com")
        self.entra.register_app(TENANT_ID, CLIENT_ID, secret=self._client_secret, roles=["Tenant.Read.All"],
                                name="Power BI token broker (offline)")
        self.entra.add_user(TENANT_ID, MASTER_USER, self._user_password, name="Power BI master user")
        self.entra.add_user(TENANT_ID, DEMO_USER, self._user_password, roles=[VIEWER_ROLE], name="Alice")
        self.entra.add_user(TENANT_ID, NO_ROLE_USER, self._user_password, name="Bob")
        self.powerbi.start()
        self.powerbi.latency = self._latency
        # Report embed URLs point at this emulator's embed page, on Power BI's host name (see browser_flags).
        self.powerbi.embed_origin = f"https://{EMBED_HOST}" + ("" if self.powerbi.on_port_443 else
                                                               f":{self.powerbi.port}")
        members = {self.entra.service_principal_id(TENANT_ID, CLIENT_ID)}
        if self._profiles:  # the workspace belongs to the customer's profile, not to the service principal itself
            members = {self.powerbi.add_profile(members.pop(), "Contoso", PROFILE_ID)}
        self.powerbi.add_workspace(WORKSPACE_ID, name="Demo", members=members, capacity="shared")
        self.powerbi.add_dataset(WORKSPACE_ID, DATASET_ID, name="Sales")
        self.powerbi.add_report(WORKSPACE_ID, REPORT_ID, name="Sales overview", dataset_id=DATASET_ID)
        platform: dict[str, str] = {}
        if self.shared is not None:
            platform = self.shared.start(TENANT_ID)
        self._apply_environ({**self.settings(), **platform, "REQUESTS_CA_BUNDLE": self.ca.ca_bundle_path})
        from token_broker import runtime

        runtime.reset()
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        app = importlib.import_module("function_app").app
        host = FunctionsHost(app, route_prefix=route_prefix_from_host_json(ROOT / "host.json"),
                             base_url=f"http://localhost:{self._port}")
        self.server = DevServer(host, port=self._port, cors_origins=self._cors_origins,
                                static_dir=self._static_dir, static_prefix="/samples/")
        # The SPA is served by the dev server itself, so it calls the broker same-origin; only the Entra ID
        # emulator is cross-origin, and it allows the origins of registered single-page-app redirect URIs.
        port = self.server.url.rpartition(":")[2]
        self.entra.register_app(TENANT_ID, SPA_CLIENT_ID, name="Power BI sample SPA (offline)", spa_redirect_uris=[
            f"http://{host_name}:{port}{SPA_PATH}" for host_name in ("127.0.0.1", "localhost")])
        # The sample calls Power BI's REST API directly (the WireBootstrap data source), as a browser app would.
        self.powerbi.cors_origins = frozenset(f"http://{host_name}:{port}" for host_name in ("127.0.0.1", "localhost"))
        self.server.generated[f"{SPA_PATH}config.json"] = lambda: HostResponse(
            200, [("Content-Type", "application/json"), ("Cache-Control", "no-store")],
            json.dumps(self.spa_config()).encode())
        self.server.start()
        return self

    def stop(self) -> None:
        """Stop serving and restore the environment (also after a failed :meth:`start`)."""
        if self.server is not None:
            self.server.stop()
            self.server = None
        self.powerbi.stop()
        if self.shared is not None:
            self.shared.stop()
        self.entra.stop()
        for name, value in self._saved_environ.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_environ = {}
        self.ca.close()

    def _apply_environ(self, values: Mapping[str, str]) -> None:
        for name, value in values.items():
            self._saved_environ.setdefault(name, os.environ.get(name))
            os.environ[name] = value

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def banner(self) -> str:
        """What to print at start: where things are and how to try them (secrets masked)."""
        lines = [
            f"Offline stack: function app on {self.url} (Entra ID emulator on {self.entra.base_url}, "
            f"Power BI emulator on {self.powerbi.base_url})",
            f"Demo: workspace {WORKSPACE_ID} ('Demo'), report {REPORT_ID} ('Sales overview'), "
            f"users {DEMO_USER} (role {VIEWER_ROLE}) and {NO_ROLE_USER} (no role)",
            f"Sample SPA: {self.spa_url()}" + ("" if self._caller_auth == "jwt" else
                                                " (its sign-in is checked by the broker with --caller-auth jwt)"),
            "  in a Chromium that reaches and trusts the emulators:",
            f"  {self.chromium_command()}",
            "App settings:",
        ]
        if self._profiles:
            lines[2:2] = [f"Profile mode: callers of tenant {TENANT_ID} (claim tid) act as profile {PROFILE_ID} "
                          "('Contoso'), which owns the Demo workspace; /api/token is refused (docs/MULTITENANCY.md)"]
        for name, value in sorted(self.settings().items()):
            shown = "<generated>" if name in ("POWERBI_CLIENT_SECRET", "POWERBI_PASSWORD") else value
            lines.append(f"  {name}={shown}")
        auth, port = "", self.url.rpartition(":")[2]
        lines += ["Try:", f"  curl -s {self.url}/api/health"]
        if self._grant_type == "on_behalf_of" or self._caller_auth == "jwt":
            auth = f"-H 'Authorization: Bearer {self.user_token()}' "
            lines += [f"  curl -s {auth}{self.url}/api/token",
                      f"  (a token of {DEMO_USER}, valid for an hour, for this app's API)"]
        else:
            lines += [f"  curl -s {self.url}/api/token"]
        lines += [f"  curl -s {auth}{self.url}/api/reports/{REPORT_ID}/embed",
                  f"  curl -s {auth}-H 'Content-Type: application/json' -d '{{\"reports\": [{{\"id\": "
                  f"\"{REPORT_ID}\"}}]}}' {self.url}/api/embed-token",
                  "  bash scripts/offline-stack.sh " + ("" if port == "7071" else f"--port {port} ") + "--doctor"]
        if not self.entra.on_port_443:
            lines.append("Note: the Entra ID emulator is not on port 443, so --grant-type password is unavailable "
                         "(MSAL's user-realm lookup ignores the port).")
        return "\n".join(lines)


def _spki_sha256(emulator: EmulatorServer) -> str:
    """Base64 SHA-256 of the public key an emulator serves (what Chromium's SPKI allow-list holds)."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # reading the certificate, not trusting it
    with socket.create_connection((emulator.host, emulator.port), timeout=5) as raw, \
            context.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    spki = x509.load_der_x509_certificate(der).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()
