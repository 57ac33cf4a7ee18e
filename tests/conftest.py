"""Shared fixtures: the emulators, the function app indexed as the worker does, and settings per test.

Tests call the functions in-process through :class:`devtools.functions_host.FunctionsHost` (the
``app.get_functions()`` index, route templates, auth levels), with real MSAL talking over real
sockets to the Entra ID emulator. Every log record of the session is kept and audited for secrets
and tokens when the session ends.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devtools.entra import EntraEmulator
from devtools.functions_host import FunctionsHost, HostResponse, route_prefix_from_host_json
from devtools.keyvault import KeyVaultEmulator
from devtools.managed_identity import ManagedIdentity, ManagedIdentityEmulator
from devtools.tls import DevCertificateAuthority
from token_broker import broker, platform_identity
from token_broker.settings import SETTING_NAMES

ROOT = Path(__file__).resolve().parents[1]

TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"
DOMAIN = "contoso.com"
CLIENT_ID = "6731de76-14a6-49ae-97bc-6eba6914391e"
CLIENT_SECRET = "broker-secret~Value.0123456789"
EXPIRED_CLIENT_ID = "d3590ed6-52b3-4102-aeff-aad2292ab01c"
EXPIRED_SECRET = "expired-secret~Value.0123456789"
NO_CONSENT_CLIENT_ID = "1950a258-227b-4e31-a9cf-717495945fc2"
NO_CONSENT_SECRET = "no-consent-secret~Value.0123"
MASTER_USER, MASTER_PASSWORD = "pbi-master@contoso.com", "master-Passw0rd!value"
MFA_USER, CA_USER, USER_PASSWORD = "mfa.user@contoso.com", "blocked.user@contoso.com", "user-Passw0rd!value"
ALICE, BOB = "alice@contoso.com", "bob@contoso.com"
POWERBI_RESOURCE = "https://analysis.windows.net/powerbi/api"

#: Every secret value the tests configure: none may appear in a response or a log record.
SECRETS = (CLIENT_SECRET, EXPIRED_SECRET, NO_CONSENT_SECRET, MASTER_PASSWORD, USER_PASSWORD)
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+")

NEEDS_PORT_443 = (
    "the Entra ID emulator could not bind port 443 on its loopback address (needs root or "
    "CAP_NET_BIND_SERVICE), and MSAL's password grant calls the user-realm endpoint without the port"
)


# -- the leak audit over every log record of the session -----------------------------------------------


class _RecordKeeper(logging.Handler):
    """Keeps the final text of every record (message and traceback) of the whole session."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.texts: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # the audit must see even broken records
            text = str(record.msg)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        self.texts.append((record.name, text + "\n" + (record.exc_text or "")))


_KEEPER = _RecordKeeper()


def pytest_configure(config: pytest.Config) -> None:
    logging.getLogger().addHandler(_KEEPER)
    logging.getLogger().setLevel(logging.DEBUG)


def leaks_in(text: str) -> list[str]:
    """Secrets or whole JWTs found in ``text``."""
    found = [f"secret {s[:4]}…" for s in SECRETS if s in text]
    found += [f"jwt {m.group(0)[:16]}…" for m in _JWT.finditer(text)]
    return found


def audit_log_records() -> list[str]:
    """Leaks in the session's log records so far, as 'logger: what' lines."""
    return [f"{name}: {leak}" for name, text in _KEEPER.texts for leak in leaks_in(text)]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leaks = audit_log_records()
    if leaks:
        print("\nLEAK AUDIT FAILED: secrets or tokens in log records:\n  " + "\n  ".join(sorted(set(leaks))[:50]))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    else:
        print(f"\nLeak audit: {len(_KEEPER.texts)} log records, no secret or token found.")


# -- emulators -------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ca() -> Iterator[DevCertificateAuthority]:
    with DevCertificateAuthority() as authority:
        yield authority


@pytest.fixture(scope="session")
def _entra_session(ca: DevCertificateAuthority) -> Iterator[EntraEmulator]:
    with EntraEmulator(ca=ca) as emulator:
        emulator.add_tenant(TENANT, domain=DOMAIN)
        emulator.register_app(TENANT, CLIENT_ID, secret=CLIENT_SECRET, roles=["Tenant.Read.All"], name="Broker")
        emulator.register_app(TENANT, EXPIRED_CLIENT_ID, secret=EXPIRED_SECRET, secret_expired=True)
        emulator.register_app(TENANT, NO_CONSENT_CLIENT_ID, secret=NO_CONSENT_SECRET, consent_granted=False)
        emulator.add_user(TENANT, MASTER_USER, MASTER_PASSWORD)
        emulator.add_user(TENANT, MFA_USER, USER_PASSWORD, mfa_required=True)
        emulator.add_user(TENANT, CA_USER, USER_PASSWORD, conditional_access_blocked=True)
        emulator.add_user(TENANT, ALICE, USER_PASSWORD, roles=["Report.Viewer"])
        emulator.add_user(TENANT, BOB, USER_PASSWORD)
        yield emulator


@pytest.fixture
def entra(_entra_session: EntraEmulator, monkeypatch: pytest.MonkeyPatch, ca: DevCertificateAuthority) -> Iterator[
    EntraEmulator
]:
    """The session's Entra ID emulator, trusted, with counters, faults and knobs reset for this test."""
    # REQUESTS_CA_BUNDLE is exported on this machine and overrides a session's verify; MSAL honours it.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca.ca_bundle_path)
    emulator = _entra_session
    emulator.clear_faults()
    emulator.reset_counters()
    lifetime = emulator.access_token_lifetime
    yield emulator
    emulator.clear_faults()
    emulator.access_token_lifetime = lifetime


@pytest.fixture
def needs_port_443(entra: EntraEmulator) -> None:
    if not entra.on_port_443:
        pytest.skip(NEEDS_PORT_443)


# -- the app's identity and its vault ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def _identity_session(_entra_session: EntraEmulator) -> Iterator[ManagedIdentityEmulator]:
    with ManagedIdentityEmulator(entra=_entra_session, tenant_id=TENANT) as emulator:
        yield emulator


@pytest.fixture(scope="session")
def _vault_session(ca: DevCertificateAuthority, _entra_session: EntraEmulator) -> Iterator[KeyVaultEmulator]:
    with KeyVaultEmulator(ca=ca, entra=_entra_session, tenant_id=TENANT) as vault:
        yield vault


@pytest.fixture(scope="session")
def app_identity(_identity_session: ManagedIdentityEmulator, _vault_session: KeyVaultEmulator) -> ManagedIdentity:
    identity = _identity_session.add_identity()
    _vault_session.grant_secrets_user(identity.principal_id)
    return identity


@pytest.fixture
def vault(_vault_session: KeyVaultEmulator, _identity_session: ManagedIdentityEmulator, app_identity: ManagedIdentity,
          entra: EntraEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[KeyVaultEmulator]:
    """The vault with the broker's secret, and the app running 'on App Service' with its identity."""
    for name, value in _identity_session.environ().items():
        monkeypatch.setenv(name, value)
    platform_identity.reset()
    _vault_session.clear_faults()
    _vault_session.reset_counters()
    _vault_session.set_secret("powerbi-client-secret", CLIENT_SECRET)
    yield _vault_session
    _vault_session.clear_faults()
    platform_identity.reset()


# -- the function app --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def host() -> FunctionsHost:
    import function_app

    return FunctionsHost(function_app.app, route_prefix=route_prefix_from_host_json(ROOT / "host.json"))


@dataclass
class Env:
    """Sets the broker's app settings for one test; the broker is rebuilt from them."""

    monkeypatch: pytest.MonkeyPatch
    entra: EntraEmulator

    def defaults(self) -> dict[str, str]:
        return {
            "POWERBI_TENANT_ID": TENANT,
            "POWERBI_CLIENT_ID": CLIENT_ID,
            "POWERBI_CLIENT_SECRET": CLIENT_SECRET,
            "POWERBI_AUTHORITY_HOST": self.entra.base_url,
            "POWERBI_HTTP_TIMEOUT_SECONDS": "5",
            "CALLER_AUTH": "anonymous",
        }

    def set(self, **settings: str | None) -> None:
        """Apply the defaults overridden by ``settings`` (None removes a setting)."""
        values: dict[str, str | None] = {**self.defaults(), **settings}
        for name in SETTING_NAMES:
            self.monkeypatch.delenv(name, raising=False)
        for name, value in values.items():
            if value is not None:
                self.monkeypatch.setenv(name, value)
        broker.reset()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, entra: EntraEmulator) -> Iterator[Env]:
    configured = Env(monkeypatch, entra)
    configured.set()
    yield configured
    broker.reset()


@pytest.fixture
def call(host: FunctionsHost) -> Callable[..., HostResponse]:
    """``call("GET", "/api/token", headers=..., json=...)`` through the indexed function app."""

    def invoke(method: str, url: str, **kwargs: Any) -> HostResponse:
        response = host.invoke(method, url, **kwargs)
        assert_no_leak(response)
        return response

    return invoke


def assert_no_leak(response: HostResponse) -> None:
    """No configured secret anywhere in a response; no token in an error response or any header."""
    headers = "\n".join(f"{k}: {v}" for k, v in response.headers)
    body = response.body.decode("utf-8", "replace")
    assert leaks_in(headers) == []
    if response.status >= 400:
        assert leaks_in(body) == []
    else:
        assert [s for s in SECRETS if s in body] == []


def assert_problem(response: HostResponse, status: int, code: str) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status and code; returns the document."""
    assert response.status == status, response.text
    assert response.header("content-type") == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status
    assert problem["code"] == code, problem
    assert problem["type"].endswith(code)
    assert problem["title"] and problem["detail"]
    assert "Traceback" not in response.text
    assert response.header("cache-control") == "no-store"
    assert response.header("x-content-type-options") == "nosniff"
    assert problem["requestId"] == response.header("x-request-id")
    return dict(problem)


@pytest.fixture(autouse=True)
def _no_stray_settings() -> Iterator[None]:
    """Settings exported by the developer's shell must not leak into tests."""
    saved = {name: os.environ.pop(name) for name in list(os.environ) if name in SETTING_NAMES}
    yield
    os.environ.update(saved)
