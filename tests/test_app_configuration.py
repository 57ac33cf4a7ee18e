"""Settings from an App Configuration store: the real provider library, the app's managed identity, a Key
Vault reference, environment values winning, and refresh through the sentinel key."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from devtools.appconfig import AppConfigurationEmulator
from devtools.entra import EntraEmulator
from devtools.functions_host import HostResponse
from devtools.keyvault import KeyVaultEmulator
from devtools.managed_identity import ManagedIdentity
from tests.conftest import CLIENT_ID, TENANT, Env, assert_problem

Call = Callable[..., HostResponse]


@pytest.fixture
def store(_store_session: AppConfigurationEmulator, app_identity: ManagedIdentity, vault: KeyVaultEmulator,
          entra: EntraEmulator) -> Iterator[AppConfigurationEmulator]:
    store = _store_session
    store.grant_data_reader(app_identity.principal_id)
    store.set("TokenBroker:POWERBI_TENANT_ID", TENANT)
    store.set("TokenBroker:POWERBI_CLIENT_ID", CLIENT_ID)
    store.set("TokenBroker:POWERBI_AUTHORITY_HOST", entra.base_url)
    secret_uri = f"{vault.vault_url}/secrets/powerbi-client-secret"
    store.set_key_vault_reference("TokenBroker:POWERBI_CLIENT_SECRET", secret_uri)
    store.set("TokenBroker:Sentinel", "1")
    store.clear_faults()
    yield store
    store.clear_faults()


def store_env(env: Env, store: AppConfigurationEmulator, identity: ManagedIdentity, **extra: str | None) -> None:
    env.set(POWERBI_TENANT_ID=None, POWERBI_CLIENT_ID=None, POWERBI_CLIENT_SECRET=None, POWERBI_AUTHORITY_HOST=None,
            CALLER_AUTH="anonymous", AZURE_APPCONFIG_ENDPOINT=store.endpoint, AZURE_CLIENT_ID=identity.client_id,
            **extra)


def test_settings_and_a_key_vault_reference_come_from_the_store(
    env: Env, store: AppConfigurationEmulator, app_identity: ManagedIdentity, call: Call
) -> None:
    store_env(env, store, app_identity)
    response = call("GET", "/api/token")
    assert response.status == 200, response.text
    health = call("GET", "/api/health").json()
    assert health["settingsSource"] == "app settings + App Configuration"
    assert health["credential"] == "client secret"


def test_environment_values_win_over_the_store(
    env: Env, store: AppConfigurationEmulator, app_identity: ManagedIdentity, call: Call
) -> None:
    store.set("TokenBroker:POWERBI_GRANT_TYPE", "password")  # would need a username: invalid if it won
    store_env(env, store, app_identity, POWERBI_GRANT_TYPE="client_credentials")
    try:
        assert call("GET", "/api/health").json()["grantType"] == "client_credentials"
    finally:
        store.delete("TokenBroker:POWERBI_GRANT_TYPE")


def test_a_label_overrides_unlabeled_values(
    env: Env, store: AppConfigurationEmulator, app_identity: ManagedIdentity, call: Call
) -> None:
    store.set("TokenBroker:POWERBI_TOKEN_REFRESH_MARGIN_SECONDS", "not a number")
    store.set("TokenBroker:POWERBI_TOKEN_REFRESH_MARGIN_SECONDS", "120", label="production")
    store_env(env, store, app_identity, AZURE_APPCONFIG_LABEL="production")
    try:
        assert call("GET", "/api/health").status == 200
    finally:
        store.delete("TokenBroker:POWERBI_TOKEN_REFRESH_MARGIN_SECONDS")
        store.delete("TokenBroker:POWERBI_TOKEN_REFRESH_MARGIN_SECONDS", label="production")


def test_a_changed_sentinel_rebuilds_the_broker_with_new_settings(
    env: Env, store: AppConfigurationEmulator, app_identity: ManagedIdentity, call: Call
) -> None:
    store_env(env, store, app_identity, AZURE_APPCONFIG_REFRESH_SECONDS="1")
    assert call("GET", "/api/token").status == 200
    store.set("TokenBroker:CALLER_REQUIRED_SCOPES", "access_as_user")  # needs a caller identity: now invalid
    store.set("TokenBroker:Sentinel", "2")
    try:
        time.sleep(1.2)
        call("GET", "/api/health")  # this request performs the due sentinel check
        problem = assert_problem(call("GET", "/api/health"), 503, "configuration_invalid")
        assert {p["setting"] for p in problem["problems"]} >= {"CALLER_REQUIRED_SCOPES"}
    finally:
        store.delete("TokenBroker:CALLER_REQUIRED_SCOPES")


def test_store_without_the_reader_role_is_503_naming_the_fix(
    env: Env, store: AppConfigurationEmulator, app_identity: ManagedIdentity, call: Call
) -> None:
    store.revoke_access(app_identity.principal_id)
    store_env(env, store, app_identity)
    try:
        problem = assert_problem(call("GET", "/api/token"), 503, "appconfig_unavailable")
        assert problem["setting"] == "AZURE_APPCONFIG_ENDPOINT" and "Data Reader" in problem["detail"]
        started = time.monotonic()
        assert_problem(call("GET", "/api/health"), 503, "appconfig_unavailable")
        assert time.monotonic() - started < 1, "a failed store is retried after a pause, not on every request"
    finally:
        store.grant_data_reader(app_identity.principal_id)


def test_the_app_indexes_without_reading_the_store(env: Env, app_identity: ManagedIdentity) -> None:
    """Importing function_app (what the worker does to index it) must not wait for an unreachable store."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    env.set(AZURE_APPCONFIG_ENDPOINT="https://127.0.0.1:1", POWERBI_TENANT_ID=None)
    script = "import function_app; print(' '.join(f.get_function_name() for f in function_app.app.get_functions()))"
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env=dict(os.environ), check=True)
    assert {"token", "embed_token", "report_embed", "health"} <= set(result.stdout.split())
    assert time.monotonic() - started < 5
