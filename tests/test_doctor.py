"""``python -m token_broker doctor`` against the emulators: a good configuration passes, each broken one fails
the right check with the product's code and fix, and nothing secret is ever printed.

In-process through ``token_broker.doctor.cli.main`` (stdout captured) and once as a real subprocess, with real
MSAL, azure-identity, the Key Vault SDK and requests over real sockets.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devtools.appconfig import AppConfigurationEmulator
from devtools.entra import EntraEmulator
from devtools.keyvault import KeyVaultEmulator
from devtools.managed_identity import ManagedIdentity, ManagedIdentityEmulator
from devtools.powerbi import PowerBIEmulator
from devtools.redis_server import RedisServer
from devtools.tls import DevCertificateAuthority
from tests.conftest import (
    ALICE,
    CLIENT_ID,
    CLIENT_SECRET,
    MASTER_PASSWORD,
    MASTER_USER,
    ROOT,
    TENANT,
    Env,
    leaks_in,
    shared_settings,
)
from token_broker.aad import identity as platform_identity
from token_broker.doctor.cli import main

API = f"api://{CLIENT_ID}"
WRONG_SECRET = "wrong-secret~Value.0123456789"


@dataclass(frozen=True)
class Content:
    """The Power BI tenant the doctor looks at."""

    sales: str
    hidden: str
    shared: str
    plain_report: str
    plain_dataset: str
    rls_report: str
    rls_dataset: str


@pytest.fixture(scope="session")
def _powerbi_session(ca: DevCertificateAuthority, _entra_session: EntraEmulator) -> Iterator[PowerBIEmulator]:
    with PowerBIEmulator(ca=ca, entra=_entra_session) as emulator:
        yield emulator


@pytest.fixture(scope="session")
def content(_powerbi_session: PowerBIEmulator, _entra_session: EntraEmulator) -> Content:
    pbi, principal = _powerbi_session, _entra_session.service_principal_id(TENANT, CLIENT_ID)
    sales = pbi.add_workspace(name="Sales", members={principal})
    hidden = pbi.add_workspace(name="Finance")  # the service principal is not a member
    shared = pbi.add_workspace(name="Sandbox", members={principal}, capacity="shared")
    plain_dataset = pbi.add_dataset(sales, name="Plain")
    rls_dataset = pbi.add_dataset(sales, name="Secured", rls_roles=["Region"])
    return Content(sales, hidden, shared, pbi.add_report(sales, name="Overview", dataset_id=plain_dataset),
                   plain_dataset, pbi.add_report(sales, name="By region", dataset_id=rls_dataset), rls_dataset)


@pytest.fixture
def powerbi(_powerbi_session: PowerBIEmulator, entra: EntraEmulator) -> Iterator[PowerBIEmulator]:
    _powerbi_session.clear_faults()
    yield _powerbi_session
    _powerbi_session.clear_faults()


def good(entra: EntraEmulator, powerbi: PowerBIEmulator, content: Content,
         **extra: str | None) -> dict[str, str | None]:
    """Embedding two reports of one workspace, one of them with row-level security, for jwt callers."""
    return {"POWERBI_API_URL": powerbi.api_url, "EMBED_ALLOWED_WORKSPACES": content.sales,
            "EMBED_ALLOWED_REPORTS": f"{content.plain_report},{content.rls_report}", "CALLER_AUTH": "jwt",
            "CALLER_JWT_ISSUER": entra.issuer(TENANT), "CALLER_JWT_AUDIENCE": API,
            "EMBED_RLS_ROLES": "Report.Viewer=Region", **extra}


def doctor(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """The exit code and stdout of the doctor; no secret or token may be in it."""
    code = main(list(args))
    out = capsys.readouterr().out
    assert leaks_in(out) == [] and WRONG_SECRET not in out
    return code, out


def checks(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, dict[str, Any]]]:
    """The exit code and the ``--json`` results by check name."""
    code, out = doctor(capsys, "--json", *args)
    results = json.loads(out)
    assert all(set(r) == {"check", "status", "detail", "fix", "code"} for r in results)
    assert all(r["fix"] for r in results if r["status"] == "fail"), "every failure carries its fix"
    return code, {r["check"]: r for r in results}


def statuses(results: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {name: r["status"] for name, r in results.items()}


# -- good configurations ------------------------------------------------------------------------------------


def test_a_good_configuration_passes_every_check(env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator,
                                                 content: Content, capsys: pytest.CaptureFixture[str]) -> None:
    env.set(**good(entra, powerbi, content))
    code, out = doctor(capsys)
    lines = out.splitlines()
    assert code == 0, out
    assert lines[0] == "Power BI token broker doctor: settings from the environment"
    assert [line.split(":")[0] for line in lines[1:-1]] == [
        "✓ settings", "✓ token", "✓ workspace", "✓ report", "✓ dataset", "✓ report", "✓ dataset"], out
    token_line = next(line for line in lines if line.startswith("✓ token"))
    for claim in ("aud=https://analysis.windows.net/powerbi/api", f"appid={CLIENT_ID}", f"tid={TENANT}",
                  f"oid={entra.service_principal_id(TENANT, CLIENT_ID)}", "roles=Tenant.Read.All"):
        assert claim in token_line
    assert re.search(r"; expires \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(in \d+ min\)$", token_line)
    assert "'Sales' is visible to the principal" in out and "roles by app role Report.Viewer=Region" in out
    assert lines[-1] == "Result: 0 check(s) failed, 0 warning(s), 7 passed, 0 skipped."


def test_json_from_a_real_process(env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, content: Content) -> None:
    env.set(**good(entra, powerbi, content))
    result = subprocess.run([sys.executable, "-m", "token_broker", "doctor", "--json"], cwd=ROOT, env=dict(os.environ),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert leaks_in(result.stdout + result.stderr) == [] and CLIENT_SECRET not in result.stdout
    results = json.loads(result.stdout)
    assert {r["status"] for r in results} == {"pass"}
    assert [r["check"] for r in results] == [  # in the order of the settings
        "settings", "token", f"workspace:{content.sales}", f"report:{content.plain_report}",
        f"dataset:{content.plain_dataset}", f"report:{content.rls_report}", f"dataset:{content.rls_dataset}"]


def test_key_vault_and_a_certificate_with_the_managed_identity(
    env: Env, vault: KeyVaultEmulator, app_identity: ManagedIdentity, entra: EntraEmulator, ca: DevCertificateAuthority,
    capsys: pytest.CaptureFixture[str]
) -> None:
    certificate = ca.issue_client_certificate("doctor")
    entra.add_certificate(TENANT, CLIENT_ID, certificate.certificate_pem)
    vault.set_certificate("doctor-cert", private_key_pem=certificate.private_key_pem,
                          certificate_pem=certificate.certificate_pem, format="pkcs12")
    env.set(POWERBI_CLIENT_SECRET=None, POWERBI_CLIENT_CERTIFICATE_URI=f"{vault.vault_url}/secrets/doctor-cert",
            AZURE_CLIENT_ID=app_identity.client_id)
    code, results = checks(capsys)
    assert code == 0
    assert statuses(results) == {"settings": "pass", "setting:CALLER_AUTH": "warn", "identity": "pass",
                                 "key_vault:POWERBI_CLIENT_CERTIFICATE_URI": "pass", "certificate": "pass",
                                 "token": "pass", "powerbi": "skip"}
    assert app_identity.principal_id in results["identity"]["detail"]
    assert "thumbprint" in results["certificate"]["detail"]


def test_on_behalf_of_is_skipped_without_a_user_token_and_tested_with_one(
    env: Env, entra: EntraEmulator, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    env.set(POWERBI_GRANT_TYPE="on_behalf_of", CALLER_AUTH="jwt", CALLER_JWT_ISSUER=entra.issuer(TENANT),
            CALLER_JWT_AUDIENCE=API)
    code, results = checks(capsys)
    assert code == 0 and results["token"]["status"] == "skip" and "--user-token" in results["token"]["detail"]
    user_token = entra.issue_access_token(tenant_id=TENANT, audience=API, subject_username=ALICE,
                                          scopes="access_as_user")
    monkeypatch.setattr(sys, "stdin", io.StringIO(user_token + "\n"))
    code, out = doctor(capsys, "--user-token", "-")
    assert code == 0, out
    assert f"upn={ALICE}" in out and "on_behalf_of token" in out and user_token not in out


def test_the_password_grant_shows_the_master_user(needs_port_443: None, env: Env,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    env.set(POWERBI_GRANT_TYPE="password", POWERBI_USERNAME=MASTER_USER, POWERBI_PASSWORD=MASTER_PASSWORD)
    code, results = checks(capsys)
    assert code == 0, results
    assert results["token"]["detail"].startswith("password token: ") and f"upn={MASTER_USER}" in results["token"][
        "detail"]


def test_settings_from_local_settings_json_under_the_environment(
    entra: EntraEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    values = {"FUNCTIONS_WORKER_RUNTIME": "python", "POWERBI_TENANT_ID": TENANT, "POWERBI_CLIENT_ID": CLIENT_ID,
              "POWERBI_CLIENT_SECRET": CLIENT_SECRET, "POWERBI_AUTHORITY_HOST": entra.base_url, "CALLER_AUTH": "nobody"}
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"IsEncrypted": False, "Values": values}), encoding="utf-8-sig")
    monkeypatch.setenv("CALLER_AUTH", "function_key")  # the environment wins, as under Core Tools
    code, out = doctor(capsys, "--settings", str(path))
    assert code == 0, out
    assert out.splitlines()[0].endswith(f"settings from the environment (winning) and the Values of {path}")
    assert "caller auth function_key" in out
    code, results = checks(capsys, "--settings", str(tmp_path / "missing.json"))
    assert code == 1 and results["settings_file"]["status"] == "fail"


def test_settings_from_app_configuration(
    env: Env, store: AppConfigurationEmulator, app_identity: ManagedIdentity, capsys: pytest.CaptureFixture[str]
) -> None:
    env.set(POWERBI_TENANT_ID=None, POWERBI_CLIENT_ID=None, POWERBI_CLIENT_SECRET=None, CALLER_AUTH="function_key",
            AZURE_APPCONFIG_ENDPOINT=store.endpoint, AZURE_CLIENT_ID=app_identity.client_id)
    code, results = checks(capsys)
    assert code == 0, results
    assert results["app_configuration"]["status"] == "pass" and results["token"]["status"] == "pass"


def test_caller_auth_only_in_app_configuration_is_reported_as_ignored(
    env: Env, store: AppConfigurationEmulator, app_identity: ManagedIdentity, capsys: pytest.CaptureFixture[str]
) -> None:
    """The doctor reads the settings through the app's own pipeline: a bootstrap key in the store does not count."""
    store.set("TokenBroker:CALLER_AUTH", "function_key")
    env.set(POWERBI_TENANT_ID=None, POWERBI_CLIENT_ID=None, POWERBI_CLIENT_SECRET=None, CALLER_AUTH=None,
            AZURE_APPCONFIG_ENDPOINT=store.endpoint, AZURE_CLIENT_ID=app_identity.client_id)
    try:
        code, out = doctor(capsys, "--json")
    finally:
        store.delete("TokenBroker:CALLER_AUTH")
    assert code == 1
    caller_auth = [(r["status"], r["code"], r["detail"])
                   for r in json.loads(out) if r["check"] == "setting:CALLER_AUTH"]
    assert [status for status, _, _ in caller_auth] == ["warn", "fail"]
    assert "TokenBroker:CALLER_AUTH in App Configuration is ignored" in caller_auth[0][2]
    assert caller_auth[1][1] == "caller_auth_not_configured"
    store.revoke_access(app_identity.principal_id)
    try:
        code, results = checks(capsys)
    finally:
        store.grant_data_reader(app_identity.principal_id)
    assert code == 1 and results["app_configuration"]["code"] == "appconfig_unavailable"
    assert "App Configuration Data Reader" in results["app_configuration"]["fix"]
    assert statuses(results) == {"app_configuration": "fail", "credential": "skip", "token": "skip", "powerbi": "skip"}


# -- broken configurations ------------------------------------------------------------------------------------


def test_invalid_settings_are_all_reported_at_once(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    env.set(POWERBI_TENANT_ID="not a tenant", POWERBI_CLIENT_ID=None, POWERBI_HTTP_TIMEOUT_SECONDS="soon",
            POWERBI_USERNAME="someone@contoso.com")
    code, out = doctor(capsys)
    assert code == 1
    assert "✗ setting:POWERBI_TENANT_ID: POWERBI_TENANT_ID must be the tenant's GUID" in out
    assert "✗ setting:POWERBI_CLIENT_ID: POWERBI_CLIENT_ID is not set" in out
    assert "✗ setting:POWERBI_HTTP_TIMEOUT_SECONDS: POWERBI_HTTP_TIMEOUT_SECONDS must be a number" in out
    assert "! setting:POWERBI_USERNAME: POWERBI_USERNAME is ignored" in out
    assert "– token: not checked: the settings are not valid" in out
    code, results = checks(capsys)
    assert results["setting:POWERBI_CLIENT_ID"]["code"] == "configuration_invalid"
    assert "Application (client) ID" in results["setting:POWERBI_CLIENT_ID"]["fix"]
    assert statuses(results)["powerbi"] == "skip"


def test_unset_caller_auth_fails_but_the_rest_is_still_checked(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    env.set(CALLER_AUTH=None)
    code, results = checks(capsys)
    assert code == 1 and results["setting:CALLER_AUTH"]["code"] == "caller_auth_not_configured"
    assert results["token"]["status"] == "pass"


def test_a_wrong_client_secret(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    env.set(POWERBI_CLIENT_SECRET=WRONG_SECRET)
    code, out = doctor(capsys)
    assert code == 1
    assert "✗ token: Azure AD rejected the client secret (Azure AD trace id " in out
    assert "    fix: AADSTS7000215: POWERBI_CLIENT_SECRET is not a valid secret of this app registration." in out
    code, results = checks(capsys)
    assert results["token"]["code"] == "aad_invalid_client_secret" and results["powerbi"]["status"] == "skip"


def test_key_vault_refuses_an_identity_without_the_role(
    env: Env, vault: KeyVaultEmulator, _identity_session: ManagedIdentityEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    no_role = _identity_session.add_identity()
    env.set(POWERBI_CLIENT_SECRET=None, POWERBI_CLIENT_SECRET_URI=f"{vault.vault_url}/secrets/powerbi-client-secret",
            AZURE_CLIENT_ID=no_role.client_id)
    code, results = checks(capsys)
    assert code == 1
    failure = results["key_vault:POWERBI_CLIENT_SECRET_URI"]
    assert failure["code"] == "keyvault_forbidden" and "'Key Vault Secrets User' role" in failure["fix"]
    assert results["identity"]["status"] == "pass" and no_role.principal_id in results["identity"]["detail"]
    assert statuses(results)["token"] == statuses(results)["powerbi"] == "skip"


def test_the_app_identity_is_unavailable(env: Env, vault: KeyVaultEmulator, app_identity: ManagedIdentity,
                                         monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"http://127.0.0.1:{port}/msi/token")
    platform_identity.reset()
    env.set(POWERBI_CLIENT_SECRET=None, POWERBI_CLIENT_SECRET_URI=f"{vault.vault_url}/secrets/powerbi-client-secret",
            AZURE_CLIENT_ID=app_identity.client_id)
    code, results = checks(capsys)
    assert code == 1 and results["identity"]["code"] == "managed_identity_unavailable"
    assert "key_vault:POWERBI_CLIENT_SECRET_URI" not in results and results["token"]["status"] == "skip"


def test_a_certificate_that_does_not_parse(env: Env, vault: KeyVaultEmulator, app_identity: ManagedIdentity,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    env.set(POWERBI_CLIENT_SECRET=None, AZURE_CLIENT_ID=app_identity.client_id,
            POWERBI_CLIENT_CERTIFICATE_URI=f"{vault.vault_url}/secrets/powerbi-client-secret")  # a plain secret
    code, out = doctor(capsys)
    assert code == 1
    assert "✓ key_vault:POWERBI_CLIENT_CERTIFICATE_URI" in out
    assert "✗ certificate: The client credential cannot be used [certificate_invalid]" in out
    assert "    fix: The secret named by POWERBI_CLIENT_CERTIFICATE_URI is not a certificate with its private" in out


def test_a_workspace_the_principal_is_not_a_member_of(env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator,
                                                      content: Content, capsys: pytest.CaptureFixture[str]) -> None:
    env.set(**good(entra, powerbi, content, EMBED_ALLOWED_WORKSPACES=f"{content.sales},{content.hidden}",
                   EMBED_ALLOWED_REPORTS=content.plain_report))
    code, results = checks(capsys)
    assert code == 1
    failure = results[f"workspace:{content.hidden}"]
    assert failure["code"] == "powerbi_not_authorized" and "not a member of the workspace" in failure["fix"]
    assert f"object id {entra.service_principal_id(TENANT, CLIENT_ID)}" in failure["fix"]
    assert results[f"workspace:{content.sales}"]["status"] == "pass"
    assert results[f"report:{content.plain_report}"]["status"] == "pass"  # found in the workspace it can see


def test_a_report_that_is_not_found(env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, content: Content,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    missing = "0f1e2d3c-4b5a-4987-a6b5-c4d3e2f1a0b9"
    env.set(**good(entra, powerbi, content, EMBED_ALLOWED_REPORTS=f"{content.plain_report},{missing}"))
    code, out = doctor(capsys)
    assert code == 1
    assert f"✗ report:{missing}: Not found in Power BI (Power BI request id " in out
    code, results = checks(capsys)
    failure = results[f"report:{missing}"]
    assert failure["code"] == "powerbi_not_found" and "correct the id in EMBED_ALLOWED_REPORTS" in failure["fix"]
    assert "It is in none of EMBED_ALLOWED_WORKSPACES ('Sales')" in failure["fix"]


def test_a_row_level_security_dataset_without_roles_fails(env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator,
                                                          content: Content, capsys: pytest.CaptureFixture[str]) -> None:
    """A failure, not a warning: without EMBED_RLS_ROLES the broker refuses every embed request for the report."""
    env.set(**good(entra, powerbi, content, EMBED_RLS_ROLES=None))
    code, results = checks(capsys)
    assert code == 1
    failure = results[f"dataset:{content.rls_dataset}"]
    assert failure["code"] == "embed_rls_roles_missing" and "Set EMBED_RLS_ROLES" in failure["fix"]
    assert results[f"dataset:{content.plain_dataset}"]["status"] == "pass"
    env.set(**good(entra, powerbi, content, CALLER_AUTH="anonymous", CALLER_JWT_ISSUER=None, CALLER_JWT_AUDIENCE=None))
    code, results = checks(capsys)
    assert code == 1 and results[f"dataset:{content.rls_dataset}"]["code"] == "embed_identity_required"


def test_shared_capacity_is_a_warning(env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, content: Content,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    env.set(**good(entra, powerbi, content, EMBED_ALLOWED_WORKSPACES=content.shared, EMBED_ALLOWED_REPORTS=None))
    code, out = doctor(capsys)
    assert code == 0, out
    assert f"! workspace:{content.shared}: 'Sandbox' is on shared capacity [powerbi_embed_quota_exceeded]" in out
    assert "– reports: EMBED_ALLOWED_REPORTS is not set" in out


# -- the command line -------------------------------------------------------------------------------------------


def test_help_documents_the_flags_and_starts_without_the_sdks() -> None:
    result = subprocess.run([sys.executable, "-m", "token_broker", "doctor", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=True)
    for flag in ("--settings PATH", "--json", "--user-token TOKEN", "--verbose", "exit code: 0 when nothing failed"):
        assert flag in result.stdout
    script = ("import sys\nfrom token_broker.__main__ import main\nassert main(['doctor', '--help']) == 0\n"
              "print(','.join(m for m in ('msal', 'requests', 'jwt', 'azure.functions', 'azure.identity',\n"
              "                           'token_broker.config.contract') if m in sys.modules), file=sys.stderr)\n")
    lazy = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          check=True)
    assert lazy.stderr.strip() == ""
    unknown = subprocess.run([sys.executable, "-m", "token_broker", "cure"], cwd=ROOT, capture_output=True, text=True,
                             timeout=60)
    assert unknown.returncode == 2 and "doctor" in unknown.stderr


def test_verbose_writes_the_redacted_log_to_stderr(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    env.set(POWERBI_CLIENT_SECRET=WRONG_SECRET)
    assert main(["--verbose"]) == 1
    captured = capsys.readouterr()
    assert "INFO token_broker.aad.tokens: Creating the MSAL application" in captured.err
    assert WRONG_SECRET not in captured.err + captured.out and leaks_in(captured.err) == []


def test_an_unexpected_error_still_ends_in_a_checklist(env: Env, capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("token_broker.doctor.checks.Doctor._token", broken)
    code, results = checks(capsys)
    assert code == 1 and statuses(results) == {"settings": "pass", "setting:CALLER_AUTH": "warn", "doctor": "fail"}
    assert results["doctor"]["code"] == "internal_error" and "--verbose" in results["doctor"]["fix"]


@pytest.fixture
def store(_store_session: AppConfigurationEmulator, app_identity: ManagedIdentity, vault: KeyVaultEmulator,
          entra: EntraEmulator) -> AppConfigurationEmulator:
    """A store with the broker's settings and its secret as a Key Vault reference, readable by the app."""
    _store_session.grant_data_reader(app_identity.principal_id)
    for name, value in (("POWERBI_TENANT_ID", TENANT), ("POWERBI_CLIENT_ID", CLIENT_ID), ("Sentinel", "1"),
                        ("POWERBI_AUTHORITY_HOST", entra.base_url)):
        _store_session.set(f"TokenBroker:{name}", value)
    _store_session.delete("TokenBroker:CALLER_AUTH")
    _store_session.set_key_vault_reference("TokenBroker:POWERBI_CLIENT_SECRET",
                                           f"{vault.vault_url}/secrets/powerbi-client-secret")
    return _store_session


# -- the shared cache tier (CACHE_REDIS_HOST) ---------------------------------------------------------------


def test_the_shared_cache_key_and_redis_are_checked(env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator,
                                                    content: Content, redis_server: RedisServer, cache_key_uri: str,
                                                    shared_identity: str, capsys: pytest.CaptureFixture[str]) -> None:
    env.set(**good(entra, powerbi, content), **shared_settings(redis_server, cache_key_uri, shared_identity))
    code, results = checks(capsys)
    assert code == 0, results
    assert statuses(results)["shared_cache:key"] == "pass"
    assert statuses(results)["shared_cache:redis"] == "pass"
    assert statuses(results)["shared_cache:roundtrip"] == "pass"
    assert redis_server.address in results["shared_cache:redis"]["detail"]
    assert redis_server.client().keys("tb:doctor:*") == []  # type: ignore[attr-defined]  # cleaned up


def test_an_unreachable_redis_says_what_to_check(env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator,
                                                 content: Content, cache_key_uri: str, shared_identity: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    stopped = RedisServer()  # a free port nobody listens on
    env.set(**good(entra, powerbi, content), **shared_settings(stopped, cache_key_uri, shared_identity))
    code, results = checks(capsys)
    assert code == 1
    assert results["shared_cache:redis"]["code"] == "redis_unreachable"
    assert "CACHE_REDIS_HOST" in results["shared_cache:redis"]["fix"]
    stopped.stop()


def test_a_wrong_redis_password_is_an_auth_failure(env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator,
                                                   content: Content, cache_key_uri: str, shared_identity: str,
                                                   ca: DevCertificateAuthority, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", ca.ca_bundle_path)
    with RedisServer(password="right-Passw0rd-redis", tls_ca=ca) as server:
        env.set(**good(entra, powerbi, content), **{**shared_settings(server, cache_key_uri, shared_identity),
                                                    "CACHE_REDIS_AUTH": "password"},
                CACHE_REDIS_PASSWORD="wrong-Passw0rd-redis")
        code, results = checks(capsys)
    assert code == 1
    assert results["shared_cache:redis"]["code"] == "redis_auth_failed"
    assert "CACHE_REDIS_PASSWORD" in results["shared_cache:redis"]["fix"]


def test_an_invalid_cache_key_fails_the_key_check(env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator,
                                                  content: Content, redis_server: RedisServer, vault: KeyVaultEmulator,
                                                  shared_identity: str, capsys: pytest.CaptureFixture[str]) -> None:
    vault.set_secret("short-cache-key", "c2hvcnQ=")
    env.set(**good(entra, powerbi, content),
            **shared_settings(redis_server, f"{vault.vault_url}/secrets/short-cache-key", shared_identity))
    code, results = checks(capsys)
    assert code == 1
    assert results["shared_cache:key"]["code"] == "cache_encryption_key_invalid"
    assert "openssl rand -base64 32" in results["shared_cache:key"]["fix"]
