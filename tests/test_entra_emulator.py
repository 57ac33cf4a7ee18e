"""Tests of the Entra ID emulator and its HTTPS emulator base, over real sockets with real MSAL."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import random
import re
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jwt
import msal
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from devtools.emulator_server import EmulatorServer, Fault, Request, Response, route
from devtools.entra import EntraEmulator
from devtools.tls import ClientCertificate, DevCertificateAuthority

TENANT = "7a1b2c3d-0000-4000-8000-00000000c0de"
DOMAIN = "contoso.com"
POWERBI = "https://analysis.windows.net/powerbi/api"
POWERBI_SCOPE = f"{POWERBI}/.default"
APP, SECRET = "11111111-1111-4111-8111-111111111111", "app-secret-value-1"
EXPIRED_APP, EXPIRED_SECRET = "22222222-2222-4222-8222-222222222222", "expired-secret-value"
NO_CONSENT_APP = "33333333-3333-4333-8333-333333333333"
API_APP, API_SECRET = "44444444-4444-4444-8444-444444444444", "api-secret-value"
CERT_APP = "55555555-5555-4555-8555-555555555555"
ROTATE_APP = "66666666-6666-4666-8666-666666666666"
ALICE, ALICE_PW, ALICE_OID = "alice@contoso.com", "alice-password", "aaaaaaaa-0000-4000-8000-00000000a11c"
BOB, CAROL, PW = "bob@contoso.com", "carol@contoso.com", "user-password"
NEEDS_443 = ("the emulator could not bind port 443 on its loopback address (needs root or CAP_NET_BIND_SERVICE), "
             "and MSAL's password grant calls the user-realm endpoint without the port")


# ---------------------------------------------------------------------------------------------- fixtures
# The session CA of tests/conftest.py, trusted for every test of this module.
pytestmark = pytest.mark.usefixtures("trust_dev_ca")


@pytest.fixture(scope="module")
def app_cert(ca: DevCertificateAuthority) -> ClientCertificate:
    return ca.issue_client_certificate("cert-app")


@pytest.fixture(scope="module")
def _entra(ca: DevCertificateAuthority, app_cert: ClientCertificate) -> Iterator[EntraEmulator]:
    with EntraEmulator(ca=ca) as emulator:
        emulator.add_tenant(TENANT, domain=DOMAIN)
        emulator.register_app(TENANT, APP, secret=SECRET, roles=["Tenant.Read.All"])
        emulator.register_app(TENANT, EXPIRED_APP, secret=EXPIRED_SECRET, secret_expired=True)
        emulator.register_app(TENANT, NO_CONSENT_APP, secret=SECRET, consent_granted=False, name="Reports")
        emulator.register_app(TENANT, API_APP, secret=API_SECRET)
        emulator.register_app(TENANT, CERT_APP, secret=None, certificate_pem=app_cert.certificate_pem)
        emulator.add_user(TENANT, ALICE, ALICE_PW, oid=ALICE_OID, roles=["Report.Viewer"], name="Alice Example")
        emulator.add_user(TENANT, BOB, PW, mfa_required=True)
        emulator.add_user(TENANT, CAROL, PW, conditional_access_blocked=True)
        yield emulator


@pytest.fixture
def entra(_entra: EntraEmulator) -> Iterator[EntraEmulator]:
    _entra.reset_counters()
    yield _entra
    _entra.clear_faults()


def cca(entra: EntraEmulator, client_id: str, credential: Any, tenant: str = TENANT) -> Any:
    # A new application object per case: MSAL replays HTTP 400s for 60 s and throttles after 429/5xx.
    return msal.ConfidentialClientApplication(client_id, client_credential=credential,
                                              authority=f"{entra.base_url}/{tenant}", instance_discovery=False)


def post_token(entra: EntraEmulator, form: dict[str, str], tenant: str = TENANT, **kwargs: Any) -> requests.Response:
    return requests.post(f"{entra.base_url}/{tenant}/oauth2/v2.0/token", data=form, timeout=10, **kwargs)


def verify(entra: EntraEmulator, token: str, audience: str) -> dict[str, Any]:
    """Validate a token the way a resource server would: signature from the JWKS, aud, iss, exp."""
    jwks = jwt.PyJWKSet.from_dict(requests.get(f"{entra.base_url}/{TENANT}/discovery/v2.0/keys", timeout=5).json())
    key = jwks[jwt.get_unverified_header(token)["kid"]]
    return jwt.decode(token, key.key, algorithms=["RS256"], audience=audience, issuer=entra.issuer(TENANT))


def last_token_form(entra: EntraEmulator) -> dict[str, Any]:
    return [r for r in entra.requests if r.path.endswith("/oauth2/v2.0/token")][-1].body


def require_443(entra: EntraEmulator) -> None:
    if not entra.on_port_443:
        pytest.skip(NEEDS_443)


def cc_form(client_id: str = APP, secret: str = SECRET) -> dict[str, str]:
    return {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret, "scope": POWERBI_SCOPE}


def random_loopback() -> str:
    return "127.{}.{}.{}".format(*(random.randint(1, 254) for _ in range(3)))


# --------------------------------------------------------------------------------------- metadata
@pytest.mark.parametrize("tenant", [TENANT, DOMAIN, DOMAIN.upper()])
def test_discovery_resolves_guid_or_domain(entra: EntraEmulator, tenant: str) -> None:
    doc = requests.get(f"{entra.base_url}/{tenant}/v2.0/.well-known/openid-configuration", timeout=5).json()
    base = f"{entra.base_url}/{TENANT}"
    assert doc["issuer"] == f"{base}/v2.0"
    assert doc["token_endpoint"] == f"{base}/oauth2/v2.0/token"
    assert doc["authorization_endpoint"] == f"{base}/oauth2/v2.0/authorize"
    assert doc["jwks_uri"] == f"{base}/discovery/v2.0/keys"
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]
    assert entra.discovery_requests() == 1


@pytest.mark.parametrize("tenant", [TENANT, "common"])
def test_jwks_publishes_the_signing_key(entra: EntraEmulator, tenant: str) -> None:
    keys = requests.get(f"{entra.base_url}/{tenant}/discovery/v2.0/keys", timeout=5).json()["keys"]
    assert [k["kid"] for k in keys] == [entra.signing_kid]
    key = keys[0]
    assert {key["kty"], key["use"], key["e"]} == {"RSA", "sig", "AQAB"} and key["n"]
    der = base64.b64decode(key["x5c"][0])
    assert key["x5t"] == base64.urlsafe_b64encode(hashlib.sha1(der).digest()).rstrip(b"=").decode()  # noqa: S324
    public = jwt.PyJWK.from_dict(key).key
    private = serialization.load_pem_private_key(entra.signing_key_pem, None)
    assert isinstance(private, rsa.RSAPrivateKey) and public.public_numbers() == private.public_key().public_numbers()


def test_unknown_tenant_is_rejected_like_azure_ad(entra: EntraEmulator) -> None:
    response = requests.get(f"{entra.base_url}/nowhere.example/v2.0/.well-known/openid-configuration", timeout=5)
    body = response.json()
    assert response.status_code == 400 and body["error"] == "invalid_tenant" and body["error_codes"] == [90002]
    assert body["error_description"].startswith("AADSTS90002: Tenant 'nowhere.example' not found.")
    with pytest.raises(ValueError, match="Unable to get authority configuration") as raised:
        cca(entra, APP, SECRET, tenant="nowhere.example")
    assert "90002" in str(raised.value.__context__)


def test_user_realm(entra: EntraEmulator) -> None:
    managed = requests.get(f"{entra.base_url}/common/userrealm/{ALICE}?api-version=1.0", timeout=5).json()
    assert managed == {"ver": "1.0", "account_type": "Managed", "domain_name": DOMAIN,
                       "cloud_instance_name": "microsoftonline.com",
                       "cloud_audience_urn": "urn:federation:MicrosoftOnline"}
    unknown = requests.get(f"{entra.base_url}/common/userrealm/x@fabrikam.com?api-version=1.0", timeout=5).json()
    assert unknown["account_type"] == "Unknown"


# ------------------------------------------------------------------------------------------- grants
def test_client_credentials_with_msal(entra: EntraEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    app = cca(entra, APP, SECRET)
    result = app.acquire_token_for_client([POWERBI_SCOPE])
    assert result["token_type"] == "Bearer" and result["expires_in"] == 3600, result
    claims = verify(entra, result["access_token"], POWERBI)
    assert claims["tid"] == TENANT and claims["appid"] == claims["azp"] == APP and claims["ver"] == "2.0"
    assert claims["roles"] == ["Tenant.Read.All"] and claims["idtyp"] == "app" and claims["oid"] == claims["sub"]
    assert claims["exp"] - claims["iat"] == 3600 and claims["nbf"] == claims["iat"] and claims["uti"]
    header = jwt.get_unverified_header(result["access_token"])
    assert header["kid"] == entra.signing_kid and header["typ"] == "JWT" and header["alg"] == "RS256"
    assert app.acquire_token_for_client([POWERBI_SCOPE])["token_source"] == "cache"
    assert entra.token_requests(grant_type="client_credentials", client_id=APP) == entra.token_requests() == 1

    monkeypatch.setattr(entra, "access_token_lifetime", 120)
    again = post_token(entra, cc_form()).json()
    assert again["expires_in"] == again["ext_expires_in"] == 120
    claims_again = verify(entra, again["access_token"], POWERBI)
    assert claims_again["exp"] - claims_again["iat"] == 120 and claims_again["jti"] != claims["jti"]


def test_password_grant_silent_cache_and_refresh(entra: EntraEmulator) -> None:
    require_443(entra)
    app = cca(entra, APP, SECRET)
    result = app.acquire_token_by_username_password(ALICE, ALICE_PW, scopes=[POWERBI_SCOPE])
    assert "access_token" in result and result["refresh_token"] and result["id_token"], result
    assert json.loads(base64.urlsafe_b64decode(result["client_info"] + "==")) == {"uid": ALICE_OID, "utid": TENANT}
    claims = verify(entra, result["access_token"], POWERBI)
    assert (claims["oid"], claims["upn"], claims["preferred_username"], claims["name"]) == (
        ALICE_OID, ALICE, ALICE, "Alice Example")
    assert claims["scp"] == "Report.Read.All Dataset.Read.All" and claims["roles"] == ["Report.Viewer"]
    sent = last_token_form(entra)
    assert sent["grant_type"] == "password" and {"openid", "profile", "offline_access"} <= set(sent["scope"].split())
    assert entra.count("/common/userrealm/") == 1

    [account] = app.get_accounts()
    assert account["username"] == ALICE and account["home_account_id"] == f"{ALICE_OID}.{TENANT}"
    before = entra.token_requests()
    cached = app.acquire_token_silent([POWERBI_SCOPE], account=account)
    assert cached is not None and cached["access_token"] == result["access_token"]
    assert entra.token_requests() == before

    refreshed = app.acquire_token_silent([POWERBI_SCOPE], account=account, force_refresh=True)
    assert refreshed is not None and refreshed["access_token"] != result["access_token"]
    assert entra.token_requests(grant_type="refresh_token", client_id=APP) == 1
    assert verify(entra, refreshed["access_token"], POWERBI)["oid"] == ALICE_OID


@pytest.mark.parametrize("audience", [f"api://{API_APP}", API_APP])
def test_on_behalf_of(entra: EntraEmulator, audience: str) -> None:
    caller = entra.issue_access_token(tenant_id=TENANT, audience=audience, subject_username=ALICE,
                                      scopes="access_as_user")
    result = cca(entra, API_APP, API_SECRET).acquire_token_on_behalf_of(caller, [POWERBI_SCOPE])
    assert "access_token" in result and result["refresh_token"] and result["id_token"], result
    claims = verify(entra, result["access_token"], POWERBI)
    assert (claims["oid"], claims["upn"], claims["tid"], claims["appid"]) == (ALICE_OID, ALICE, TENANT, API_APP)
    sent = last_token_form(entra)
    assert sent["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    assert sent["requested_token_use"] == "on_behalf_of" and sent["assertion"] == caller


def _forged(entra: EntraEmulator, **claims: Any) -> str:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    good = jwt.decode(entra.issue_access_token(tenant_id=TENANT, audience=f"api://{API_APP}", subject_username=ALICE),
                      options={"verify_signature": False})
    return jwt.encode({**good, **claims}, other, algorithm="RS256", headers={"kid": entra.signing_kid})


@pytest.mark.parametrize(("make_assertion", "code"), [
    (lambda e: e.issue_access_token(tenant_id=TENANT, audience="api://someone-else", subject_username=ALICE), 50013),
    (lambda e: _forged(e), 50013),
    (lambda e: e.issue_access_token(tenant_id=TENANT, audience=API_APP, subject_username=ALICE,
                                    headers={"kid": "unknown-kid"}), 50013),
    (lambda e: e.issue_access_token(tenant_id=TENANT, audience=API_APP, subject_username=ALICE, lifetime=-900), 500133),
    (lambda e: e.issue_access_token(tenant_id=TENANT, audience=API_APP), 50013),  # app-only token
    (lambda e: e.issue_access_token(tenant_id=TENANT, audience=API_APP, subject_username=BOB), 50076),  # no MFA
], ids=["audience", "signature", "unknown-kid", "expired", "app-token", "mfa"])
def test_on_behalf_of_rejects_bad_assertions(entra: EntraEmulator, make_assertion: Any, code: int) -> None:
    result = cca(entra, API_APP, API_SECRET).acquire_token_on_behalf_of(make_assertion(entra), [POWERBI_SCOPE])
    assert result["error"] == "invalid_grant" and result["error_codes"] == [code], result


def test_on_behalf_of_accepts_mfa_claim(entra: EntraEmulator) -> None:
    caller = entra.issue_access_token(tenant_id=TENANT, audience=API_APP, subject_username=BOB,
                                      extra_claims={"amr": ["pwd", "mfa"]})
    result = cca(entra, API_APP, API_SECRET).acquire_token_on_behalf_of(caller, [f"{POWERBI}/Report.Read.All"])
    assert verify(entra, result["access_token"], POWERBI)["scp"] == "Report.Read.All"


def test_refresh_tokens_are_bound_and_revocable(entra: EntraEmulator) -> None:
    caller = entra.issue_access_token(tenant_id=TENANT, audience=API_APP, subject_username=ALICE)
    api = cca(entra, API_APP, API_SECRET)
    refresh_token = api.acquire_token_on_behalf_of(caller, [POWERBI_SCOPE])["refresh_token"]
    assert "access_token" in api.acquire_token_by_refresh_token(refresh_token, [POWERBI_SCOPE])
    other_client = cca(entra, APP, SECRET).acquire_token_by_refresh_token(refresh_token, [POWERBI_SCOPE])
    assert other_client["error_codes"] == [70000]
    assert entra.revoke_refresh_tokens(TENANT, ALICE) >= 1
    assert cca(entra, API_APP, API_SECRET).acquire_token_by_refresh_token(
        refresh_token, [POWERBI_SCOPE])["error_codes"] == [50173]


# -------------------------------------------------------------------------------------- credentials
@pytest.mark.parametrize("send_x5c", [False, True], ids=["thumbprint-RS256", "x5c-PS256"])
def test_certificate_credential(entra: EntraEmulator, app_cert: ClientCertificate, send_x5c: bool) -> None:
    result = cca(entra, CERT_APP, app_cert.msal_credential(send_x5c=send_x5c)).acquire_token_for_client([POWERBI_SCOPE])
    assert verify(entra, result["access_token"], POWERBI)["appidacr"] == "2", result
    sent = last_token_form(entra)
    assert "client_secret" not in sent
    assert sent["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    header = jwt.get_unverified_header(sent["client_assertion"])
    assert (header["alg"], "x5c" in header, "x5t#S256" in header) == (("PS256", True, True) if send_x5c
                                                                      else ("RS256", False, False))


def test_client_assertion_checks(entra: EntraEmulator, ca: DevCertificateAuthority,
                                 app_cert: ClientCertificate) -> None:
    rogue = cca(entra, CERT_APP, ca.issue_client_certificate("rogue").msal_credential())
    assert rogue.acquire_token_for_client([POWERBI_SCOPE])["error_codes"] == [700027]

    def assertion(**overrides: Any) -> dict[str, str]:
        now = int(time.time())
        claims = {"aud": f"{entra.base_url}/{TENANT}/oauth2/v2.0/token", "iss": CERT_APP, "sub": CERT_APP,
                  "exp": now + 600, "iat": now, "jti": "x", **overrides}
        thumb = base64.urlsafe_b64encode(bytes.fromhex(app_cert.sha1_thumbprint)).rstrip(b"=").decode()
        token = jwt.encode(claims, app_cert.private_key_pem, algorithm="RS256", headers={"x5t": thumb})
        return {"grant_type": "client_credentials", "client_id": CERT_APP, "scope": POWERBI_SCOPE,
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": token}

    assert post_token(entra, assertion()).status_code == 200
    assert post_token(entra, assertion(aud=entra.issuer(TENANT))).status_code == 200
    cases: list[tuple[dict[str, Any], int]] = [({"aud": "https://elsewhere/token"}, 700027), ({"iss": APP}, 700027),
                                               ({"exp": int(time.time()) - 900}, 700024), ({"sub": APP}, 700027)]
    for overrides, code in cases:
        response = post_token(entra, assertion(**overrides))
        assert (response.status_code, response.json()["error_codes"]) == (401, [code]), overrides


def test_secret_rotation_and_expiry(entra: EntraEmulator) -> None:
    entra.register_app(TENANT, ROTATE_APP, secret="first-secret")
    entra.rotate_secret(TENANT, ROTATE_APP, "second-secret", keep_old=True)
    statuses = [post_token(entra, cc_form(ROTATE_APP, s)).status_code for s in ("first-secret", "second-secret")]
    assert statuses == [200, 200]
    entra.rotate_secret(TENANT, ROTATE_APP, "third-secret")
    assert post_token(entra, cc_form(ROTATE_APP, "second-secret")).json()["error_codes"] == [7000215]
    entra.expire_secrets(TENANT, ROTATE_APP)
    assert post_token(entra, cc_form(ROTATE_APP, "third-secret")).json()["error_codes"] == [7000222]


# ------------------------------------------------------------------------------------------- errors
PW_FORM = {"grant_type": "password", "client_id": APP, "client_secret": SECRET, "scope": f"{POWERBI_SCOPE} openid"}
ERROR_CASES: list[tuple[str, str, dict[str, str], int, str, int, str | None]] = [
    ("invalid-secret", TENANT, cc_form(secret="wrong-secret-value"), 401, "invalid_client", 7000215, None),
    ("expired-secret", TENANT, cc_form(EXPIRED_APP, EXPIRED_SECRET), 401, "invalid_client", 7000222, None),
    ("unknown-client", TENANT, cc_form("99999999-9999-4999-8999-999999999999"), 400, "unauthorized_client", 700016,
     None),
    ("unknown-tenant", "fabrikam.example", cc_form(), 400, "invalid_request", 90002, None),
    ("bad-password", TENANT, {**PW_FORM, "username": ALICE, "password": "wrong-password"}, 400, "invalid_grant", 50126,
     None),
    ("unknown-user", TENANT, {**PW_FORM, "username": "nobody@contoso.com", "password": PW}, 400, "invalid_grant",
     50034, None),
    ("mfa-required", TENANT, {**PW_FORM, "username": BOB, "password": PW}, 400, "invalid_grant", 50076, "basic_action"),
    ("no-consent", TENANT, {**PW_FORM, "client_id": NO_CONSENT_APP, "username": ALICE, "password": ALICE_PW}, 400,
     "invalid_grant", 65001, "consent_required"),
    ("conditional-access", TENANT, {**PW_FORM, "username": CAROL, "password": PW}, 400, "invalid_grant", 53003, None),
    ("bad-client-assertion", TENANT, {"grant_type": "client_credentials", "client_id": CERT_APP, "scope": POWERBI_SCOPE,
     "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
     "client_assertion": "not-a-jwt-at-all"}, 401, "invalid_client", 700027, None),
    ("missing-grant-type", TENANT, {"client_id": APP, "client_secret": SECRET}, 400, "invalid_request", 900144, None),
    ("missing-scope", TENANT, {**cc_form(), "scope": ""}, 400, "invalid_request", 900144, None),
    ("bad-refresh-token", TENANT, {"grant_type": "refresh_token", "client_id": APP, "client_secret": SECRET,
     "refresh_token": "0.A-made-up-refresh-token"}, 400, "invalid_grant", 70000, None),
    ("bad-obo-assertion", TENANT, {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "client_id": API_APP,
     "client_secret": API_SECRET, "requested_token_use": "on_behalf_of", "assertion": "garbage-assertion",
     "scope": POWERBI_SCOPE}, 400, "invalid_grant", 50013, None),
    ("unsupported-grant", TENANT, {**cc_form(), "grant_type": "implicit"}, 400, "unsupported_grant_type", 70003, None),
]


@pytest.mark.parametrize(("tenant", "form", "status", "error", "code", "suberror"),
                         [case[1:] for case in ERROR_CASES], ids=[case[0] for case in ERROR_CASES])
def test_token_errors_have_azure_ad_shape(entra: EntraEmulator, tenant: str, form: dict[str, str], status: int,
                                          error: str, code: int, suberror: str | None) -> None:
    response = post_token(entra, form, tenant, headers={"client-request-id": "0f1e2d3c-aaaa-4bbb-8ccc-123456789abc"})
    body = response.json()
    assert (response.status_code, body["error"], body["error_codes"], body.get("suberror")) == (
        status, error, [code], suberror)
    assert re.fullmatch(rf"AADSTS{code}: [^\r\n]+\r\nTrace ID: {body['trace_id']}\r\nCorrelation ID: "
                        r"0f1e2d3c-aaaa-4bbb-8ccc-123456789abc\r\nTimestamp: \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ",
                        body["error_description"])
    assert body["correlation_id"] == "0f1e2d3c-aaaa-4bbb-8ccc-123456789abc" and body["timestamp"]
    assert body["error_uri"] == f"{entra.base_url}/error?code={code}"
    for name in ("client_secret", "password", "client_assertion", "assertion", "refresh_token"):
        assert not form.get(name) or form[name] not in response.text
    assert SECRET not in response.text and API_SECRET not in response.text and ALICE_PW not in response.text


def test_msal_surfaces_error_codes(entra: EntraEmulator) -> None:
    cases = [(cca(entra, APP, "wrong-secret-value"), 7000215), (cca(entra, EXPIRED_APP, EXPIRED_SECRET), 7000222),
             (cca(entra, "99999999-9999-4999-8999-999999999999", SECRET), 700016)]
    for app, code in cases:
        result = app.acquire_token_for_client([POWERBI_SCOPE])
        assert result["error_codes"] == [code] and f"AADSTS{code}" in result["error_description"], result
    bogus = cca(entra, APP, SECRET).acquire_token_by_refresh_token("0.A-bogus", [POWERBI_SCOPE])
    assert bogus["error_codes"] == [70000]


@pytest.mark.parametrize(("client_id", "username", "password", "code", "suberror"), [
    (APP, ALICE, "wrong-password", 50126, None), (APP, "nobody@contoso.com", PW, 50034, None),
    (APP, BOB, PW, 50076, "basic_action"), (NO_CONSENT_APP, ALICE, ALICE_PW, 65001, "consent_required"),
    (APP, CAROL, PW, 53003, None)])
def test_msal_surfaces_user_flow_errors(entra: EntraEmulator, client_id: str, username: str, password: str,
                                        code: int, suberror: str | None) -> None:
    require_443(entra)
    result = cca(entra, client_id, SECRET).acquire_token_by_username_password(username, password, [POWERBI_SCOPE])
    assert (result["error"], result["error_codes"], result.get("suberror")) == ("invalid_grant", [code], suberror)


# ------------------------------------------------------------------------------------ fault injection
def test_http_fault_with_retry_after(entra: EntraEmulator) -> None:
    token_path = f"/{TENANT}/oauth2/"
    entra.inject_fault(Fault.http(503, {"error": "temporarily_unavailable"}, {"Retry-After": "7"}),
                       path_prefix=token_path)
    failed = post_token(entra, cc_form())
    assert (failed.status_code, failed.headers["Retry-After"], failed.json()) == (
        503, "7", {"error": "temporarily_unavailable"})
    assert post_token(entra, cc_form()).status_code == 200  # one-shot

    entra.inject_fault(Fault.http(503, headers={"Retry-After": "30"}), path_prefix=token_path)
    app = cca(entra, APP, SECRET)
    with pytest.raises(msal.exceptions.MsalServiceError, match="503"):  # MSAL raises on 5xx, returns 4xx bodies
        app.acquire_token_for_client([POWERBI_SCOPE])
    before = entra.token_requests()
    with pytest.raises(msal.exceptions.MsalServiceError, match="503"):  # replayed locally: Retry-After honoured
        app.acquire_token_for_client([POWERBI_SCOPE])
    assert entra.token_requests() == before


def test_reset_and_malformed_json(entra: EntraEmulator) -> None:
    entra.inject_fault("reset")
    with pytest.raises(requests.ConnectionError):
        post_token(entra, cc_form())
    entra.inject_fault("malformed_json")
    garbled = post_token(entra, cc_form())
    assert garbled.status_code == 200 and garbled.headers["Content-Type"].startswith("application/json")
    with pytest.raises(requests.JSONDecodeError):
        garbled.json()
    assert post_token(entra, cc_form()).status_code == 200
    assert [r.fault for r in entra.requests] == ["reset", "malformed_json", None]


def test_fault_counts_and_path_prefixes(entra: EntraEmulator) -> None:
    realm = f"{entra.base_url}/common/userrealm/{ALICE}"
    entra.inject_fault(500, count=2, path_prefix="/common/")
    assert requests.get(f"{entra.base_url}/{TENANT}/discovery/v2.0/keys", timeout=5).status_code == 200
    assert [requests.get(realm, timeout=5).status_code for _ in range(3)] == [500, 500, 200]
    entra.inject_fault(429, count=None)
    assert [requests.get(realm, timeout=5).status_code for _ in range(3)] == [429, 429, 429]
    entra.clear_faults()
    assert requests.get(realm, timeout=5).status_code == 200


def test_latency_global_and_per_prefix(entra: EntraEmulator) -> None:
    entra.set_latency(0.3, path_prefix="/common/userrealm/")
    started = time.monotonic()
    requests.get(f"{entra.base_url}/common/userrealm/{ALICE}", timeout=5)
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    post_token(entra, cc_form())
    assert time.monotonic() - started < 0.3
    entra.latency = 0.2
    started = time.monotonic()
    post_token(entra, cc_form())
    assert time.monotonic() - started >= 0.2


def test_concurrent_token_requests_are_all_counted(entra: EntraEmulator) -> None:
    client_id = entra.register_app(TENANT, secret="concurrency-secret")
    barrier = threading.Barrier(100)

    def one(_: int) -> dict[str, Any]:
        barrier.wait()
        response = post_token(entra, cc_form(client_id, "concurrency-secret"))
        assert response.status_code == 200
        return jwt.decode(response.json()["access_token"], options={"verify_signature": False})

    with ThreadPoolExecutor(max_workers=100) as pool:
        tokens = list(pool.map(one, range(100)))
    assert entra.token_requests(grant_type="client_credentials", client_id=client_id) == 100
    assert len({t["jti"] for t in tokens}) == 100


def test_signing_key_rotation(ca: DevCertificateAuthority) -> None:
    with EntraEmulator(ca=ca) as emulator:
        emulator.add_tenant(TENANT, domain=DOMAIN)
        emulator.register_app(TENANT, API_APP, secret=API_SECRET)
        emulator.add_user(TENANT, ALICE, ALICE_PW)
        old_kid = emulator.signing_kid
        caller = emulator.issue_access_token(tenant_id=TENANT, audience=API_APP, subject_username=ALICE)
        new_kid = emulator.rotate_signing_key()
        jwks_url = f"{emulator.base_url}/{TENANT}/discovery/v2.0/keys"
        assert [k["kid"] for k in requests.get(jwks_url, timeout=5).json()["keys"]] == [new_kid, old_kid]
        app = cca(emulator, API_APP, API_SECRET)
        result = app.acquire_token_on_behalf_of(caller, [POWERBI_SCOPE])
        assert jwt.get_unverified_header(result["access_token"])["kid"] == new_kid
        emulator.rotate_signing_key(drop_old=True)
        assert len(requests.get(jwks_url, timeout=5).json()["keys"]) == 1
        stale = cca(emulator, API_APP, API_SECRET).acquire_token_on_behalf_of(caller, [f"{POWERBI}/Report.Read.All"])
        assert stale["error_codes"] == [50013]


# ------------------------------------------------------------------------------------- emulator base
class EchoEmulator(EmulatorServer):
    @route("POST", r"/echo/(?P<name>[^/]+)")
    def _echo(self, request: Request) -> Response:
        return Response.json({"name": request.path_params["name"], "form": request.form(), "query": request.query,
                              "header": request.headers.get("x-MiXeD")})

    @route("GET", r"/boom")
    def _boom(self, request: Request) -> Response:
        raise RuntimeError("handler bug")


def test_emulator_base_routing_and_recording(ca: DevCertificateAuthority) -> None:
    with EchoEmulator(ca=ca) as server:
        echoed = requests.post(f"{server.base_url}/echo/a%20b?x=1", data={"k": "v"}, headers={"X-Mixed": "yes"},
                               timeout=5)
        assert echoed.json() == {"name": "a b", "form": {"k": "v"}, "query": {"x": "1"}, "header": "yes"}
        assert requests.get(f"{server.base_url}/nowhere", timeout=5).status_code == 404
        assert requests.get(f"{server.base_url}/echo/x", timeout=5).status_code == 405
        broken = requests.get(f"{server.base_url}/boom", timeout=5)
        assert broken.status_code == 500 and "handler bug" in broken.json()["error_description"]
        assert server.count("/echo/", k="v") == 1 and server.count("/echo/", k="w") == 0 and server.count() == 4
        server.reset_counters()
        assert server.requests == []


def test_emulator_base_200_concurrent_clients_with_counted_faults(ca: DevCertificateAuthority) -> None:
    with EchoEmulator(ca=ca) as server:
        server.inject_fault(503, count=50)
        barrier = threading.Barrier(200)

        def one(i: int) -> list[int]:
            barrier.wait()
            with requests.Session() as session:  # keep-alive: three requests on one connection
                return [session.post(f"{server.base_url}/echo/{i}", data={"i": str(i)}, timeout=10).status_code
                        for _ in range(3)]

        with ThreadPoolExecutor(max_workers=200) as pool:
            statuses = [s for batch in pool.map(one, range(200)) for s in batch]
        assert statuses.count(503) == 50 and statuses.count(200) == 550
        assert server.count("/echo/") == 600


def test_hang_is_interrupted_by_stop(ca: DevCertificateAuthority) -> None:
    server = EchoEmulator(ca=ca).start()
    server.inject_fault(Fault.hang(1), count=1)
    with pytest.raises(requests.ReadTimeout):
        requests.get(f"{server.base_url}/boom", timeout=0.2)
    server.inject_fault(Fault.hang(30))
    errors: list[BaseException] = []

    def client() -> None:
        try:
            requests.get(f"{server.base_url}/boom", timeout=10)
        except requests.RequestException as exc:
            errors.append(exc)

    thread = threading.Thread(target=client)
    thread.start()
    deadline = time.monotonic() + 5
    while server.count() < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    server.stop()
    thread.join(5)
    assert time.monotonic() - started < 2 and len(errors) == 1 and isinstance(errors[0], requests.ConnectionError)


def _can_bind(host: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def test_random_loopback_addresses_prefer_port_443(ca: DevCertificateAuthority) -> None:
    can_bind_443 = _can_bind(random_loopback(), 443)  # measured, not assumed from the uid
    with EchoEmulator(ca=ca) as first, EchoEmulator(ca=ca) as second:
        assert first.host != second.host
        for server in (first, second):
            assert ipaddress.ip_address(server.host).is_loopback and server.host != "127.0.0.1"
            assert server.on_port_443 == can_bind_443
            assert server.base_url == (f"https://{server.host}" if can_bind_443 else
                                       f"https://{server.host}:{server.port}")
            assert requests.get(f"{server.base_url}/nowhere", timeout=5).status_code == 404


def test_falls_back_to_an_ephemeral_port_when_443_is_taken(ca: DevCertificateAuthority) -> None:
    host = random_loopback()
    with socket.socket() as squatter:
        try:
            squatter.bind((host, 443))
            squatter.listen()
        except PermissionError:
            pass  # unprivileged: 443 is unavailable anyway, which exercises the same fallback
        with EchoEmulator(ca=ca, host=host) as server:
            assert server.host == host and not server.on_port_443 and server.port > 0
            assert server.base_url == f"https://{host}:{server.port}"
            assert requests.get(f"{server.base_url}/nowhere", timeout=5).status_code == 404


def test_explicit_port_is_honoured_or_fails(ca: DevCertificateAuthority) -> None:
    host = random_loopback()
    with socket.socket() as squatter:
        squatter.bind((host, 0))
        taken = squatter.getsockname()[1]
        with pytest.raises(OSError):
            EchoEmulator(ca=ca, host=host, port=taken).start()
    server = EchoEmulator(ca=ca, host=host, port=taken).start()  # free again
    try:
        assert (server.host, server.port) == (host, taken)
        server.stop()
        server.start()  # a restart keeps the address, so configured clients still reach it
        assert (server.host, server.port) == (host, taken)
        assert requests.get(f"{server.base_url}/nowhere", timeout=5).status_code == 404
    finally:
        server.stop()
