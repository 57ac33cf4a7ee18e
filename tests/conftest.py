"""Shared fixtures: the emulators, the function app indexed as the worker does, and settings per test.

Tests call the functions in-process through :class:`devtools.functions_host.FunctionsHost` (the
``app.get_functions()`` index, route templates, auth levels), with real MSAL talking over real
sockets to the Entra ID emulator. Every log record of the session is kept and audited for secrets
and tokens when the session ends.
"""

from __future__ import annotations

import base64
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest

from devtools.appconfig import AppConfigurationEmulator
from devtools.entra import EntraEmulator
from devtools.functions_host import FunctionsHost, HostResponse, route_prefix_from_host_json
from devtools.keyvault import KeyVaultEmulator
from devtools.managed_identity import ManagedIdentity, ManagedIdentityEmulator
from devtools.powerbi import PowerBIEmulator
from devtools.redis_server import RedisServer, RedisServerMissing, redis_server_path
from devtools.tls import DevCertificateAuthority
from token_broker import runtime
from token_broker.aad import identity as platform_identity
from token_broker.config.contract import SETTING_NAMES
from token_broker.support import redaction

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
API = f"api://{CLIENT_ID}"  # the broker's own API: the audience of callers' tokens in jwt mode

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


def secrets_to_find() -> set[str]:
    """The configured secrets and every secret the broker registered at run time (Key Vault values...)."""
    return set(SECRETS) | set(redaction.registered_secrets())


def leaks_in(text: str, *, tokens: bool = True) -> list[str]:
    """Secrets (and, unless ``tokens`` is False, whole JWTs) found in ``text``."""
    found = [f"secret {s[:4]}…" for s in secrets_to_find() if s in text]
    if tokens:
        found += [f"jwt {m.group(0)[:16]}…" for m in _JWT.finditer(text)]
    return found


def audit_log_records() -> list[str]:
    """Leaks in the session's log records so far, as 'logger: what' lines."""
    return [f"{name}: {leak}" for name, text in _KEEPER.texts for leak in leaks_in(text)]


_RESPONSE_LEAKS: list[str] = []
_RESPONSES_AUDITED = [0]


def audit_response(method: str, url: str, response: HostResponse) -> list[str]:
    """Leaks in one response: secrets anywhere; tokens in headers and in error bodies."""
    headers = "\n".join(f"{k}: {v}" for k, v in response.headers)
    body = response.body.decode("utf-8", "replace")
    leaks = leaks_in(headers) + leaks_in(body, tokens=response.status >= 400)
    return [f"{method} {url.split('?')[0]} -> {response.status}: {leak}" for leak in leaks]


@pytest.fixture(autouse=True, scope="session")
def _audit_every_response() -> Iterator[None]:
    """Every response of the function app in the whole run (in-process, dev server, offline stack) is audited.

    FunctionsHost.handle is the one path every request takes, so it is wrapped for the session.
    """
    original = FunctionsHost.handle

    def audited(self: FunctionsHost, method: str, url: str, *args: Any, **kwargs: Any) -> HostResponse:
        response = original(self, method, url, *args, **kwargs)
        _RESPONSES_AUDITED[0] += 1
        _RESPONSE_LEAKS.extend(audit_response(method, url, response))
        return response

    FunctionsHost.handle = audited  # type: ignore[method-assign]
    yield
    FunctionsHost.handle = original  # type: ignore[method-assign]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leaks = audit_log_records() + _RESPONSE_LEAKS
    if leaks:
        print("\nLEAK AUDIT FAILED: secrets or tokens in log records or responses:\n  "
              + "\n  ".join(sorted(set(leaks))[:50]))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    else:
        print(f"\nLeak audit: {len(_KEEPER.texts)} log records and {_RESPONSES_AUDITED[0]} responses, "
              "no secret or token found.")


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
def trust_dev_ca(monkeypatch: pytest.MonkeyPatch, ca: DevCertificateAuthority) -> None:
    """Trust the emulators' throwaway CA for this test.

    REQUESTS_CA_BUNDLE is exported on this machine and overrides a requests session's verify; MSAL and
    azure-core honour it too.
    """
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca.ca_bundle_path)


@pytest.fixture
def entra(_entra_session: EntraEmulator, trust_dev_ca: None) -> Iterator[EntraEmulator]:
    """The session's Entra ID emulator, trusted, with counters, faults and knobs reset for this test."""
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


# -- Redis (the shared cache tier) -------------------------------------------------------------------------

CACHE_KEY_SECRET = "cache-encryption-key"


@pytest.fixture(scope="session")
def _redis_session() -> Iterator[RedisServer]:
    try:
        redis_server_path()
    except RedisServerMissing as err:  # scripts/test.sh installs it: missing here is a broken setup, not a skip
        pytest.fail(str(err))
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_server(_redis_session: RedisServer) -> Iterator[RedisServer]:
    """Debian's redis-server on loopback (no persistence), empty for each test; restarted if a test killed it."""
    _redis_session.start()
    _redis_session.client().flushall()  # type: ignore[attr-defined]
    yield _redis_session
    _redis_session.thaw()
    _redis_session.start()


def new_cache_key() -> str:
    """A cache encryption key as `openssl rand -base64 32` prints it."""
    return base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
def cache_key_uri(vault: KeyVaultEmulator) -> str:
    """A fresh version of the shared cache's key in the vault; its versionless identifier."""
    vault.set_secret(CACHE_KEY_SECRET, new_cache_key())
    return f"{vault.vault_url}/secrets/{CACHE_KEY_SECRET}"


@pytest.fixture
def shared_identity(app_identity: ManagedIdentity) -> str:
    """AZURE_CLIENT_ID of the app's user-assigned identity (it may read the vault)."""
    return app_identity.client_id


def shared_settings(redis_server: RedisServer, key_uri: str, client_id: str | None = None) -> dict[str, str]:
    """The CACHE_* settings of a broker using ``redis_server`` (auth none: loopback, no TLS), read with the app's
    identity (``client_id``: AZURE_CLIENT_ID)."""
    settings = {"CACHE_REDIS_HOST": redis_server.address, "CACHE_REDIS_AUTH": "none",
                "CACHE_ENCRYPTION_KEY_URI": key_uri}
    if client_id:
        settings["AZURE_CLIENT_ID"] = client_id
    return settings


# -- App Configuration ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _store_session(ca: DevCertificateAuthority, _entra_session: EntraEmulator) -> Iterator[AppConfigurationEmulator]:
    with AppConfigurationEmulator(ca=ca, entra=_entra_session, tenant_id=TENANT) as store:
        yield store


# -- Power BI ----------------------------------------------------------------------------------------------


CACHE_USERS = tuple(f"cache-{n}@contoso.com" for n in range(5))


class World:
    """Workspaces, datasets and reports of the Power BI emulator for these tests."""

    def __init__(self, powerbi: PowerBIEmulator, sp_oid: str) -> None:
        self.sales = powerbi.add_workspace(name="Sales", members={sp_oid})
        self.other = powerbi.add_workspace(name="Other", members={sp_oid})
        self.plain_dataset = powerbi.add_dataset(self.sales, name="Plain")
        self.rls_dataset = powerbi.add_dataset(self.sales, name="Secured", rls_roles=["Region", "Auditor"])
        self.plain_report = powerbi.add_report(self.sales, name="Overview", dataset_id=self.plain_dataset)
        self.second_report = powerbi.add_report(self.sales, name="Details", dataset_id=self.plain_dataset)
        self.rls_report = powerbi.add_report(self.sales, name="By region", dataset_id=self.rls_dataset)
        self.other_report = powerbi.add_report(self.other, name="Elsewhere", dataset_id=powerbi.add_dataset(self.other))
        self.shared = powerbi.add_workspace(name="Shared", members={sp_oid}, capacity="shared")
        self.shared_report = powerbi.add_report(self.shared, dataset_id=powerbi.add_dataset(self.shared))


@pytest.fixture(scope="session")
def _powerbi_session(ca: DevCertificateAuthority, _entra_session: EntraEmulator) -> Iterator[PowerBIEmulator]:
    with PowerBIEmulator(ca=ca, entra=_entra_session) as emulator:
        yield emulator


@pytest.fixture(scope="session")
def world(_powerbi_session: PowerBIEmulator, _entra_session: EntraEmulator) -> World:
    sp_token = _entra_session.issue_access_token(tenant_id=TENANT, audience=POWERBI_RESOURCE, client_id=CLIENT_ID)
    for username in CACHE_USERS:
        _entra_session.add_user(TENANT, username, "user-Passw0rd!value")
    return World(_powerbi_session, jwt.decode(sp_token, options={"verify_signature": False})["oid"])


@pytest.fixture
def powerbi(_powerbi_session: PowerBIEmulator, entra: EntraEmulator) -> Iterator[PowerBIEmulator]:
    _powerbi_session.clear_faults()
    _powerbi_session.reset_counters()
    _powerbi_session.service_principals_enabled = True
    yield _powerbi_session
    _powerbi_session.clear_faults()
    _powerbi_session.service_principals_enabled = True


def embed_settings(entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, **extra: str) -> dict[str, str]:
    return {"POWERBI_API_URL": powerbi.api_url, "EMBED_ALLOWED_WORKSPACES": f"{world.sales},{world.shared}",
            "CALLER_AUTH": "jwt", "CALLER_JWT_ISSUER": entra.issuer(TENANT), "CALLER_JWT_AUDIENCE": API,
            "EMBED_RLS_ROLES": "Report.Viewer=Region", **extra}


# -- the function app --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def host() -> FunctionsHost:
    # Indexed as the worker would with no CALLER_AUTH in the app settings: the token routes are ANONYMOUS,
    # whatever the first test to use the host has set (function_key is tested in its own process).
    saved = os.environ.pop("CALLER_AUTH", None)
    try:
        import function_app
    finally:
        if saved is not None:
            os.environ["CALLER_AUTH"] = saved

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
            "HEALTH_DETAILS": "true",  # as in local development: /api/health names every problem
        }

    def set(self, **settings: str | None) -> None:
        """Apply the defaults overridden by ``settings`` (None removes a setting)."""
        values: dict[str, str | None] = {**self.defaults(), **settings}
        for name in SETTING_NAMES:
            self.monkeypatch.delenv(name, raising=False)
        for name, value in values.items():
            if value is not None:
                self.monkeypatch.setenv(name, value)
        runtime.reset()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, entra: EntraEmulator) -> Iterator[Env]:
    configured = Env(monkeypatch, entra)
    configured.set()
    yield configured
    runtime.reset()


@pytest.fixture
def call(host: FunctionsHost) -> Callable[..., HostResponse]:
    """``call("GET", "/api/token", headers=..., json=...)`` through the indexed function app."""

    def invoke(method: str, url: str, **kwargs: Any) -> HostResponse:
        response = host.invoke(method, url, **kwargs)
        assert_no_leak(response)
        return response

    return invoke


def assert_no_leak(response: HostResponse) -> None:
    """No secret anywhere in a response; no token in an error response or any header (fails the test now)."""
    assert audit_response("", "", response) == []


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
