"""Every credential path end to end: Key Vault at run time, certificates, managed-identity federation, rotation.

Real azure-identity (ManagedIdentityCredential against the App Service managed-identity endpoint emulator),
real azure-keyvault-secrets (the challenge protocol against the Key Vault emulator) and real MSAL.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import jwt
import pytest

from devtools.entra import EntraEmulator
from devtools.functions_host import HostResponse
from devtools.keyvault import KeyVaultEmulator
from devtools.managed_identity import ManagedIdentity, ManagedIdentityEmulator
from devtools.tls import DevCertificateAuthority
from tests.conftest import (
    CLIENT_ID,
    CLIENT_SECRET,
    MASTER_PASSWORD,
    MASTER_USER,
    TENANT,
    Env,
    assert_problem,
)
from token_broker.aad import identity as platform_identity

Call = Callable[..., HostResponse]
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def secret_uri(vault: KeyVaultEmulator, name: str = "powerbi-client-secret") -> str:
    return f"{vault.vault_url}/secrets/{name}"


def kv_env(env: Env, vault: KeyVaultEmulator, identity: ManagedIdentity, **extra: str | None) -> None:
    env.set(POWERBI_CLIENT_SECRET=None, POWERBI_CLIENT_SECRET_URI=secret_uri(vault), AZURE_CLIENT_ID=identity.client_id,
            **extra)


def test_client_secret_read_from_key_vault_with_the_managed_identity(
    env: Env, vault: KeyVaultEmulator, app_identity: ManagedIdentity, entra: EntraEmulator, call: Call
) -> None:
    kv_env(env, vault, app_identity)
    assert call("GET", "/api/token").status == 200
    assert call("GET", "/api/health").json()["credential"] == "client secret from Key Vault"
    assert vault.secret_reads("powerbi-client-secret") == 1
    env_broker_calls = [call("GET", "/api/token").status for _ in range(5)]
    assert env_broker_calls == [200] * 5 and vault.secret_reads("powerbi-client-secret") == 1


def test_a_rotated_secret_is_picked_up_without_a_failed_request(
    env: Env, vault: KeyVaultEmulator, app_identity: ManagedIdentity, entra: EntraEmulator, call: Call
) -> None:
    rotated = "rotated-secret~Value.9876543210"
    entra.access_token_lifetime = 3
    kv_env(env, vault, app_identity, POWERBI_TOKEN_REFRESH_MARGIN_SECONDS="1")
    statuses = [call("GET", "/api/token").status]
    entra.rotate_secret(TENANT, CLIENT_ID, rotated)  # Azure AD now rejects the old secret...
    vault.set_secret("powerbi-client-secret", rotated)  # ...and the vault has the new one
    try:
        time.sleep(2.2)  # the cached token is due for refresh
        statuses += [call("GET", "/api/token").status for _ in range(3)]
        assert statuses == [200] * 4
        assert vault.secret_reads("powerbi-client-secret") == 2
        assert entra.count(path_contains="/oauth2/v2.0/token") == 3  # first, rejected, retried
    finally:
        entra.rotate_secret(TENANT, CLIENT_ID, CLIENT_SECRET)


def test_a_rotated_password_is_picked_up_without_a_failed_request(
    needs_port_443: None, env: Env, vault: KeyVaultEmulator, app_identity: ManagedIdentity, entra: EntraEmulator,
    call: Call
) -> None:
    vault.set_secret("master-password", MASTER_PASSWORD)
    entra.access_token_lifetime = 3
    env.set(POWERBI_GRANT_TYPE="password", POWERBI_USERNAME=MASTER_USER, AZURE_CLIENT_ID=app_identity.client_id,
            POWERBI_PASSWORD_URI=secret_uri(vault, "master-password"), POWERBI_TOKEN_REFRESH_MARGIN_SECONDS="1")
    statuses = [call("GET", "/api/token").status]
    new_password = "new-master-Passw0rd!value"
    entra.update_user(TENANT, MASTER_USER, password=new_password)
    entra.revoke_refresh_tokens(TENANT, MASTER_USER)  # so the refresh has to sign in with the password again
    vault.set_secret("master-password", new_password)
    try:
        time.sleep(2.2)
        statuses += [call("GET", "/api/token").status for _ in range(2)]
        assert statuses == [200] * 3
        assert entra.token_requests(grant_type="password") == 3  # first, rejected (old password), retried
        assert vault.secret_reads("master-password") == 2
    finally:
        entra.update_user(TENANT, MASTER_USER, password=MASTER_PASSWORD)


@pytest.mark.parametrize("fmt", ["pem", "pkcs12"])
@pytest.mark.parametrize("send_x5c", [False, True])
def test_certificate_from_key_vault(
    env: Env, vault: KeyVaultEmulator, app_identity: ManagedIdentity, entra: EntraEmulator, call: Call,
    ca: DevCertificateAuthority, fmt: str, send_x5c: bool
) -> None:
    certificate = ca.issue_client_certificate(f"broker-{fmt}")
    entra.add_certificate(TENANT, CLIENT_ID, certificate.certificate_pem)
    vault.set_certificate("broker-cert", private_key_pem=certificate.private_key_pem,
                          certificate_pem=certificate.certificate_pem, format=fmt)  # type: ignore[arg-type]
    env.set(POWERBI_CLIENT_SECRET=None, POWERBI_CLIENT_CERTIFICATE_URI=secret_uri(vault, "broker-cert"),
            POWERBI_CLIENT_CERTIFICATE_SEND_X5C=str(send_x5c).lower(), AZURE_CLIENT_ID=app_identity.client_id)
    response = call("GET", "/api/token")
    assert response.status == 200, response.text
    form = next(r.body for r in reversed(entra.requests) if "/oauth2/v2.0/token" in r.path)
    assert form["client_assertion_type"] == ASSERTION_TYPE and "client_secret" not in form
    header = jwt.get_unverified_header(form["client_assertion"])
    assert ("x5c" in header) is send_x5c


def test_a_secret_that_is_not_a_certificate_is_named(
    env: Env, vault: KeyVaultEmulator, app_identity: ManagedIdentity, call: Call
) -> None:
    env.set(POWERBI_CLIENT_SECRET=None, POWERBI_CLIENT_CERTIFICATE_URI=secret_uri(vault),
            AZURE_CLIENT_ID=app_identity.client_id)
    problem = assert_problem(call("GET", "/api/token"), 503, "certificate_invalid")
    assert problem["setting"] == "POWERBI_CLIENT_CERTIFICATE_URI"


def test_secretless_federation_with_the_managed_identity(
    env: Env, vault: KeyVaultEmulator, app_identity: ManagedIdentity, entra: EntraEmulator,
    _identity_session: ManagedIdentityEmulator, call: Call
) -> None:
    entra.add_federated_credential(TENANT, CLIENT_ID, issuer=entra.issuer(TENANT), subject=app_identity.principal_id)
    env.set(POWERBI_CLIENT_SECRET=None, POWERBI_CLIENT_ASSERTION="managed_identity",
            AZURE_CLIENT_ID=app_identity.client_id)
    response = call("GET", "/api/token")
    assert response.status == 200, response.text
    assert call("GET", "/api/health").json()["credential"] == "managed identity federation"
    assert _identity_session.token_requests(resource="api://AzureADTokenExchange") >= 1
    form = next(r.body for r in reversed(entra.requests) if "/oauth2/v2.0/token" in r.path)
    assert form["client_assertion_type"] == ASSERTION_TYPE


def test_federation_with_an_identity_the_app_does_not_trust(
    env: Env, vault: KeyVaultEmulator, entra: EntraEmulator, _identity_session: ManagedIdentityEmulator, call: Call
) -> None:
    stranger = _identity_session.add_identity()
    env.set(POWERBI_CLIENT_SECRET=None, POWERBI_CLIENT_ASSERTION="managed_identity", AZURE_CLIENT_ID=stranger.client_id)
    problem = assert_problem(call("GET", "/api/token"), 502, "aad_no_matching_federated_credential")
    assert problem["setting"] == "AZURE_CLIENT_ID"


# -- what goes wrong, named ------------------------------------------------------------------------------------


def test_vault_403_without_the_role(env: Env, vault: KeyVaultEmulator, _identity_session: ManagedIdentityEmulator,
                                    call: Call) -> None:
    no_role = _identity_session.add_identity()
    kv_env(env, vault, no_role)
    problem = assert_problem(call("GET", "/api/token"), 503, "keyvault_forbidden")
    assert problem["setting"] == "POWERBI_CLIENT_SECRET_URI" and "Key Vault Secrets User" in problem["detail"]


def test_missing_secret(env: Env, vault: KeyVaultEmulator, app_identity: ManagedIdentity, call: Call) -> None:
    env.set(POWERBI_CLIENT_SECRET=None, POWERBI_CLIENT_SECRET_URI=secret_uri(vault, "no-such-secret"),
            AZURE_CLIENT_ID=app_identity.client_id)
    problem = assert_problem(call("GET", "/api/token"), 503, "keyvault_secret_not_found")
    assert "no-such-secret" in problem["detail"]


def test_disabled_secret(env: Env, vault: KeyVaultEmulator, app_identity: ManagedIdentity, call: Call) -> None:
    vault.set_secret("disabled-secret", CLIENT_SECRET, enabled=False)
    env.set(POWERBI_CLIENT_SECRET=None, POWERBI_CLIENT_SECRET_URI=secret_uri(vault, "disabled-secret"),
            AZURE_CLIENT_ID=app_identity.client_id)
    assert_problem(call("GET", "/api/token"), 503, "keyvault_secret_disabled")


def test_vault_unreachable(env: Env, vault: KeyVaultEmulator, app_identity: ManagedIdentity, call: Call) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    env.set(POWERBI_CLIENT_SECRET=None, POWERBI_CLIENT_SECRET_URI=f"https://127.0.0.1:{port}/secrets/x",
            AZURE_CLIENT_ID=app_identity.client_id)
    started = time.monotonic()
    assert_problem(call("GET", "/api/token"), 503, "keyvault_unreachable")
    assert time.monotonic() - started < 15


def test_managed_identity_endpoint_down(env: Env, vault: KeyVaultEmulator, app_identity: ManagedIdentity,
                                        call: Call, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"http://127.0.0.1:{port}/msi/token")
    platform_identity.reset()
    kv_env(env, vault, app_identity)
    problem = assert_problem(call("GET", "/api/token"), 503, "managed_identity_unavailable")
    assert problem["setting"] == "AZURE_CLIENT_ID"


def test_secrets_read_from_the_vault_are_redacted_from_logs(
    env: Env, vault: KeyVaultEmulator, app_identity: ManagedIdentity, call: Call, caplog: pytest.LogCaptureFixture
) -> None:
    vault.set_secret("powerbi-client-secret", "wrong-but-secret-Value.123456")
    kv_env(env, vault, app_identity)
    assert_problem(call("GET", "/api/token"), 502, "aad_invalid_client_secret")
    import logging

    logging.getLogger("token_broker.aad.tokens").warning("echo %s", "wrong-but-secret-Value.123456")
    assert "wrong-but-secret-Value.123456" not in caplog.text


def test_off_azure_the_developers_azure_cli_login_reads_the_vault(
    env: Env, vault: KeyVaultEmulator, entra: EntraEmulator, call: Call, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path
) -> None:
    """No IDENTITY_ENDPOINT: the broker asks `az account get-access-token`, as on a developer's machine.

    The fake `az` on PATH answers like the Azure CLI with a token the Entra emulator issued to a developer
    who holds Key Vault Secrets User; no secret is on disk.
    """
    developer = "dev@contoso.com"
    with contextlib.suppress(ValueError):  # the directory is session-wide: the user may exist already
        entra.add_user(TENANT, developer, "dev-Passw0rd!value")
    token = entra.issue_access_token(tenant_id=TENANT, audience=vault.resource, subject_username=developer)
    vault.grant_secrets_user(jwt.decode(token, options={"verify_signature": False})["oid"])
    answer = json.dumps({"accessToken": token, "expires_on": int(time.time()) + 3600, "tokenType": "Bearer",
                         "tenant": TENANT, "subscription": "00000000-0000-0000-0000-000000000000"})
    fake_az = tmp_path / "az"
    fake_az.write_text(f"#!/bin/sh\ncat <<'JSON'\n{answer}\nJSON\n")
    fake_az.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.delenv("IDENTITY_ENDPOINT")
    monkeypatch.delenv("IDENTITY_HEADER")
    platform_identity.reset()
    env.set(POWERBI_CLIENT_SECRET=None, POWERBI_CLIENT_SECRET_URI=secret_uri(vault))
    response = call("GET", "/api/token")
    assert response.status == 200, response.text
    assert vault.secret_reads("powerbi-client-secret") == 1


def test_a_key_vault_read_timeout_is_503_not_500(
    env: Env, vault: KeyVaultEmulator, app_identity: ManagedIdentity, entra: EntraEmulator, call: Call
) -> None:
    """Found in the security review: a vault slower than the read timeout raised azure-core's
    ServiceResponseError, which nothing mapped, so the caller got a 500."""
    kv_env(env, vault, app_identity, POWERBI_HTTP_TIMEOUT_SECONDS="0.5")
    vault.set_latency(3.0, path_prefix="/secrets/")
    try:
        problem = assert_problem(call("GET", "/api/token"), 503, "keyvault_unreachable")
    finally:
        vault.set_latency(0.0, path_prefix="/secrets/")
    assert problem["setting"] == "POWERBI_CLIENT_SECRET_URI" and "did not answer in time" in problem["detail"]
    assert entra.token_requests() == 0
