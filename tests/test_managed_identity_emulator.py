"""Tests of the App Service managed-identity emulator and of federated identity credentials in the Entra ID
emulator, over real sockets with the real azure-identity, azure-keyvault-secrets and MSAL.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import jwt
import msal
import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError
from azure.identity import ClientAssertionCredential, CredentialUnavailableError, ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient
from cryptography.hazmat.primitives.asymmetric import rsa

from devtools.entra import EntraEmulator
from devtools.keyvault import KeyVaultEmulator
from devtools.managed_identity import FEDERATION_AUDIENCE, ManagedIdentity, ManagedIdentityEmulator
from devtools.tls import DevCertificateAuthority

TENANT = "3c9d8e7f-0000-4000-8000-0000000000c3"
OTHER_TENANT = "3c9d8e7f-0000-4000-8000-0000000000d4"
BROKER_APP = "c0000000-0000-4000-8000-0000000000c3"  # no secret, no certificate: federation only
POWERBI_SCOPE = "https://analysis.windows.net/powerbi/api/.default"
EXCHANGE_SCOPE = f"{FEDERATION_AUDIENCE}/.default"


# ---------------------------------------------------------------------------------------------- fixtures
# The session CA of tests/conftest.py, trusted for every test of this module.
pytestmark = pytest.mark.usefixtures("trust_dev_ca")


@pytest.fixture(scope="module")
def entra(ca: DevCertificateAuthority) -> Iterator[EntraEmulator]:
    with EntraEmulator(ca=ca) as emulator:
        emulator.add_tenant(TENANT, domain="contoso.com")
        emulator.add_tenant(OTHER_TENANT, domain="fabrikam.com")
        emulator.register_app(TENANT, BROKER_APP, roles=["Tenant.Read.All"], name="Broker")
        yield emulator


@pytest.fixture(scope="module")
def _mi(entra: EntraEmulator) -> Iterator[ManagedIdentityEmulator]:
    with ManagedIdentityEmulator(entra=entra, tenant_id=TENANT) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def system_identity(_mi: ManagedIdentityEmulator) -> ManagedIdentity:
    return _mi.add_identity(user_assigned=False)


@pytest.fixture(scope="module")
def user_identity(_mi: ManagedIdentityEmulator, entra: EntraEmulator) -> ManagedIdentity:
    identity = _mi.add_identity()
    # The broker app trusts this identity's tokens: secretless federation.
    entra.add_federated_credential(TENANT, BROKER_APP, issuer=entra.issuer(TENANT), subject=identity.principal_id)
    return identity


@pytest.fixture(scope="module")
def other_identity(_mi: ManagedIdentityEmulator) -> ManagedIdentity:
    return _mi.add_identity()


@pytest.fixture
def mi(_mi: ManagedIdentityEmulator, monkeypatch: pytest.MonkeyPatch, system_identity: ManagedIdentity,
       user_identity: ManagedIdentity, other_identity: ManagedIdentity) -> Iterator[ManagedIdentityEmulator]:
    """The endpoint, exported to the environment as App Service does, with counters and faults reset."""
    for name, value in _mi.environ().items():
        monkeypatch.setenv(name, value)
    for name in ("IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT", "MSI_ENDPOINT", "MSI_SECRET"):
        monkeypatch.delenv(name, raising=False)  # they would select another managed-identity flavour
    _mi.reset_counters()
    yield _mi
    _mi.clear_faults()


@pytest.fixture(scope="module")
def vault(ca: DevCertificateAuthority, entra: EntraEmulator, system_identity: ManagedIdentity,
          user_identity: ManagedIdentity) -> Iterator[KeyVaultEmulator]:
    with KeyVaultEmulator(ca=ca, entra=entra, tenant_id=TENANT) as emulator:
        emulator.set_secret("powerbi-client-secret", "from-the-vault")
        emulator.grant_secrets_user(system_identity.principal_id)
        emulator.grant_secrets_user(user_identity.principal_id)
        emulator.grant_secrets_user(entra.service_principal_id(TENANT, BROKER_APP))
        yield emulator


def get_raw(mi: ManagedIdentityEmulator, header: str | None = "default", **params: str) -> requests.Response:
    headers = {"X-IDENTITY-HEADER": mi.identity_header if header == "default" else header} if header else {}
    return requests.get(mi.endpoint, params={"api-version": "2019-08-01", **params}, headers=headers, timeout=5)


def federated_app(entra: EntraEmulator, assertion: str, client_id: str = BROKER_APP) -> Any:
    # A callable: MSAL 1.39 deprecates a static client_assertion string (it would eventually expire).
    return msal.ConfidentialClientApplication(client_id, client_credential={"client_assertion": lambda: assertion},
                                              authority=f"{entra.base_url}/{TENANT}", instance_discovery=False)


# ------------------------------------------------------------------------------------------- protocol
def test_token_endpoint_protocol(mi: ManagedIdentityEmulator, entra: EntraEmulator,
                                 user_identity: ManagedIdentity) -> None:
    assert mi.endpoint.startswith("http://127.0.0.1:") and mi.endpoint.endswith("/msi/token")
    response = get_raw(mi, resource="https://vault.azure.net", client_id=user_identity.client_id)
    body = response.json()
    assert response.status_code == 200 and set(body) == {"access_token", "expires_on", "resource", "token_type",
                                                          "client_id"}
    assert (body["resource"], body["token_type"], body["client_id"]) == ("https://vault.azure.net", "Bearer",
                                                                         user_identity.client_id)
    assert isinstance(body["expires_on"], str) and int(body["expires_on"]) > time.time() + 3000
    claims = entra.verify_access_token(body["access_token"], audience="https://vault.azure.net")
    assert claims["oid"] == claims["sub"] == user_identity.principal_id and claims["idtyp"] == "app"
    assert (claims["appid"], claims["tid"], claims["xms_mirid"]) == (user_identity.client_id, TENANT,
                                                                      user_identity.resource_id)
    assert mi.token_requests("https://vault.azure.net") == 1


@pytest.mark.parametrize("selector", ["principal_id", "object_id", "mi_res_id"])
def test_user_assigned_identity_selectors(mi: ManagedIdentityEmulator, entra: EntraEmulator,
                                          user_identity: ManagedIdentity, selector: str) -> None:
    value = user_identity.resource_id if selector == "mi_res_id" else user_identity.principal_id
    token = get_raw(mi, resource="https://r.example", **{selector: value}).json()["access_token"]
    assert entra.verify_access_token(token, audience="https://r.example")["oid"] == user_identity.principal_id


def test_system_assigned_identity_is_the_default(mi: ManagedIdentityEmulator, entra: EntraEmulator,
                                                 system_identity: ManagedIdentity) -> None:
    body = get_raw(mi, resource="https://r.example").json()
    assert body["client_id"] == system_identity.client_id
    claims = entra.verify_access_token(body["access_token"], audience="https://r.example")
    assert claims["oid"] == system_identity.principal_id and "/Microsoft.Web/sites/" in claims["xms_mirid"]


@pytest.mark.parametrize(("header", "params", "status", "message"), [
    (None, {}, 400, "X-IDENTITY-HEADER"),
    ("wrong-header-value", {}, 401, "X-IDENTITY-HEADER"),
    ("default", {"client_id": "99999999-9999-4999-8999-999999999999"}, 400, "Unable to load the proper Managed"),
    ("default", {"client_id": "x", "principal_id": "y"}, 400, "Only one of"),
    ("default", {"api-version": "2017-09-01"}, 400, "api-version"),
    ("default", {"resource": ""}, 400, "resource"),
], ids=["missing-header", "wrong-header", "unknown-identity", "two-selectors", "old-api-version", "no-resource"])
def test_errors(mi: ManagedIdentityEmulator, header: str | None, params: dict[str, str], status: int,
                message: str) -> None:
    response = get_raw(mi, header, **{"resource": "https://r.example", **params})
    body = response.json()
    assert (response.status_code, body["statusCode"]) == (status, status) and message in body["message"], body
    assert "access_token" not in body and body["correlationId"]


# ----------------------------------------------------------------------------------- azure-identity
@pytest.mark.parametrize("how", ["client_id", "object_id", "resource_id", "system"])
def test_managed_identity_credential_reads_a_key_vault_secret(mi: ManagedIdentityEmulator, vault: KeyVaultEmulator,
                                                              user_identity: ManagedIdentity,
                                                              system_identity: ManagedIdentity, how: str) -> None:
    if how == "client_id":
        credential = ManagedIdentityCredential(client_id=user_identity.client_id)
    elif how == "system":
        credential = ManagedIdentityCredential()
    else:
        value = user_identity.principal_id if how == "object_id" else user_identity.resource_id
        credential = ManagedIdentityCredential(identity_config={how: value})
    secret = SecretClient(vault.vault_url, credential).get_secret("powerbi-client-secret")
    assert secret.value == "from-the-vault"
    [request] = mi.requests
    assert request.query["resource"] == vault.resource  # azure-identity turns the challenge scope into a resource
    assert request.headers["X-IDENTITY-HEADER"] == mi.identity_header
    expected = system_identity if how == "system" else user_identity
    assert vault.requests[-1].headers["Authorization"].startswith("Bearer ")
    sent = jwt.decode(vault.requests[-1].headers["Authorization"][7:], options={"verify_signature": False})
    assert sent["oid"] == expected.principal_id


def test_unknown_identity_is_unavailable(mi: ManagedIdentityEmulator) -> None:
    credential = ManagedIdentityCredential(client_id="99999999-9999-4999-8999-999999999999")
    with pytest.raises(CredentialUnavailableError, match="Unable to load the proper Managed Identity"):
        credential.get_token("https://r.example/.default")


def test_endpoint_down(mi: ManagedIdentityEmulator, entra: EntraEmulator, user_identity: ManagedIdentity) -> None:
    mi.stop()
    try:
        # azure-identity lets the transport error through (after its retries; none here, to stay fast).
        credential = ManagedIdentityCredential(client_id=user_identity.client_id, retry_total=0)
        with pytest.raises(ServiceRequestError):
            credential.get_token("https://r.example/.default")
    finally:
        mi.start()  # same address and port: the exported IDENTITY_ENDPOINT works again
    assert ManagedIdentityCredential(client_id=user_identity.client_id).get_token("https://r.example/.default").token


def test_injected_faults_surface_as_authentication_errors(mi: ManagedIdentityEmulator,
                                                          user_identity: ManagedIdentity) -> None:
    mi.inject_fault(500, count=None)
    credential = ManagedIdentityCredential(client_id=user_identity.client_id, retry_total=0)
    with pytest.raises(ClientAuthenticationError):
        credential.get_token("https://r.example/.default")


# -------------------------------------------------------------------------------------------- federation
def mi_assertion(identity: ManagedIdentity) -> str:
    return ManagedIdentityCredential(client_id=identity.client_id).get_token(EXCHANGE_SCOPE).token


def test_federated_credential_with_msal(mi: ManagedIdentityEmulator, entra: EntraEmulator,
                                        user_identity: ManagedIdentity) -> None:
    assertion = mi_assertion(user_identity)
    assert mi.token_requests(FEDERATION_AUDIENCE) == 1
    result = federated_app(entra, assertion).acquire_token_for_client([POWERBI_SCOPE])
    assert "access_token" in result, result
    claims = entra.verify_access_token(result["access_token"], audience="https://analysis.windows.net/powerbi/api")
    assert (claims["appid"], claims["appidacr"], claims["roles"]) == (BROKER_APP, "2", ["Tenant.Read.All"])
    assert claims["oid"] == entra.service_principal_id(TENANT, BROKER_APP)


def test_secretless_broker_reads_key_vault(mi: ManagedIdentityEmulator, entra: EntraEmulator,
                                           vault: KeyVaultEmulator, user_identity: ManagedIdentity) -> None:
    identity = ManagedIdentityCredential(client_id=user_identity.client_id)
    app_credential = ClientAssertionCredential(TENANT, BROKER_APP, lambda: identity.get_token(EXCHANGE_SCOPE).token,
                                               authority=entra.base_url, disable_instance_discovery=True)
    assert SecretClient(vault.vault_url, app_credential).get_secret("powerbi-client-secret").value == "from-the-vault"
    sent = jwt.decode(vault.requests[-1].headers["Authorization"][7:], options={"verify_signature": False})
    assert sent["appid"] == BROKER_APP


def _forged(entra: EntraEmulator, identity: ManagedIdentity) -> str:
    claims = jwt.decode(entra.issue_access_token(tenant_id=TENANT, audience=FEDERATION_AUDIENCE,
                                                 extra_claims={"sub": identity.principal_id}),
                        options={"verify_signature": False})
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(claims, other, algorithm="RS256", headers={"kid": entra.signing_kid})


def bad_assertion(case: str, entra: EntraEmulator, user: ManagedIdentity, other: ManagedIdentity) -> str:
    if case == "other-identity":
        return mi_assertion(other)
    if case == "audience":
        return ManagedIdentityCredential(client_id=user.client_id).get_token("api://Other/.default").token
    if case == "forged":
        return _forged(entra, user)
    # A token as the identity would get it, but from another tenant's issuer, or already expired.
    tenant, lifetime = (OTHER_TENANT, None) if case == "issuer" else (TENANT, -60)
    return entra.issue_access_token(tenant_id=tenant, audience=FEDERATION_AUDIENCE, lifetime=lifetime,
                                    extra_claims={"sub": user.principal_id})


@pytest.mark.parametrize(("case", "code", "wording"), [
    ("other-identity", 700213, "No matching federated identity record found for presented assertion subject"),
    ("issuer", 700211, "No matching federated identity record found for presented assertion issuer"),
    ("audience", 700212, "No matching federated identity record found for presented assertion audience 'api://Other'"),
    ("expired", 700024, "Client assertion is not within its valid time range."),
    ("forged", 700027, "Client assertion failed validation"),
])
def test_federated_assertion_mismatches(mi: ManagedIdentityEmulator, entra: EntraEmulator,
                                        user_identity: ManagedIdentity, other_identity: ManagedIdentity,
                                        case: str, code: int, wording: str) -> None:
    assertion = bad_assertion(case, entra, user_identity, other_identity)
    result = federated_app(entra, assertion).acquire_token_for_client([POWERBI_SCOPE])
    assert (result.get("error"), result.get("error_codes")) == ("invalid_client", [code]), result
    assert f"AADSTS{code}: " in result["error_description"] and wording in result["error_description"]
    assert assertion not in result["error_description"]
    form = next(r for r in reversed(entra.requests) if r.path.endswith("/oauth2/v2.0/token"))
    assert form.body["client_assertion"] == assertion and "client_secret" not in form.body


def test_app_without_federated_credentials_keeps_certificate_rules(mi: ManagedIdentityEmulator, entra: EntraEmulator,
                                                                   user_identity: ManagedIdentity) -> None:
    plain = entra.register_app(TENANT, secret=None)
    result = federated_app(entra, mi_assertion(user_identity), plain).acquire_token_for_client([POWERBI_SCOPE])
    assert result["error_codes"] == [700027], result
