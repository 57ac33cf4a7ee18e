"""The offline stack: the Entra ID emulator plus the function app served on localhost.

``python -m devtools`` (what ``scripts/offline-stack.sh`` runs) starts it in the foreground. Tests
and benchmarks use :class:`OfflineStack` as a context manager on ephemeral ports. The function app
runs in this process, dispatched through its own ``app.get_functions()`` index, with app settings
that point at the emulator and a throwaway CA trusted through ``REQUESTS_CA_BUNDLE``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

from .devserver import DevServer
from .entra import EntraEmulator
from .functions_host import FunctionsHost, route_prefix_from_host_json
from .local_settings import load_local_settings
from .tls import DevCertificateAuthority

ROOT = Path(__file__).resolve().parents[1]

# Fixed, recognisable ids so that a developer can keep the same settings across restarts.
TENANT_ID = "0ff1ce00-0000-4000-8000-00000000d0c5"
CLIENT_ID = "0ff1ce00-0000-4000-8000-0000000b40c3"
MASTER_USER = "pbi-master@contoso.com"
DEMO_USER = "alice@contoso.com"

log = logging.getLogger(__name__)


class OfflineStack:
    """Emulator + function app + dev server, configured for one grant type."""

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
    ) -> None:
        self.ca = DevCertificateAuthority()
        self.entra = EntraEmulator(ca=self.ca)
        self._client_secret = secrets.token_urlsafe(24)
        self._user_password = secrets.token_urlsafe(12)
        self._port = port
        self._grant_type = grant_type
        self._caller_auth = caller_auth
        self._token_lifetime = token_lifetime
        self._latency = latency
        self._extra = dict(extra_settings or {})
        self._cors_origins = cors_origins
        self._static_dir = static_dir
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
        }
        if self._caller_auth == "jwt":
            values |= {"CALLER_JWT_ISSUER": self.entra.issuer(TENANT_ID), "CALLER_JWT_AUDIENCE": f"api://{CLIENT_ID}"}
        if self._grant_type == "password":
            values |= {"POWERBI_USERNAME": MASTER_USER, "POWERBI_PASSWORD": self._user_password}
        return values | self._extra

    def user_token(self, username: str = DEMO_USER, *, lifetime: int = 3600) -> str:
        """An access token for this app's API, as a signed-in user's SPA would send it."""
        return self.entra.issue_access_token(
            tenant_id=TENANT_ID, audience=f"api://{CLIENT_ID}", subject_username=username,
            scopes="access_as_user", lifetime=lifetime,
        )

    def start(self) -> Self:
        """Start the emulator, configure the environment, import the app and serve it."""
        self.entra.start()
        self.entra.access_token_lifetime = self._token_lifetime
        self.entra.latency = self._latency
        self.entra.add_tenant(TENANT_ID, domain="contoso.com")
        self.entra.register_app(TENANT_ID, CLIENT_ID, secret=self._client_secret, roles=["Tenant.Read.All"],
                                name="Power BI token broker (offline)")
        self.entra.add_user(TENANT_ID, MASTER_USER, self._user_password, name="Power BI master user")
        self.entra.add_user(TENANT_ID, DEMO_USER, self._user_password, roles=["Report.Viewer"], name="Alice")
        self._apply_environ({**self.settings(), "REQUESTS_CA_BUNDLE": self.ca.ca_bundle_path})
        from token_broker import broker

        broker.reset()
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        app = importlib.import_module("function_app").app
        host = FunctionsHost(app, route_prefix=route_prefix_from_host_json(ROOT / "host.json"),
                             base_url=f"http://localhost:{self._port}")
        self.server = DevServer(host, port=self._port, cors_origins=self._cors_origins,
                                static_dir=self._static_dir)
        self.server.start()
        return self

    def stop(self) -> None:
        """Stop serving and restore the environment."""
        if self.server is not None:
            self.server.stop()
        self.entra.stop()
        for name, value in self._saved_environ.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
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
            f"Offline stack: function app on {self.url} (Entra ID emulator on {self.entra.base_url})",
            "App settings:",
        ]
        for name, value in sorted(self.settings().items()):
            shown = "<generated>" if name in ("POWERBI_CLIENT_SECRET", "POWERBI_PASSWORD") else value
            lines.append(f"  {name}={shown}")
        lines += ["Try:", f"  curl -s {self.url}/api/health"]
        if self._grant_type == "on_behalf_of" or self._caller_auth == "jwt":
            lines += [f"  curl -s -H 'Authorization: Bearer {self.user_token()}' {self.url}/api/token",
                      f"  (a token of {DEMO_USER}, valid for an hour, for this app's API)"]
        else:
            lines += [f"  curl -s {self.url}/api/token"]
        if not self.entra.on_port_443:
            lines.append(
                "Note: the emulator could not bind port 443 on its loopback address, so the password grant "
                "is unavailable (MSAL's user-realm lookup ignores the port). Run as root or lower "
                "net.ipv4.ip_unprivileged_port_start to 443 to use it."
            )
        return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Start the offline stack in the foreground until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m devtools", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=7071, help="function app port (0: any free port)")
    parser.add_argument("--grant-type", default="client_credentials",
                        choices=("client_credentials", "password", "on_behalf_of"))
    parser.add_argument("--caller-auth", default="anonymous", help="CALLER_AUTH for the function app")
    parser.add_argument("--token-lifetime", type=int, default=3600, help="emulator token lifetime, seconds")
    parser.add_argument("--latency", type=float, default=0.0, help="emulator latency per request, seconds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host_settings = load_local_settings(ROOT / "local.settings.json")
    stack = OfflineStack(port=args.port, grant_type=args.grant_type, caller_auth=args.caller_auth,
                         token_lifetime=args.token_lifetime, latency=args.latency,
                         cors_origins=tuple(host_settings.cors_origins))
    stack.start()
    print(stack.banner(), flush=True)
    try:
        assert stack.server is not None
        stack.server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
    return 0
