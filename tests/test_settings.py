"""The settings contract: parsing, defaults and validation that reports every problem at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from token_broker.config.contract import (
    DEFAULT_API_URL,
    DEFAULT_AUTHORITY_HOST,
    DEFAULT_SCOPE,
    SETTING_NAMES,
    load_settings,
)
from token_broker.support.errors import ConfigurationError

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT = "4a1aa1d5-c567-49d0-ad0b-cd957a47f842"
SECRET = "s3cr3t-Value~with.chars"

BASE = {"POWERBI_TENANT_ID": TENANT, "POWERBI_CLIENT_ID": CLIENT, "POWERBI_CLIENT_SECRET": SECRET}
ROOT = Path(__file__).resolve().parents[1]


def problems_of(environ: dict[str, str]) -> dict[str, str]:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(environ)
    return {p.setting: p.message for p in caught.value.problems if p.severity == "error"}


def test_defaults_for_a_minimal_service_principal_configuration() -> None:
    settings = load_settings(BASE)
    assert settings.grant_type == "client_credentials"
    assert settings.authority_host == DEFAULT_AUTHORITY_HOST
    assert settings.authority == f"{DEFAULT_AUTHORITY_HOST}/{TENANT}"
    assert settings.scope == DEFAULT_SCOPE
    assert settings.api_url == DEFAULT_API_URL
    assert settings.token_refresh_margin_seconds == 300
    assert settings.caller_auth is None
    assert settings.warnings == ()


def test_secrets_never_appear_in_repr() -> None:
    settings = load_settings({**BASE, "POWERBI_GRANT_TYPE": "password", "POWERBI_USERNAME": "u@contoso.com",
                              "POWERBI_PASSWORD": "pa55-word-value"})
    assert SECRET not in repr(settings)
    assert "pa55-word-value" not in repr(settings)


def test_every_problem_is_reported_at_once() -> None:
    problems = problems_of({
        "POWERBI_CLIENT_ID": "not-a-guid",
        "POWERBI_GRANT_TYPE": "implicit",
        "POWERBI_AUTHORITY_HOST": "http://login.microsoftonline.com",
        "POWERBI_API_URL": "ftp://api",
        "POWERBI_SCOPE": "https://analysis.windows.net/powerbi/api/Report.Read.All",
        "POWERBI_TOKEN_REFRESH_MARGIN_SECONDS": "soon",
        "POWERBI_HTTP_TIMEOUT_SECONDS": "0",
        "CALLER_AUTH": "everyone",
    })
    assert set(problems) == {
        "POWERBI_TENANT_ID", "POWERBI_CLIENT_ID", "POWERBI_GRANT_TYPE", "POWERBI_CLIENT_SECRET",
        "POWERBI_AUTHORITY_HOST", "POWERBI_API_URL", "POWERBI_SCOPE", "POWERBI_TOKEN_REFRESH_MARGIN_SECONDS",
        "POWERBI_HTTP_TIMEOUT_SECONDS", "CALLER_AUTH",
    }
    assert "https://" in problems["POWERBI_AUTHORITY_HOST"]
    assert "Application (client) ID" in problems["POWERBI_CLIENT_ID"]


@pytest.mark.parametrize("tenant", [TENANT, "contoso.onmicrosoft.com", "fabrikam.com"])
def test_tenant_may_be_a_guid_or_a_verified_domain(tenant: str) -> None:
    assert load_settings({**BASE, "POWERBI_TENANT_ID": tenant}).tenant_id == tenant


@pytest.mark.parametrize("tenant", ["common", "organizations", "00000000-0000-0000-0000-000000000000", "x", "a b"])
def test_tenant_must_name_one_real_tenant(tenant: str) -> None:
    assert "POWERBI_TENANT_ID" in problems_of({**BASE, "POWERBI_TENANT_ID": tenant})


def test_authority_host_must_be_https_without_a_path() -> None:
    assert "POWERBI_AUTHORITY_HOST" in problems_of({**BASE, "POWERBI_AUTHORITY_HOST": "https://login.example/x"})
    settings = load_settings({**BASE, "POWERBI_AUTHORITY_HOST": "https://127.0.0.1:8443/"})
    assert settings.authority == f"https://127.0.0.1:8443/{TENANT}"


def test_password_grant_needs_username_and_password() -> None:
    problems = problems_of({**BASE, "POWERBI_GRANT_TYPE": "password"})
    assert set(problems) == {"POWERBI_USERNAME", "POWERBI_PASSWORD"}


def test_settings_the_grant_type_ignores_are_warnings() -> None:
    settings = load_settings({**BASE, "POWERBI_USERNAME": "someone@contoso.com"})
    assert [(w.setting, w.severity) for w in settings.warnings] == [("POWERBI_USERNAME", "warning")]


@pytest.mark.parametrize("name", ["POWERBI_CLIENT_SECRET", "POWERBI_PASSWORD"])
def test_an_unresolved_key_vault_reference_is_reported_not_used(name: str) -> None:
    reference = "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/pbi/)"
    environ = {**BASE, "POWERBI_GRANT_TYPE": "password", "POWERBI_USERNAME": "u@contoso.com",
               "POWERBI_PASSWORD": "pa55-word-value", name: reference}
    message = problems_of(environ)[name]
    assert "Key Vault reference" in message and "Key Vault Secrets User" in message
    assert "keyVaultReferenceIdentity" in message


def test_jwt_mode_needs_an_issuer_and_audiences() -> None:
    problems = problems_of({**BASE, "CALLER_AUTH": "jwt"})
    assert set(problems) == {"CALLER_JWT_ISSUER", "CALLER_JWT_AUDIENCE"}


def test_jwt_issuer_is_kept_exactly_as_given() -> None:
    """Entra ID v1 issuers end with a slash; iss is compared exactly."""
    settings = load_settings({**BASE, "CALLER_AUTH": "jwt", "CALLER_JWT_ISSUER": f"https://sts.windows.net/{TENANT}/",
                              "CALLER_JWT_AUDIENCE": "api://a, api://b,,api://a"})
    assert settings.callers.jwt_issuer == f"https://sts.windows.net/{TENANT}/"
    assert settings.callers.jwt_audiences == ("api://a", "api://b")


@pytest.mark.parametrize("value", ["maybe", "2"])
def test_flags_must_be_true_or_false(value: str) -> None:
    problems = problems_of({**BASE, "CALLER_AUTH": "easyauth", "CALLER_EASYAUTH_ALLOW_LOCAL": value})
    assert "true or false" in problems["CALLER_EASYAUTH_ALLOW_LOCAL"]


def test_whitespace_only_values_count_as_unset() -> None:
    assert "POWERBI_CLIENT_SECRET" in problems_of({**BASE, "POWERBI_CLIENT_SECRET": "   "})


def test_example_local_settings_lists_every_setting_and_no_real_secret() -> None:
    example = json.loads((ROOT / "local.settings.example.json").read_text())
    values = example["Values"]
    assert set(values) >= SETTING_NAMES
    assert values["POWERBI_CLIENT_SECRET"].startswith("<")


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = sorted(name for name in SETTING_NAMES if f"`{name}`" not in readme)
    assert missing == []


# -- credentials and clouds (Key Vault, certificates, federation, sovereign clouds) -------------------------

KV_URI = "https://kv-broker.vault.azure.net/secrets/powerbi-client-secret"


def without_secret(**extra: str) -> dict[str, str]:
    environ = {k: v for k, v in BASE.items() if k != "POWERBI_CLIENT_SECRET"}
    return {**environ, **extra}


@pytest.mark.parametrize(("extra", "kind"), [
    ({"POWERBI_CLIENT_SECRET": SECRET}, "secret"),
    ({"POWERBI_CLIENT_SECRET_URI": KV_URI}, "secret_uri"),
    ({"POWERBI_CLIENT_SECRET_URI": KV_URI + "/0123456789abcdef0123456789abcdef"}, "secret_uri"),
    ({"POWERBI_CLIENT_CERTIFICATE_URI": "https://kv.vault.azure.net/secrets/broker-cert"}, "certificate_uri"),
    ({"POWERBI_CLIENT_ASSERTION": "managed_identity"}, "managed_identity"),
])
def test_each_credential_kind(extra: dict[str, str], kind: str) -> None:
    assert load_settings(without_secret(**extra)).credentials.kind == kind


def test_credentials_are_mutually_exclusive() -> None:
    problems = problems_of({**BASE, "POWERBI_CLIENT_SECRET_URI": KV_URI,
                            "POWERBI_CLIENT_ASSERTION": "managed_identity"})
    assert set(problems) == {"POWERBI_CLIENT_SECRET_URI", "POWERBI_CLIENT_ASSERTION"}
    assert "exactly one" in problems["POWERBI_CLIENT_ASSERTION"]


def test_no_credential_names_every_option() -> None:
    message = problems_of(without_secret())["POWERBI_CLIENT_SECRET"]
    assert all(name in message for name in ("POWERBI_CLIENT_SECRET_URI", "POWERBI_CLIENT_CERTIFICATE_URI",
                                            "POWERBI_CLIENT_ASSERTION"))


@pytest.mark.parametrize("uri", ["http://kv.vault.azure.net/secrets/x", "https://kv.vault.azure.net/keys/x",
                                 "https://kv.vault.azure.net/certificates/x", "kv/secrets/x"])
def test_key_vault_uris_must_be_secret_identifiers(uri: str) -> None:
    message = problems_of(without_secret(POWERBI_CLIENT_SECRET_URI=uri))["POWERBI_CLIENT_SECRET_URI"]
    assert "secret identifier" in message
    if "/certificates/" in uri:
        assert "secret behind the certificate" in message


def test_password_may_come_from_key_vault_but_not_from_both() -> None:
    environ = {**BASE, "POWERBI_GRANT_TYPE": "password", "POWERBI_USERNAME": "u@contoso.com"}
    assert load_settings({**environ, "POWERBI_PASSWORD_URI": KV_URI}).credentials.password_uri == KV_URI
    problems = problems_of({**environ, "POWERBI_PASSWORD_URI": KV_URI, "POWERBI_PASSWORD": "pa55-word-value"})
    assert set(problems) == {"POWERBI_PASSWORD_URI"}


def test_azure_client_id_must_be_a_guid() -> None:
    assert "AZURE_CLIENT_ID" in problems_of({**BASE, "AZURE_CLIENT_ID": "my-identity"})


def test_send_x5c_without_a_certificate_is_a_warning() -> None:
    settings = load_settings({**BASE, "POWERBI_CLIENT_CERTIFICATE_SEND_X5C": "true"})
    assert [w.setting for w in settings.warnings] == ["POWERBI_CLIENT_CERTIFICATE_SEND_X5C"]


@pytest.mark.parametrize(("cloud", "authority", "scope", "api", "exchange"), [
    ("Public", "https://login.microsoftonline.com", "https://analysis.windows.net/powerbi/api/.default",
     "https://api.powerbi.com/v1.0/myorg", "api://AzureADTokenExchange"),
    ("USGov", "https://login.microsoftonline.com", "https://analysis.usgovcloudapi.net/powerbi/api/.default",
     "https://api.powerbigov.us/v1.0/myorg", "api://AzureADTokenExchange"),
    ("USGovHigh", "https://login.microsoftonline.us", "https://high.analysis.usgovcloudapi.net/powerbi/api/.default",
     "https://api.high.powerbigov.us/v1.0/myorg", "api://AzureADTokenExchangeUSGov"),
    ("USGovDoD", "https://login.microsoftonline.us", "https://mil.analysis.usgovcloudapi.net/powerbi/api/.default",
     "https://api.mil.powerbigov.us/v1.0/myorg", "api://AzureADTokenExchangeUSGov"),
    ("China", "https://login.chinacloudapi.cn", "https://analysis.chinacloudapi.cn/powerbi/api/.default",
     "https://api.powerbi.cn/v1.0/myorg", "api://AzureADTokenExchangeChina"),
])
def test_sovereign_cloud_presets(cloud: str, authority: str, scope: str, api: str, exchange: str) -> None:
    settings = load_settings({**BASE, "POWERBI_CLOUD": cloud})
    assert (settings.authority_host, settings.scope, settings.api_url) == (authority, scope, api)
    assert settings.cloud.token_exchange_audience == exchange


def test_each_preset_is_overridable_by_its_own_setting() -> None:
    settings = load_settings({**BASE, "POWERBI_CLOUD": "China", "POWERBI_API_URL": "https://pbi.example/v1.0/myorg"})
    assert settings.api_url == "https://pbi.example/v1.0/myorg"
    assert settings.authority_host == "https://login.chinacloudapi.cn"


def test_unknown_cloud_is_named() -> None:
    assert "USGovHigh" in problems_of({**BASE, "POWERBI_CLOUD": "Mars"})["POWERBI_CLOUD"]


def test_the_password_grant_needs_an_authority_on_port_443() -> None:
    """MSAL's user-realm lookup for the password grant drops the port: any other port fails every request."""
    environ = {**BASE, "POWERBI_GRANT_TYPE": "password", "POWERBI_USERNAME": "u@contoso.com", "POWERBI_PASSWORD": "p",
               "POWERBI_AUTHORITY_HOST": "https://login.contoso.test:8443"}
    assert "port 443" in problems_of(environ)["POWERBI_AUTHORITY_HOST"]
    on_443 = {**environ, "POWERBI_AUTHORITY_HOST": "https://login.contoso.test:443"}
    assert load_settings(on_443).grant_type == "password"
    other_grant = {**BASE, "POWERBI_AUTHORITY_HOST": "https://login.contoso.test:8443"}
    assert load_settings(other_grant).authority_host == "https://login.contoso.test:8443"
