"""Tests of the Key Vault emulator over real sockets, with the real azure-keyvault-secrets and azure-identity."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, ServiceRequestError
from azure.identity import ClientSecretCredential
from azure.keyvault.secrets import SecretClient
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from devtools.entra import EntraEmulator
from devtools.keyvault import KeyVaultEmulator
from devtools.tls import DevCertificateAuthority

TENANT = "5f0c1b2a-0000-4000-8000-0000000000a1"
OTHER_TENANT = "5f0c1b2a-0000-4000-8000-0000000000b2"
READER, READER_SECRET = "a0000000-0000-4000-8000-0000000000a1", "reader-secret-value-1"
OUTSIDER, OUTSIDER_SECRET = "b0000000-0000-4000-8000-0000000000b2", "outsider-secret-value"


# ---------------------------------------------------------------------------------------------- fixtures
# The session CA of tests/conftest.py, trusted for every test of this module.
pytestmark = pytest.mark.usefixtures("trust_dev_ca")


@pytest.fixture(scope="module")
def entra(ca: DevCertificateAuthority) -> Iterator[EntraEmulator]:
    with EntraEmulator(ca=ca) as emulator:
        emulator.add_tenant(TENANT, domain="contoso.com")
        emulator.add_tenant(OTHER_TENANT, domain="fabrikam.com")
        emulator.register_app(TENANT, READER, secret=READER_SECRET)
        emulator.register_app(TENANT, OUTSIDER, secret=OUTSIDER_SECRET)
        yield emulator


@pytest.fixture(scope="module")
def _vault(ca: DevCertificateAuthority, entra: EntraEmulator) -> Iterator[KeyVaultEmulator]:
    # Its own random 127.a.b.c: azure-keyvault's challenge cache is process-wide and keyed by vault host.
    with KeyVaultEmulator(ca=ca, entra=entra, tenant_id=TENANT) as emulator:
        emulator.grant_secrets_user(entra.service_principal_id(TENANT, READER))
        yield emulator


@pytest.fixture
def vault(_vault: KeyVaultEmulator, entra: EntraEmulator) -> Iterator[KeyVaultEmulator]:
    _vault.reset_counters()
    entra.reset_counters()
    yield _vault
    _vault.clear_faults()


def credential(entra: EntraEmulator, client_id: str = READER, secret: str = READER_SECRET) -> ClientSecretCredential:
    # The authority is not a known Azure cloud: without disable_instance_discovery MSAL asks
    # login.microsoftonline.com to validate it, which fails offline.
    return ClientSecretCredential(TENANT, client_id, secret, authority=entra.base_url,
                                  disable_instance_discovery=True)


def client(vault: KeyVaultEmulator, entra: EntraEmulator, **kwargs: Any) -> SecretClient:
    # verify_challenge_resource stays at its default (on): the emulator's resource must pass it.
    return SecretClient(vault.vault_url, credential(entra, **kwargs))


def raw_get(vault: KeyVaultEmulator, path: str, token: str | None = None,
            api_version: str | None = "7.5") -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    params = {"api-version": api_version} if api_version else {}
    return requests.get(f"{vault.vault_url}{path}", headers=headers, params=params, timeout=5)


def vault_token(entra: EntraEmulator, audience: str, **kwargs: Any) -> str:
    return entra.issue_access_token(tenant_id=kwargs.pop("tenant_id", TENANT), audience=audience, client_id=READER,
                                    **kwargs)


# --------------------------------------------------------------------------------------- happy path
def test_secret_client_reads_through_the_challenge(vault: KeyVaultEmulator, entra: EntraEmulator) -> None:
    version = vault.set_secret("powerbi-client-secret", "s3cret!", content_type="text/plain", tags={"env": "dev"})
    secrets = client(vault, entra)
    secret = secrets.get_secret("powerbi-client-secret")
    assert (secret.value, secret.properties.version, secret.properties.content_type) == ("s3cret!", version,
                                                                                          "text/plain")
    assert secret.id == f"{vault.vault_url}/secrets/powerbi-client-secret/{version}"
    assert secret.properties.enabled and secret.properties.tags == {"env": "dev"}
    assert secret.properties.recovery_level == "Recoverable+Purgeable" and secret.properties.created_on
    first, second = vault.requests
    assert "Authorization" not in first.headers and "Authorization" in second.headers  # challenge, then bearer
    assert first.query["api-version"] == second.query["api-version"]
    sent = jwt.decode(second.headers["Authorization"].split()[1], options={"verify_signature": False})
    assert sent["aud"] == vault.resource and sent["tid"] == TENANT and sent["appid"] == READER
    assert entra.token_requests(grant_type="client_credentials", client_id=READER) == 1
    [token_request] = [r for r in entra.requests if r.path.endswith("/oauth2/v2.0/token")]
    assert token_request.body["scope"] == f"{vault.resource}/.default"

    secrets.get_secret("powerbi-client-secret")  # challenge and token are cached now
    assert vault.secret_reads("powerbi-client-secret") == 2 and vault.count("/secrets/") == 3
    assert entra.token_requests() == 1


def test_challenge_names_the_tenant_and_a_verifiable_resource(vault: KeyVaultEmulator, entra: EntraEmulator) -> None:
    response = raw_get(vault, "/secrets/anything")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == (
        f'Bearer authorization="{entra.base_url}/{TENANT}", resource="{vault.resource}"')
    assert response.json() == {"error": {"code": "Unauthorized",
                                         "message": "AKV10000: Request is missing a Bearer or PoP token."}}
    assert vault.host.endswith("." + vault.resource.removeprefix("https://").partition(":")[0])


def test_sdk_still_verifies_the_challenge_resource(ca: DevCertificateAuthority, entra: EntraEmulator) -> None:
    class AzureNamedVault(KeyVaultEmulator):
        @property
        def resource(self) -> str:
            return "https://vault.azure.net"  # not a parent domain of 127.a.b.c: the SDK must refuse it

    with AzureNamedVault(ca=ca, entra=entra, tenant_id=TENANT) as rogue:
        rogue.set_secret("s", "v")
        with pytest.raises(ValueError, match="does not match the requested domain"):
            client(rogue, entra).get_secret("s")
        assert entra.token_requests() == 0 and rogue.secret_reads() == 0


def test_versions_and_disabled_secrets(vault: KeyVaultEmulator, entra: EntraEmulator) -> None:
    old = vault.set_secret("rotating", "one")
    new = vault.set_secret("ROTATING", "two")  # names are case-insensitive; the first spelling is kept
    secrets = client(vault, entra)
    assert secrets.get_secret("rotating").value == "two"
    assert secrets.get_secret("rotating", version=old).value == "one"
    assert secrets.get_secret("Rotating", new).id.endswith(f"/secrets/rotating/{new}")
    assert [v.version for v in vault.versions("rotating")] == [old, new]

    vault.disable_secret("rotating")
    with pytest.raises(HttpResponseError) as raised:
        secrets.get_secret("rotating")
    assert raised.value.status_code == 403
    disabled = {"code": "Forbidden", "message": "Operation get is not allowed on a disabled secret.",
                "innererror": {"code": "SecretDisabled"}}
    assert raised.value.response.json() == {"error": disabled}
    assert secrets.get_secret("rotating", old).value == "one"
    vault.disable_secret("rotating", old)
    with pytest.raises(HttpResponseError, match="disabled secret"):
        secrets.get_secret("rotating", old)
    vault.set_secret("born-disabled", "x", enabled=False)
    with pytest.raises(HttpResponseError, match="disabled secret"):
        secrets.get_secret("born-disabled")


def test_missing_and_deleted_secrets_are_404(vault: KeyVaultEmulator, entra: EntraEmulator) -> None:
    secrets = client(vault, entra)
    with pytest.raises(ResourceNotFoundError) as raised:
        secrets.get_secret("never-created")
    body = raised.value.response.json()["error"]
    assert body["code"] == "SecretNotFound"
    assert body["message"].startswith("A secret with (name/id) never-created was not found in this key vault.")
    version = vault.set_secret("short-lived", "v")
    with pytest.raises(ResourceNotFoundError, match=f"short-lived/{'0' * 32}"):
        secrets.get_secret("short-lived", "0" * 32)
    assert secrets.get_secret("short-lived", version).value == "v"
    vault.delete_secret("short-lived")
    with pytest.raises(ResourceNotFoundError):
        secrets.get_secret("short-lived")


def test_rbac_forbids_principals_without_secrets_user(vault: KeyVaultEmulator, entra: EntraEmulator) -> None:
    vault.set_secret("guarded", "v")
    outsider_oid = entra.service_principal_id(TENANT, OUTSIDER)
    secrets = client(vault, entra, client_id=OUTSIDER, secret=OUTSIDER_SECRET)
    with pytest.raises(HttpResponseError) as raised:
        secrets.get_secret("guarded")
    error = raised.value.response.json()["error"]
    assert raised.value.status_code == 403 and error["code"] == "Forbidden"
    assert error["innererror"] == {"code": "ForbiddenByRbac"}
    assert error["message"].startswith("Caller is not authorized to perform action on resource.")
    assert "Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'" in error["message"]
    assert f"oid={outsider_oid}" in error["message"]
    with pytest.raises(HttpResponseError, match="not authorized"):
        secrets.get_secret("no-such-secret")  # RBAC is checked before existence

    vault.grant_secrets_user(outsider_oid)
    assert secrets.get_secret("guarded").value == "v"
    vault.revoke(outsider_oid)
    with pytest.raises(HttpResponseError, match="not authorized"):
        secrets.get_secret("guarded")


def bad_token(case: str, entra: EntraEmulator, vault: KeyVaultEmulator) -> str:
    if case == "expired":
        return vault_token(entra, vault.resource, lifetime=-600)
    if case == "audience":
        return vault_token(entra, "https://vault.azure.net")
    if case == "other-tenant":
        return vault_token(entra, vault.resource, tenant_id=OTHER_TENANT)
    return "not-a-jwt"


@pytest.mark.parametrize(("case", "message"), [
    ("expired", "[TokenExpired]"), ("audience", "AKV10022: Invalid audience"),
    ("other-tenant", "AKV10032: Invalid issuer"), ("garbage", "AKV10032: Invalid bearer token"),
])
def test_invalid_bearer_tokens_get_401_and_the_challenge(vault: KeyVaultEmulator, entra: EntraEmulator, case: str,
                                                         message: str) -> None:
    vault.set_secret("t", "v")
    response = raw_get(vault, "/secrets/t", bad_token(case, entra, vault))
    assert response.status_code == 401 and response.headers["WWW-Authenticate"] == vault.challenge
    assert response.json()["error"]["code"] == "Unauthorized" and message in response.json()["error"]["message"]


@pytest.mark.parametrize("suffix", ["", "/"])
def test_both_audience_spellings_are_accepted(vault: KeyVaultEmulator, entra: EntraEmulator, suffix: str) -> None:
    vault.set_secret("aud", "v")
    token = vault_token(entra, vault.resource + suffix)
    assert raw_get(vault, "/secrets/aud/", token).json()["value"] == "v"
    missing_version = raw_get(vault, "/secrets/aud", token, api_version=None)
    assert missing_version.status_code == 400 and missing_version.json()["error"]["code"] == "BadParameter"


@pytest.mark.parametrize("fmt", ["pem", "pkcs12"])
def test_certificates_are_readable_as_secrets(vault: KeyVaultEmulator, entra: EntraEmulator,
                                              ca: DevCertificateAuthority, fmt: Any) -> None:
    issued = ca.issue_client_certificate(f"broker-{fmt}")
    version = vault.set_certificate(f"broker-cert-{fmt}", private_key_pem=issued.private_key_pem,
                                    certificate_pem=issued.certificate_pem, format=fmt)
    secret = client(vault, entra).get_secret(f"broker-cert-{fmt}")
    assert secret.properties.version == version and secret.properties.managed
    assert secret.properties.key_id == f"{vault.vault_url}/keys/broker-cert-{fmt}/{version}"
    assert secret.value is not None
    expected = x509.load_pem_x509_certificate(issued.certificate_pem)
    if fmt == "pem":
        assert secret.properties.content_type == "application/x-pem-file"
        assert secret.value.startswith("-----BEGIN PRIVATE KEY-----")
        key = serialization.load_pem_private_key(secret.value.encode(), password=None)
        cert = x509.load_pem_x509_certificate(secret.value.encode())  # the first certificate after the key
    else:
        assert secret.properties.content_type == "application/x-pkcs12"
        loaded_key, loaded_cert, _ = pkcs12.load_key_and_certificates(base64.b64decode(secret.value), None)
        assert loaded_key is not None and loaded_cert is not None
        key, cert = loaded_key, loaded_cert
    assert cert == expected
    assert key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo) == expected.public_key(
    ).public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert secret.properties.expires_on is not None
    assert int(secret.properties.expires_on.timestamp()) == int(expected.not_valid_after_utc.timestamp())


def test_throttling_is_retried_after_retry_after(vault: KeyVaultEmulator, entra: EntraEmulator) -> None:
    vault.set_secret("busy", "v")
    secrets = client(vault, entra)
    secrets.get_secret("busy")  # settle the challenge first
    vault.throttle(retry_after=1)
    started = time.monotonic()
    assert secrets.get_secret("busy").value == "v"
    assert time.monotonic() - started >= 1
    assert [r.fault for r in vault.requests][-2:] == ["response", None]
    vault.throttle(count=None, retry_after=0)
    with pytest.raises(HttpResponseError) as raised:
        SecretClient(vault.vault_url, credential(entra), retry_total=1).get_secret("busy")
    assert raised.value.status_code == 429 and raised.value.response.json()["error"]["code"] == "Throttled"


def test_unreachable_vault(ca: DevCertificateAuthority, entra: EntraEmulator) -> None:
    down = KeyVaultEmulator(ca=ca, entra=entra, tenant_id=TENANT).start()
    down.stop()
    with pytest.raises(ServiceRequestError):
        SecretClient(down.vault_url, credential(entra), retry_total=0).get_secret("anything")


def test_vault_off_port_443_names_its_port_in_the_resource(ca: DevCertificateAuthority, entra: EntraEmulator) -> None:
    # Off 443 the SDK compares host:port with the resource's authority, so the port is part of the resource.
    with KeyVaultEmulator(ca=ca, entra=entra, tenant_id=TENANT, port=0) as ephemeral:
        assert not ephemeral.on_port_443 and ephemeral.resource.endswith(f":{ephemeral.port}")
        ephemeral.set_secret("s", "off-443")
        ephemeral.grant_secrets_user(entra.service_principal_id(TENANT, READER))
        assert client(ephemeral, entra).get_secret("s").value == "off-443"


# ------------------------------------------------------------------------------------ version listing
def test_secret_versions_are_listed_with_paging_and_without_values(vault: KeyVaultEmulator,
                                                                    entra: EntraEmulator) -> None:
    made = [vault.set_secret("rotating-key", f"value-{n}") for n in range(27)]  # more than one page of 25
    vault.disable_secret("rotating-key", made[3])
    listed = list(client(vault, entra).list_properties_of_secret_versions("rotating-key"))
    assert sorted(p.version for p in listed) == sorted(made)
    assert [p.enabled for p in listed if p.version == made[3]] == [False]
    assert all(p.created_on is not None and p.name == "rotating-key" for p in listed)
    pages_read = [r for r in vault.requests if r.path.endswith("/versions") and "Authorization" in r.headers]
    assert len(pages_read) == 2 and "$skiptoken" in pages_read[1].query  # two pages, the second by nextLink
    pages = raw_get(vault, "/secrets/rotating-key/versions", vault_token(entra, vault.resource))
    assert pages.status_code == 200 and len(pages.json()["value"]) == 25 and pages.json()["nextLink"]
    assert "value-" not in pages.text  # metadata only, like Key Vault's SecretItem


def test_listing_versions_needs_the_role_and_an_existing_secret(vault: KeyVaultEmulator, entra: EntraEmulator) -> None:
    vault.set_secret("listed", "v")
    with pytest.raises(HttpResponseError) as forbidden:
        list(client(vault, entra, client_id=OUTSIDER, secret=OUTSIDER_SECRET).list_properties_of_secret_versions(
            "listed"))
    assert forbidden.value.status_code == 403
    with pytest.raises(ResourceNotFoundError):
        list(client(vault, entra).list_properties_of_secret_versions("never-created"))
