"""Tests of the App Configuration emulator with the real provider (``load``) and azure-identity, over real sockets."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from azure.appconfiguration.provider import AzureAppConfigurationProvider, SettingSelector, WatchKey, load
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.identity import ClientSecretCredential

from devtools.appconfig import AppConfigurationEmulator
from devtools.entra import EntraEmulator
from devtools.keyvault import KeyVaultEmulator
from devtools.tls import DevCertificateAuthority

TENANT, OTHER_TENANT = "5b1f0c1e-0d5e-4c1a-9a51-0a7c0f16a001", "5b1f0c1e-0d5e-4c1a-9a51-0a7c0f16a002"
READER, READER_SECRET = "7c0c5a10-1111-4a6b-8f00-00000000ac01", "reader-secret~value.0123"
NO_ROLE, NO_ROLE_SECRET = "7c0c5a10-2222-4a6b-8f00-00000000ac02", "no-role-secret~value.0123"
OUTSIDER = "7c0c5a10-3333-4a6b-8f00-00000000ac03"
APPCONFIG = "https://appconfig.azure.com"
NS = "TokenBroker:"  # the namespace prefix design: one selector, one trim, names come out as the env vars


@pytest.fixture(scope="module")
def _entra(ca: DevCertificateAuthority) -> Iterator[EntraEmulator]:
    with EntraEmulator(ca=ca) as emulator:
        emulator.add_tenant(TENANT, domain="contoso.com")
        emulator.add_tenant(OTHER_TENANT, domain="fabrikam.com")
        emulator.register_app(TENANT, READER, secret=READER_SECRET)
        emulator.register_app(TENANT, NO_ROLE, secret=NO_ROLE_SECRET)
        emulator.register_app(OTHER_TENANT, OUTSIDER, secret="outsider-secret~value")
        yield emulator


@pytest.fixture
def entra(_entra: EntraEmulator, trust_dev_ca: None) -> EntraEmulator:
    _entra.reset_counters()
    return _entra


@pytest.fixture
def store(ca: DevCertificateAuthority, entra: EntraEmulator) -> Iterator[AppConfigurationEmulator]:
    with AppConfigurationEmulator(ca=ca, entra=entra, tenant_id=TENANT) as emulator:
        emulator.grant_data_reader(oid_of(entra, READER))
        yield emulator


def oid_of(entra: EntraEmulator, client_id: str, tenant: str = TENANT) -> str:
    token = entra.issue_access_token(tenant_id=tenant, audience=APPCONFIG, client_id=client_id)
    return str(entra.verify_access_token(token, audience=APPCONFIG)["oid"])


def credential(entra: EntraEmulator, client_id: str = READER, secret: str = READER_SECRET) -> ClientSecretCredential:
    # azure-identity 1.27 runs instance discovery against login.microsoftonline.com unless told not to.
    return ClientSecretCredential(TENANT, client_id, secret, authority=entra.base_url, disable_instance_discovery=True)


def load_ns(store: AppConfigurationEmulator, entra: EntraEmulator, **kwargs: Any) -> AzureAppConfigurationProvider:
    kwargs.setdefault("selects", [SettingSelector(key_filter=f"{NS}*")])
    return load(endpoint=store.endpoint, credential=credential(entra), trim_prefixes=[NS], **kwargs)


def kv_gets(store: AppConfigurationEmulator) -> list[Any]:
    return [r for r in store.requests if r.method == "GET" and r.path == "/kv"]


def token_for(entra: EntraEmulator, client_id: str = READER, tenant: str = TENANT, audience: str = APPCONFIG) -> str:
    return entra.issue_access_token(tenant_id=tenant, audience=audience, client_id=client_id)


# ------------------------------------------------------------------------------------------ loading
def test_namespace_prefix_is_trimmed_into_the_setting_names(store: AppConfigurationEmulator,
                                                             entra: EntraEmulator) -> None:
    store.set(f"{NS}POWERBI_TENANT_ID", TENANT)
    store.set(f"{NS}CALLER_AUTH", "jwt")
    store.set(f"{NS}AZURE_CLIENT_ID", "mi-client")
    store.set("OtherApp:POWERBI_TENANT_ID", "not ours")
    with load_ns(store, entra) as settings:
        assert dict(settings) == {"POWERBI_TENANT_ID": TENANT, "CALLER_AUTH": "jwt", "AZURE_CLIENT_ID": "mi-client"}
    [listing] = kv_gets(store)
    assert listing.query["key"] == f"{NS}*" and listing.query["label"] == "\0" and listing.query["api-version"]
    assert listing.headers["Authorization"].startswith("Bearer ")
    [token_request] = [r for r in entra.requests if r.path.endswith("/oauth2/v2.0/token")]
    assert token_request.body["scope"] == f"{APPCONFIG}/.default"  # what the SDK asks for off *.azconfig.io


def test_family_prefixes_come_out_trimmed_of_their_family(store: AppConfigurationEmulator,
                                                          entra: EntraEmulator) -> None:
    store.set("POWERBI:TENANT_ID", TENANT)
    store.set("CALLER:AUTH", "jwt")
    store.set("POWERBI_CLIENT_ID", "flat")
    store.set("CALLER_AUTH", "flat")
    selects = [SettingSelector(key_filter="POWERBI:*"), SettingSelector(key_filter="CALLER:*")]
    with load(store.endpoint, credential(entra), selects=selects, trim_prefixes=["POWERBI:", "CALLER:"]) as trimmed:
        assert dict(trimmed) == {"TENANT_ID": TENANT, "AUTH": "jwt"}  # no longer the broker's setting names
    flat_select = [SettingSelector(key_filter="POWERBI_*,CALLER_*")]  # flat names: a CSV filter, nothing to trim
    with load(store.endpoint, credential(entra), selects=flat_select) as flat:
        assert dict(flat) == {"POWERBI_CLIENT_ID": "flat", "CALLER_AUTH": "flat"}


def test_label_selector_overrides_the_null_label(store: AppConfigurationEmulator, entra: EntraEmulator) -> None:
    store.set(f"{NS}POWERBI_API_URL", "https://api.powerbi.com/v1.0/myorg")
    store.set(f"{NS}POWERBI_API_URL", "https://api.powerbigov.us/v1.0/myorg", label="gov")
    store.set(f"{NS}POWERBI_CLOUD", "USGov", label="gov")
    with load_ns(store, entra) as plain:
        assert dict(plain) == {"POWERBI_API_URL": "https://api.powerbi.com/v1.0/myorg"}
    gov = [SettingSelector(key_filter=f"{NS}*"), SettingSelector(key_filter=f"{NS}*", label_filter="gov")]
    with load_ns(store, entra, selects=gov) as labelled:  # later selectors win
        assert dict(labelled) == {"POWERBI_API_URL": "https://api.powerbigov.us/v1.0/myorg", "POWERBI_CLOUD": "USGov"}


def test_paging_over_more_than_a_page_of_keys(store: AppConfigurationEmulator, entra: EntraEmulator) -> None:
    for i in range(250):
        store.set(f"{NS}KEY_{i:03}", str(i))
    with load_ns(store, entra) as settings:
        assert len(settings) == 250 and settings["KEY_249"] == "249"
    first, second, third = kv_gets(store)
    assert "after" not in first.query and second.query["after"] and third.query["after"] != second.query["after"]
    assert second.query["key"] == f"{NS}*" and second.query["label"] == "\0"
    # The client echoes the store's Sync-Token (without ";sn=") from the first response on.
    assert "Sync-Token" not in first.headers and second.headers["Sync-Token"].split("=")[0] == store.sync_token_id


def test_key_vault_reference_is_resolved_through_the_vault(ca: DevCertificateAuthority, store: AppConfigurationEmulator,
                                                           entra: EntraEmulator) -> None:
    with KeyVaultEmulator(ca=ca, entra=entra, tenant_id=TENANT) as vault:
        vault.set_secret("powerbi-client-secret", "kv-resolved-value")
        vault.grant_secrets_user(oid_of(entra, READER))
        store.set_key_vault_reference(f"{NS}POWERBI_CLIENT_SECRET", f"{vault.vault_url}/secrets/powerbi-client-secret")
        store.set(f"{NS}POWERBI_CLIENT_ID", READER)
        with load_ns(store, entra, keyvault_credential=credential(entra)) as settings:
            assert dict(settings) == {"POWERBI_CLIENT_SECRET": "kv-resolved-value", "POWERBI_CLIENT_ID": READER}
        assert vault.secret_reads("powerbi-client-secret") == 1
        with pytest.raises(ValueError, match="credential to Key Vault"):
            load_ns(store, entra)  # a reference without keyvault_credential fails at once, without retries


# ------------------------------------------------------------------------------------------ refresh
def test_refresh_waits_for_the_sentinel_key(store: AppConfigurationEmulator, entra: EntraEmulator) -> None:
    store.set(f"{NS}POWERBI_CLIENT_ID", "old")
    store.set(f"{NS}Sentinel", "1")
    with load_ns(store, entra, refresh_on=[WatchKey(f"{NS}Sentinel")], refresh_interval=1) as settings:
        store.set(f"{NS}POWERBI_CLIENT_ID", "new")
        settings.refresh()  # within the interval: no request at all
        time.sleep(1.05)
        settings.refresh()  # the sentinel is unchanged (304), so the new value is not loaded yet
        assert settings["POWERBI_CLIENT_ID"] == "old"
        store.set(f"{NS}Sentinel", "2")
        time.sleep(1.05)
        settings.refresh()
        assert settings["POWERBI_CLIENT_ID"] == "new" and settings["Sentinel"] == "2"
    watches = [r for r in store.requests if r.path == f"/kv/{NS}Sentinel"]
    assert [("If-None-Match" in r.headers) for r in watches] == [False, True, True]  # startup GET, then conditional
    assert len(kv_gets(store)) == 2  # the startup load and one reload


def test_refresh_without_sentinel_checks_page_etags(store: AppConfigurationEmulator, entra: EntraEmulator) -> None:
    for i in range(150):
        store.set(f"{NS}KEY_{i:03}", "v1")
    with load_ns(store, entra, refresh_enabled=True, refresh_interval=1) as settings:
        store.reset_counters()
        time.sleep(1.05)
        settings.refresh()
        assert [("If-None-Match" in r.headers) for r in kv_gets(store)] == [True, True]  # both pages: 304
        store.set(f"{NS}KEY_120", "v2")  # on the second page
        store.reset_counters()
        time.sleep(1.05)
        settings.refresh()
        assert settings["KEY_120"] == "v2"
    assert len(kv_gets(store)) == 4  # two conditional checks (304, then 200 for page 2), a reload of two pages


# ------------------------------------------------------------------------------------------ failures
def test_without_the_role_the_store_answers_a_bare_403(store: AppConfigurationEmulator, entra: EntraEmulator) -> None:
    # load() waits until 5 s after it started before raising (the provider's guard against restart loops).
    with pytest.raises(TimeoutError) as raised:
        load(store.endpoint, credential(entra, NO_ROLE, NO_ROLE_SECRET), startup_timeout=0)
    [error] = raised.value.args[1]
    assert isinstance(error, HttpResponseError) and error.status_code == 403
    raw = requests.get(f"{store.endpoint}/kv?api-version=2023-11-01", timeout=5,
                       headers={"Authorization": f"Bearer {token_for(entra, NO_ROLE)}"})
    assert raw.status_code == 403 and raw.content == b"" and raw.headers["x-ms-request-id"]
    store.grant_data_reader(oid_of(entra, NO_ROLE))
    with load(store.endpoint, credential(entra, NO_ROLE, NO_ROLE_SECRET)) as settings:
        assert dict(settings) == {}


@pytest.mark.slow
def test_endpoint_down(ca: DevCertificateAuthority, entra: EntraEmulator) -> None:
    down = AppConfigurationEmulator(ca=ca, entra=entra).start()
    down.stop()
    started = time.monotonic()
    with pytest.raises(TimeoutError) as raised:
        load(down.endpoint, credential(entra), startup_timeout=0, retry_total=0)
    assert isinstance(raised.value.args[1][0], ServiceRequestError)
    assert time.monotonic() - started >= 5  # load() never fails faster than 5 s


def test_refresh_error_keeps_the_loaded_values(store: AppConfigurationEmulator, entra: EntraEmulator) -> None:
    store.set(f"{NS}CALLER_AUTH", "jwt")
    store.set(f"{NS}Sentinel", "1")
    errors: list[Exception] = []
    with load_ns(store, entra, refresh_on=[WatchKey(f"{NS}Sentinel")], refresh_interval=1, retry_total=0,
                 on_refresh_error=errors.append) as settings:
        store.inject_fault("reset", count=None)
        time.sleep(1.05)
        settings.refresh()
        assert settings["CALLER_AUTH"] == "jwt" and isinstance(errors[0], ServiceResponseError)  # reset mid-request


def test_transient_503_is_retried_by_the_sdk(store: AppConfigurationEmulator, entra: EntraEmulator) -> None:
    store.set(f"{NS}CALLER_AUTH", "jwt")
    store.inject_fault(503, path_prefix="/kv")
    with load_ns(store, entra) as settings:
        assert settings["CALLER_AUTH"] == "jwt"
    assert [r.fault for r in kv_gets(store)] == ["response", None]


# ------------------------------------------------------------------------------------------ protocol
def test_wire_protocol(store: AppConfigurationEmulator, entra: EntraEmulator) -> None:
    store.set("a", "1", tags={"t": "x"})
    store.set("b", "2", label="prod")
    store.page_size = 1
    bearer = {"Authorization": f"Bearer {token_for(entra)}"}

    def get(path: str, **headers: str) -> requests.Response:
        return requests.get(f"{store.endpoint}{path}", headers={**bearer, **headers}, timeout=5)

    page = get("/kv?key=*&label=*&api-version=2023-11-01")
    assert page.headers["Content-Type"].startswith("application/vnd.microsoft.appconfig.kvset+json")
    assert [i["key"] for i in page.json()["items"]] == ["a"] and page.json()["items"][0]["tags"] == {"t": "x"}
    assert page.headers["Link"] == f'<{page.json()["@nextLink"]}>; rel="next"' and page.headers["Sync-Token"]
    unchanged = get("/kv?key=*&label=*&api-version=2023-11-01", **{"If-None-Match": page.headers["ETag"]})
    assert unchanged.status_code == 304 and unchanged.headers["Link"] == page.headers["Link"]
    assert get(page.json()["@nextLink"]).json()["items"][0]["label"] == "prod"
    single, stored = get("/kv/b?label=prod&api-version=2023-11-01&$Select=key,value"), store.get("b", "prod")
    assert stored is not None and single.headers["ETag"] == f'"{stored.etag}"'
    assert single.json() == {"key": "b", "value": "2"}
    assert get("/kv/b?label=prod&api-version=1.0", **{"If-None-Match": single.headers["ETag"]}).status_code == 304
    assert get("/kv/b?api-version=1.0").status_code == 404  # no label is the null label
    problem = get("/kv?key=a*b&api-version=1.0")
    assert problem.status_code == 400 and problem.json()["name"] == "key"
    assert problem.headers["Content-Type"].startswith("application/problem+json")
    assert get("/kv").json()["name"] == "api-version"
    anonymous = requests.get(f"{store.endpoint}/kv?api-version=1.0", timeout=5)
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"] == "HMAC-SHA256, Bearer"
    wrong_audience = get("/kv?api-version=1.0", Authorization=f"Bearer {token_for(entra, audience='https://x')}")
    assert 'error="invalid_token"' in wrong_audience.headers["WWW-Authenticate"]
    outsider = get("/kv?api-version=1.0", Authorization=f"Bearer {token_for(entra, OUTSIDER, OTHER_TENANT)}")
    assert outsider.status_code == 401 and "wrong issuer" in outsider.headers["WWW-Authenticate"]


def test_snapshots_and_feature_flags(store: AppConfigurationEmulator, entra: EntraEmulator) -> None:
    store.set(f"{NS}CALLER_AUTH", "jwt")
    assert store.create_snapshot("release-1", key_filter=f"{NS}*") == 1
    store.set(f"{NS}CALLER_AUTH", "anonymous")
    store.set_feature_flag("Beta", enabled=True)
    with load(store.endpoint, credential(entra), selects=[SettingSelector(snapshot_name="release-1")],
              trim_prefixes=[NS], feature_flag_enabled=True) as settings:
        assert settings["CALLER_AUTH"] == "jwt"
        assert [(f["id"], f["enabled"]) for f in settings["feature_management"]["feature_flags"]] == [("Beta", True)]
    assert store.count("/snapshots/release-1") == 1
    assert [r.query.get("snapshot") for r in kv_gets(store)] == ["release-1", None]
