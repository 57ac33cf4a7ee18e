"""Caller authentication at the seams: Easy Auth only when the platform vouches, rate-limit keys from the
platform's headers, access tokens only, typed time claims, JWKS single flight with backoff, and the
verified-claims cache against key withdrawal."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import pytest

from devtools.functions_host import HostResponse
from tests.conftest import TENANT, Env, assert_problem

Call = Callable[..., HostResponse]
OID_TYPE = "http://schemas.microsoft.com/identity/claims/objectidentifier"


def forged_principal(oid: str = "0d6f5f0e-1111-4a1a-9999-0000000000ff") -> str:
    claims = [{"typ": OID_TYPE, "val": oid},
              {"typ": "http://schemas.microsoft.com/identity/claims/tenantid", "val": TENANT},
              {"typ": "preferred_username", "val": "mallory@contoso.com"}]
    return base64.b64encode(json.dumps({"auth_typ": "aad", "claims": claims}).encode()).decode()


# -- easyauth: trusted only when App Service Authentication is on ------------------------------------------


def on_app_service(monkeypatch: pytest.MonkeyPatch, auth_enabled: str | None) -> None:
    monkeypatch.setenv("WEBSITE_SITE_NAME", "func-broker")
    monkeypatch.setenv("WEBSITE_INSTANCE_ID", "abc123")
    if auth_enabled is None:
        monkeypatch.delenv("WEBSITE_AUTH_ENABLED", raising=False)
    else:
        monkeypatch.setenv("WEBSITE_AUTH_ENABLED", auth_enabled)


@pytest.mark.parametrize("auth_enabled", [None, "", "false", "False", "0", "yes", "enabled"])
def test_easyauth_on_app_service_without_platform_authentication_refuses_a_forged_principal(
    env: Env, call: Call, monkeypatch: pytest.MonkeyPatch, auth_enabled: str | None
) -> None:
    on_app_service(monkeypatch, auth_enabled)
    env.set(CALLER_AUTH="easyauth", CALLER_EASYAUTH_ALLOW_LOCAL="true")  # the local escape hatch does not apply here
    response = call("GET", "/api/token", headers={"X-MS-CLIENT-PRINCIPAL": forged_principal()})
    problem = assert_problem(response, 503, "configuration_invalid")
    assert problem["setting"] == "CALLER_AUTH"
    assert "App Service Authentication" in str(problem["problems"]) and "WEBSITE_AUTH_ENABLED" in str(
        problem["problems"])


@pytest.mark.parametrize("auth_enabled", ["True", "true", "TRUE"])
def test_easyauth_on_app_service_with_platform_authentication_is_accepted(
    env: Env, call: Call, monkeypatch: pytest.MonkeyPatch, auth_enabled: str
) -> None:
    on_app_service(monkeypatch, auth_enabled)
    env.set(CALLER_AUTH="easyauth")
    response = call("GET", "/api/token", headers={"X-MS-CLIENT-PRINCIPAL": forged_principal()})
    assert response.status == 200, response.text


def test_easyauth_off_app_service_still_has_the_local_escape_hatch(
    env: Env, call: Call, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("WEBSITE_SITE_NAME", "WEBSITE_INSTANCE_ID", "WEBSITE_AUTH_ENABLED"):
        monkeypatch.delenv(name, raising=False)
    env.set(CALLER_AUTH="easyauth", CALLER_EASYAUTH_ALLOW_LOCAL="true")
    assert call("GET", "/api/token", headers={"X-MS-CLIENT-PRINCIPAL": forged_principal()}).status == 200


# -- rate-limit keys from the platform's X-Forwarded-For ------------------------------------------------------


def statuses(call: Call, forwarded_for: list[str | None]) -> list[int]:
    """The status of one /api/token request per X-Forwarded-For value (None: no header)."""
    return [call("GET", "/api/token", headers={} if value is None else {"X-Forwarded-For": value}).status
            for value in forwarded_for]


@pytest.mark.parametrize(("name", "same_client"), [
    ("IPv4 with varying ports", ["203.0.113.7:50001", "203.0.113.7:50002", "203.0.113.7"]),
    ("IPv6 with varying ports", ["[2001:db8:5:6::1]:50001", "[2001:db8:5:6::1]:50002", "2001:db8:5:6::1"]),
    ("IPv6 addresses of one /64", ["[2001:db8:5:6::1]:1", "[2001:db8:5:6::abcd]:2", "2001:db8:5:6:ffff:1:2:3"]),
    ("IPv4-mapped IPv6", ["::ffff:203.0.113.7", "[::ffff:203.0.113.7]:443", "203.0.113.7:1"]),
    ("forged entries left of the platform's", ["198.51.100.1, 203.0.113.7:1", "198.51.100.2, 203.0.113.7:2",
                                                "bogus, 203.0.113.7:3"]),
    ("unparseable or missing", ["not-an-ip", None, "[2001:db8::1]:port"]),
    ("unparseable variations", ["unknown", "1.2.3.4:99999", "_hidden"]),
])
def test_one_client_cannot_get_fresh_buckets_by_varying_the_header(
    env: Env, call: Call, name: str, same_client: list[str | None]
) -> None:
    env.set(CALLER_AUTH="anonymous", CALLER_RATE_LIMIT_PER_MINUTE="2")
    assert statuses(call, same_client) == [200, 200, 429], name


def test_different_clients_have_their_own_buckets(env: Env, call: Call) -> None:
    env.set(CALLER_AUTH="anonymous", CALLER_RATE_LIMIT_PER_MINUTE="1")
    assert statuses(call, ["203.0.113.7:1", "203.0.113.8:1", "[2001:db8:5:6::1]:1", "[2001:db8:5:7::1]:1",
                           "203.0.113.7:2"]) == [200, 200, 200, 200, 429]


def test_trusted_proxy_hops_take_the_client_left_of_your_proxies(env: Env, call: Call) -> None:
    # Front Door appends the client; App Service's front end then appends Front Door's (varying) egress address.
    env.set(CALLER_AUTH="function_key", CALLER_RATE_LIMIT_PER_MINUTE="2", CALLER_TRUSTED_PROXY_HOPS="1")
    assert statuses(call, ["198.51.100.9, 203.0.113.7, 147.243.1.1:1", "203.0.113.7, 147.243.2.2:2",
                           "203.0.113.8, 147.243.1.1:3", "203.0.113.7:7, 147.243.3.3:4"]) == [200, 200, 200, 429]
    # Fewer entries than trusted hops: the shared unknown bucket, never the proxy's or a forged address.
    assert statuses(call, ["147.243.1.1:1", "147.243.1.2:1", "147.243.1.3:1"]) == [200, 200, 429]


def test_trusted_proxy_hops_is_validated(env: Env, call: Call) -> None:
    env.set(CALLER_AUTH="anonymous", CALLER_TRUSTED_PROXY_HOPS="-1")
    problem = assert_problem(call("GET", "/api/health"), 503, "configuration_invalid")
    assert problem["setting"] == "CALLER_TRUSTED_PROXY_HOPS"
