"""Property-based fuzzing of every endpoint, through the in-process Functions host, with hypothesis.

Every endpoint gets random methods, headers (``Authorization`` variants including validly signed tokens with
random claims, ``Content-Type``, ``X-MS-CLIENT-PRINCIPAL``, ``x-request-id``, ``traceparent``,
``X-Forwarded-For``), query strings, route values and bodies (random JSON, embed-shaped JSON with wrong
types, random bytes, invalid UTF-8, deep nesting, sizes around the 64 KiB limit), under every configuration
the broker can run offline: each caller-authentication mode and grant type, with the Entra ID, Key Vault and
Power BI emulators behind it, so token verification, token requests and Power BI calls really run.

Invariants on every response: no unhandled exception and never a 500; ``Cache-Control: no-store``,
``X-Content-Type-Options: nosniff`` and a well-formed ``X-Request-Id`` (the caller's, when it sent a valid
one); every non-2xx answer a problem document (``application/problem+json``; ``type``, ``title``,
``status`` equal to the HTTP status, ``detail``, a documented ``code``, ``requestId``); ``Allow`` on 405,
``Retry-After`` on 429, ``WWW-Authenticate`` on 401; 2xx bodies of the documented shape. The ``call``
fixture also checks every response for secrets and, on errors, for tokens.

The module also pins down what fuzzing found (each a test that failed before its fix) and checks that the
leak audits themselves catch leaks: a session whose logs leak fails, a leaking response fails its test.

``BROKER_FUZZ_EXAMPLES`` is the number of examples per endpoint, spread evenly over the configurations
(default 300; 3000 for a long run). See docs/RELIABILITY.md for durations.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtools.entra import EntraEmulator
from devtools.functions_host import HostResponse
from tests.conftest import (
    ALICE,
    BOB,
    CLIENT_ID,
    CLIENT_SECRET,
    MASTER_PASSWORD,
    MASTER_USER,
    ROOT,
    TENANT,
    Env,
    World,
    assert_no_leak,
    embed_settings,
)
from token_broker.support.errors import PROBLEM_TYPE_BASE

#: test_embed.py's Power BI fixtures, imported so that pytest finds them here (candidates for conftest.py).

Call = Callable[..., HostResponse]
API = f"api://{CLIENT_ID}"
ALL_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
ROLE_TYPE = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
OID_TYPE = "http://schemas.microsoft.com/identity/claims/objectidentifier"
SCOPE_TYPE = "http://schemas.microsoft.com/identity/claims/scope"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_CODE = re.compile(r"^[a-z][a-z0-9_]*$")
DOCUMENTED = (ROOT / "docs" / "TROUBLESHOOTING.md").read_text()

EXAMPLES_PER_ENDPOINT = int(os.environ.get("BROKER_FUZZ_EXAMPLES", "300"))

#: Statuses and codes seen, per endpoint: printed at the end of the module (pytest -s) for docs/RELIABILITY.md.
OUTCOMES: dict[str, Counter[str]] = {}


# -- the configurations ----------------------------------------------------------------------------------------


def _configurations(entra: EntraEmulator, world: World, powerbi: Any, vault_uri: Callable[[], str],
                    identity: Callable[[], str]) -> dict[str, Callable[[], dict[str, str | None]]]:
    """Settings of each configuration, built lazily (the Key Vault one needs the vault fixture)."""

    def embed(**extra: str | None) -> dict[str, str | None]:
        return {**embed_settings(entra, powerbi, world), "EMBED_RLS_CUSTOM_DATA_CLAIM": "ctry", **extra}

    return {
        "jwt+client_credentials": lambda: embed(
            EMBED_ALLOW_EDIT="true", EMBED_EDIT_ROLE="Report.Viewer", POWERBI_WORKSPACE_ID=world.sales),
        "jwt+on_behalf_of+scopes": lambda: embed(
            POWERBI_GRANT_TYPE="on_behalf_of", CALLER_REQUIRED_SCOPES="access_as_user"),
        "easyauth+roles": lambda: embed(
            CALLER_AUTH="easyauth", CALLER_EASYAUTH_ALLOW_LOCAL="true", CALLER_REQUIRED_ROLES="Report.Viewer"),
        "anonymous+rate_limit": lambda: embed(
            CALLER_AUTH="anonymous", CALLER_RATE_LIMIT_PER_MINUTE="20", CALLER_RATE_LIMIT_MAX_CALLERS="50"),
        "function_key+key_vault": lambda: embed(
            CALLER_AUTH="function_key", POWERBI_CLIENT_SECRET=None, POWERBI_CLIENT_SECRET_URI=vault_uri(),
            AZURE_CLIENT_ID=identity()),
        "anonymous+password": lambda: embed(
            CALLER_AUTH="anonymous", POWERBI_GRANT_TYPE="password", POWERBI_USERNAME=MASTER_USER,
            POWERBI_PASSWORD=MASTER_PASSWORD),
        "caller_auth_unset": lambda: embed(CALLER_AUTH=None),
        "invalid_settings": lambda: embed(POWERBI_CLIENT_ID="nope", POWERBI_AUTHORITY_HOST="http://login.example"),
    }


CONFIGURATIONS = ("jwt+client_credentials", "jwt+on_behalf_of+scopes", "easyauth+roles", "anonymous+rate_limit",
                  "function_key+key_vault", "anonymous+password", "caller_auth_unset", "invalid_settings")
ENDPOINTS = ("token", "embed-token", "report-embed", "health")


@pytest.fixture
def configured(request: pytest.FixtureRequest, env: Env, entra: EntraEmulator, powerbi: Any,
               world: World) -> Iterator[World]:
    """The broker configured as ``request.param`` names."""

    def vault_uri() -> str:
        return f"{request.getfixturevalue('vault').vault_url}/secrets/powerbi-client-secret"

    def identity() -> str:
        return str(request.getfixturevalue("app_identity").client_id)

    env.set(**_configurations(entra, world, powerbi, vault_uri, identity)[request.param]())
    yield world


# -- strategies ------------------------------------------------------------------------------------------------
# Each input mixes a "plausible" strategy (valid ids, valid tokens: requests that get deep into the broker,
# to Entra ID and Power BI) with "wild" ones (wrong types, garbage, sizes). ``_often`` weights the plausible.

HUGE_NUMBERS = st.sampled_from([10**400, -(10**400), 2**63, 2**64 + 1, 1e308, -1e308, 0, -1, 1.5])
SCALARS = st.none() | st.booleans() | st.integers() | HUGE_NUMBERS | st.floats() | st.text(max_size=40)
JSON_VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12)
GUIDS = st.uuids().map(str)


def _often(plausible: st.SearchStrategy[Any], *wild: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``plausible`` about three times in four, else one of ``wild``."""
    # one_of collapses identical branches: the plausible one is repeated as three distinct (mapped) strategies.
    copies = [plausible.map(lambda value: value) for _ in range(3)]
    return st.one_of(*copies, st.one_of(*wild))


def _dumps(value: Any, *, ascii_only: bool = True) -> bytes:
    # allow_nan (the default) writes NaN/Infinity, which Python's parser accepts: worth sending.
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def _b64(raw: bytes, *, url: bool = False) -> str:
    return (base64.urlsafe_b64encode(raw).rstrip(b"=") if url else base64.b64encode(raw)).decode()


def _nested(depth: int, kind: str) -> bytes:
    if kind == "array":
        return b"[" * depth + b"]" * depth
    return b'{"reports":' * depth + b"1" + b"}" * depth


class Inputs:
    """The strategies for one world of the Power BI emulator and the Entra ID emulator."""

    def __init__(self, world: World, entra: EntraEmulator) -> None:
        self.entra = entra
        reports = st.sampled_from([world.plain_report, world.second_report, world.rls_report, world.other_report,
                                   world.shared_report])
        self.workspace = st.sampled_from([world.sales, world.shared, world.other])
        self.report = _often(reports, reports.map(str.upper), GUIDS, JSON_VALUES)
        self.route_report = _often(reports, GUIDS, st.text(min_size=1, max_size=60))
        self.dataset = _often(st.sampled_from([world.plain_dataset, world.rls_dataset]), GUIDS, JSON_VALUES)
        self.any_workspace = _often(self.workspace, GUIDS, JSON_VALUES)

    def embed_body(self) -> st.SearchStrategy[Any]:
        report = st.fixed_dictionaries({"id": self.report}, optional={
            "workspaceId": self.any_workspace, "allowEdit": _often(st.booleans(), JSON_VALUES),
            "colour": JSON_VALUES})
        reports = _often(st.lists(report, min_size=1, max_size=3), st.lists(report, min_size=49, max_size=52),
                         JSON_VALUES)
        datasets = st.lists(st.fixed_dictionaries({"id": self.dataset}), max_size=2) | JSON_VALUES
        plausible = st.fixed_dictionaries({"reports": reports, "workspaceId": self.any_workspace}, optional={
            "datasets": datasets, "lifetimeMinutes": _often(st.integers(1, 1440), st.integers(), JSON_VALUES)})
        wild = st.fixed_dictionaries({}, optional={
            "reports": JSON_VALUES, "datasets": JSON_VALUES, "workspaceId": JSON_VALUES, "lifetimeMinutes": JSON_VALUES,
            "identities": JSON_VALUES})
        return _often(plausible, wild)

    def body(self) -> st.SearchStrategy[bytes]:
        return _often(
            self.embed_body().map(_dumps) | self.embed_body().map(lambda v: _dumps(v, ascii_only=False)),
            st.just(b""), st.just(b"{}"), JSON_VALUES.map(_dumps), st.binary(max_size=300),
            st.text(max_size=80).map(lambda text: text.encode("utf-8", "surrogatepass")),  # invalid UTF-8 too
            st.builds(_nested, st.integers(1, 40_000), st.sampled_from(["array", "object"])),
            st.integers(64 * 1024 - 20, 64 * 1024 + 20).map(lambda size: b'{"x":"' + b"a" * (size - 8) + b'"}'))

    def query(self) -> st.SearchStrategy[str]:
        names = st.sampled_from(["workspaceId", "code", "access_token", "username", "colour"]) | st.text(max_size=10)
        values = self.any_workspace.map(lambda v: v if isinstance(v, str) else json.dumps(v)) | st.text(max_size=40)
        return _often(self.workspace.map(lambda w: f"workspaceId={w}"), st.just(""),
                      st.lists(st.tuples(names, values), max_size=4).map(lambda items: urlencode(items)),
                      st.text(max_size=40).map(lambda text: quote(text, safe="=&;%+")))

    def principal(self) -> st.SearchStrategy[str]:
        claim_type = st.sampled_from([ROLE_TYPE, OID_TYPE, SCOPE_TYPE, "preferred_username", "ctry", "exp", "sub"])
        good = st.fixed_dictionaries({"typ": claim_type, "val": st.sampled_from(
            ["Report.Viewer", ALICE, "0d6f5f0e-1111-4a1a-9999-000000000001", "access_as_user"]) | st.text()})
        claim = st.fixed_dictionaries({"typ": claim_type | JSON_VALUES, "val": st.text(max_size=40) | JSON_VALUES})

        def document(claims: list[dict[str, Any]], role_type: Any) -> str:
            return _b64(_dumps({"auth_typ": "aad", "claims": claims, "name_typ": "name", "role_typ": role_type}))

        return _often(st.builds(document, st.lists(good, min_size=1, max_size=6), st.just(ROLE_TYPE)),
                      st.builds(document, st.lists(good | claim, max_size=6), JSON_VALUES),
                      JSON_VALUES.map(lambda value: _b64(_dumps(value))),
                      st.integers(1, 20_000).map(lambda depth: _b64(_nested(depth, "array"))), st.text(max_size=80))

    def authorization(self) -> st.SearchStrategy[str]:
        def issued(username: str | None, audience: str, claims: dict[str, Any]) -> str:
            if not isinstance(claims.get("iss", ""), str):  # PyJWT refuses to sign a non-string issuer
                claims["iss"] = json.dumps(claims["iss"])
            return "Bearer " + self.entra.issue_access_token(
                tenant_id=TENANT, audience=audience, subject_username=username, scopes="access_as_user",
                extra_claims=claims)

        users = st.sampled_from([ALICE, BOB, None])
        claim_names = st.sampled_from(["exp", "nbf", "iat", "roles", "scp", "oid", "sub", "tid", "preferred_username",
                                       "ctry", "aud", "iss", "upn"]) | st.text(max_size=10)
        segment = st.binary(max_size=60).map(lambda raw: _b64(raw, url=True))
        header = JSON_VALUES.map(lambda value: _b64(_dumps(value), url=True)) | st.integers(100, 12_000).map(
            lambda depth: _b64(_nested(depth, "array"), url=True))
        return _often(
            st.builds(issued, users, st.just(API), st.just({})),
            st.builds(issued, users, st.just(API), st.dictionaries(claim_names, JSON_VALUES, max_size=4)),
            st.builds(issued, st.just(ALICE), st.sampled_from(["api://other", API]), st.just({"exp": 1})),
            st.builds(lambda h, p, s: f"Bearer {h}.{p}.{s}", header | segment, segment, segment),
            st.text(max_size=60).map(lambda text: "Bearer " + text),
            st.sampled_from(["Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "bearer  x", "Bearer a b", "Bearer a,b"]),
            st.text(max_size=60))

    def headers(self) -> st.SearchStrategy[dict[str, str]]:
        traceparent = st.builds(lambda trace, span, flags: f"00-{trace}-{span}-{flags}",
                                st.from_regex(r"[0-9a-f]{32}", fullmatch=True),
                                st.from_regex(r"[0-9a-f]{16}", fullmatch=True), st.sampled_from(["00", "01"]))
        optional = {
            "x-request-id": st.from_regex(r"[A-Za-z0-9._:-]{1,128}", fullmatch=True) | st.text(max_size=140),
            "traceparent": traceparent | st.just(f"00-{'0' * 32}-{'1' * 16}-01") | st.text(max_size=60),
            "X-Forwarded-For": st.ip_addresses().map(str) | st.text(max_size=40),
            "Accept": st.sampled_from(["application/json", "*/*", "text/html"]),
        }
        # Both identity headers at once: each configuration reads the one its mode uses and ignores the other.
        identity = _often(st.fixed_dictionaries({"Authorization": self.authorization(),
                                                 "X-MS-CLIENT-PRINCIPAL": self.principal()}),
                          st.fixed_dictionaries({}, optional={"Authorization": self.authorization(),
                                                              "X-MS-CLIENT-PRINCIPAL": self.principal()}))
        extra = st.dictionaries(st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,15}", fullmatch=True), st.text(max_size=40),
                                max_size=2)
        return st.builds(lambda *parts: {k: v for part in parts for k, v in part.items()},
                         extra, st.fixed_dictionaries({}, optional=optional), identity)


#: Content-Type of a request with a body: mostly JSON, so that requests get past the media type check.
CONTENT_TYPES = _often(st.just("application/json"), st.sampled_from(
    ["application/json; charset=utf-8", "APPLICATION/JSON", "text/plain", "application/x-www-form-urlencoded", ""]),
    st.text(max_size=30), st.none())


# -- the invariants -------------------------------------------------------------------------------------------


def check_response(response: HostResponse, endpoint: str, method: str, sent: dict[str, str]) -> None:
    """Assert every invariant of the module docstring on one response."""
    assert response.status != 500, response.text
    assert 200 <= response.status < 600
    assert response.header("cache-control") == "no-store"
    assert response.header("x-content-type-options") == "nosniff"
    request_id = response.header("x-request-id")
    assert request_id is not None and _REQUEST_ID.match(request_id)
    given_id = next((v for k, v in sent.items() if k.lower() == "x-request-id"), None)
    if given_id is not None and _REQUEST_ID.match(given_id):
        assert request_id == given_id
    if response.status < 300:
        assert response.header("content-type") == "application/json"
        body = response.json()
        expected = {"token": {"accessToken", "tokenType", "expiresOn", "expiresIn", "scope"},
                    "health": {"status"}}.get(endpoint, {"token", "tokenId", "expiresOn", "reports"})
        assert expected <= set(body), body
        OUTCOMES.setdefault(endpoint, Counter())[str(response.status)] += 1
        return
    assert response.header("content-type") == "application/problem+json", response.text
    problem = response.json()
    assert isinstance(problem, dict)
    code = problem.get("code")
    assert isinstance(code, str) and _CODE.match(code) and f"`{code}`" in DOCUMENTED, problem
    assert problem["type"] == PROBLEM_TYPE_BASE + code
    assert isinstance(problem["title"], str) and problem["title"]
    assert isinstance(problem["detail"], str) and problem["detail"]
    assert problem["status"] == response.status
    assert problem["requestId"] == request_id
    assert "Traceback" not in response.text
    if response.status == 405:
        assert method in ALL_METHODS and response.header("allow")
    if response.status == 429:
        assert (response.header("retry-after") or "").isdigit()
    if response.status == 401:
        assert response.header("www-authenticate")
    OUTCOMES.setdefault(endpoint, Counter())[f"{response.status} {code}"] += 1


@pytest.mark.parametrize("configured", CONFIGURATIONS, indirect=True)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_every_response_is_well_formed(configured: World, entra: EntraEmulator, call: Call, endpoint: str) -> None:
    """Random requests to one endpoint under one configuration: every invariant holds for every response."""
    inputs = Inputs(configured, entra)
    allowed = {"token": ("GET", "POST"), "embed-token": ("POST",), "report-embed": ("GET",), "health": ("GET",)}
    fixed_path = {"token": "/api/token", "embed-token": "/api/embed-token", "health": "/api/health"}.get(endpoint)
    paths = st.just(fixed_path) if fixed_path else inputs.route_report.map(
        lambda report: f"/api/reports/{quote(report, safe='')}/embed")
    # Built once: hypothesis re-validates a strategy each time one is constructed, which would dominate the run.
    methods = _often(st.sampled_from(allowed[endpoint]), st.sampled_from(ALL_METHODS))
    requests = st.tuples(methods, paths, inputs.query(), inputs.body(), inputs.headers(), CONTENT_TYPES)
    examples = max(10, math.ceil(EXAMPLES_PER_ENDPOINT / len(CONFIGURATIONS)))

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.filter_too_much, HealthCheck.large_base_example])
    @given(request=requests)
    def one_request(request: tuple[str, str, str, bytes, dict[str, str], str | None]) -> None:
        method, path, query, body, headers, content_type = request
        if body and content_type is not None:
            headers = {**headers, "Content-Type": content_type}
        response = call(method, f"{path}?{query}" if query else path, headers=headers, body=body)
        check_response(response, endpoint, method, headers)

    one_request()


def teardown_module() -> None:
    """Print what the fuzzing saw (visible with ``pytest -s``), for docs/RELIABILITY.md."""
    for endpoint, outcomes in sorted(OUTCOMES.items()):
        print(f"\n{endpoint}: " + ", ".join(f"{name} ×{count}" for name, count in outcomes.most_common()))


def test_the_checker_rejects_a_bare_500() -> None:
    """The invariant checker itself catches a host-level failure (a response without headers or problem)."""
    with pytest.raises(AssertionError):
        check_response(HostResponse(500), "token", "GET", {})
    with pytest.raises(AssertionError):
        check_response(HostResponse(404, [("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
                                          ("X-Request-Id", "abc")], b"not found"), "token", "GET", {})


# -- what the fuzzing found, pinned down -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["array", "object"])
def test_a_deeply_nested_body_is_400_not_500(env: Env, call: Call, kind: str) -> None:
    """Found by fuzzing: json's decoder raised RecursionError (not a ValueError) on 2,000 levels of nesting."""
    for path in ("/api/token", "/api/embed-token"):
        response = call("POST", path, headers={"Content-Type": "application/json"}, body=_nested(2_000, kind))
        check_response(response, "token", "POST", {})
        assert (response.status, response.json()["code"]) == (400, "malformed_json")


def test_a_deeply_nested_client_principal_is_401_not_500(env: Env, call: Call) -> None:
    """Found by fuzzing: the same RecursionError from X-MS-CLIENT-PRINCIPAL in easyauth mode."""
    env.set(CALLER_AUTH="easyauth", CALLER_EASYAUTH_ALLOW_LOCAL="true")
    response = call("GET", "/api/token", headers={"X-MS-CLIENT-PRINCIPAL": _b64(_nested(5_000, "array"))})
    check_response(response, "token", "GET", {})
    assert (response.status, response.json()["code"]) == (401, "caller_unauthenticated")


@pytest.mark.parametrize("exp", [10**400, 2**1024], ids=["10**400", "2**1024"])
def test_a_signed_token_with_an_absurd_expiry_is_not_a_500(env: Env, entra: EntraEmulator, call: Call,
                                                           exp: int) -> None:
    """Found by fuzzing: PyJWT accepts any integer ``exp``; turning it into a float overflowed (HTTP 500)."""
    env.set(CALLER_AUTH="jwt", CALLER_JWT_ISSUER=entra.issuer(TENANT), CALLER_JWT_AUDIENCE=API)
    token = entra.issue_access_token(tenant_id=TENANT, audience=API, subject_username=ALICE,
                                     extra_claims={"exp": exp})
    response = call("GET", "/api/token", headers={"Authorization": f"Bearer {token}"})
    check_response(response, "token", "GET", {})
    assert response.status == 200, response.text


# -- the leak audits audit -----------------------------------------------------------------------------------

LEAKING_SESSION = '''
import logging

from tests.conftest import CLIENT_SECRET
from token_broker.support import redaction


def test_an_unredacted_logger_leaks_the_secret() -> None:
    logging.getLogger("app.leaky_secret").warning("calling Azure AD with %s", CLIENT_SECRET)


def test_an_unredacted_logger_leaks_a_token() -> None:
    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXZhbHVl"
    logging.getLogger("app.leaky_token").info("got %s", token)


def test_the_broker_loggers_redact() -> None:
    logger = logging.getLogger("token_broker.redacted")  # created first, like a broker module's logger
    redaction.register_secrets([CLIENT_SECRET])
    redaction.install()
    logger.warning("secret %s and token %s", CLIENT_SECRET,
                                                       "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJib2IifQ.c2ln")
'''


def test_the_session_leak_audit_fails_a_session_whose_logs_leak(tmp_path: Path) -> None:
    """A tiny pytest session with the project's conftest as a plugin: two tests log a secret and a JWT through
    loggers without redaction, one through the broker's redacting loggers. Every test passes, yet the session
    fails, and the audit names exactly the two leaking loggers."""
    (tmp_path / "test_leaks.py").write_text(LEAKING_SESSION)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), str(tmp_path / "test_leaks.py")],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert "3 passed" in result.stdout, result.stdout + result.stderr
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout
    audit = result.stdout.split("LEAK AUDIT FAILED", 1)[1]
    assert "app.leaky_secret: secret" in audit and "app.leaky_token: jwt" in audit
    assert "token_broker.redacted" not in audit


def test_the_response_audit_catches_secrets_anywhere_and_tokens_in_errors() -> None:
    """``assert_no_leak`` (applied by the ``call`` fixture to every response): a configured secret in any body
    or header, or a token in an error body or any header, fails the test; a token in a 200 body is the product."""
    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXZhbHVl"
    leaking = [
        HostResponse(400, [], json.dumps({"detail": f"bad secret {CLIENT_SECRET}"}).encode()),
        HostResponse(200, [], json.dumps({"accessToken": CLIENT_SECRET}).encode()),
        HostResponse(502, [], json.dumps({"detail": f"Azure AD said {token}"}).encode()),
        HostResponse(200, [("X-Debug", token)], b"{}"),
    ]
    for response in leaking:
        with pytest.raises(AssertionError):
            assert_no_leak(response)
    assert_no_leak(HostResponse(200, [], json.dumps({"accessToken": token}).encode()))


FRESH_PROCESS_LOGGING = '''
import io, json, logging, os, sys
stream = io.StringIO()
logging.getLogger().addHandler(logging.StreamHandler(stream))
import function_app  # what the worker does first in a fresh process
from token_broker import runtime
runtime.current_broker()  # the first build: the caller mode's module is imported now
logging.getLogger("token_broker." + sys.argv[1]).warning("leak? %s %s", os.environ["POWERBI_CLIENT_SECRET"],
                                                         "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln")
print(json.dumps(stream.getvalue()))
'''


@pytest.mark.parametrize(("mode", "module"), [("jwt", "jwt_auth"), ("easyauth", "easyauth")])
def test_the_caller_auth_modules_log_through_the_redaction_filter_from_the_start(
    entra: EntraEmulator, mode: str, module: str
) -> None:
    """Found auditing the audit: the redaction filter was attached before the caller mode's module was
    imported, so in a fresh process (a cold start) that module's logger had no filter until the broker was
    rebuilt. Its records now come out redacted from the first request on."""
    settings = {"POWERBI_TENANT_ID": TENANT, "POWERBI_CLIENT_ID": CLIENT_ID, "POWERBI_CLIENT_SECRET": CLIENT_SECRET,
                "CALLER_AUTH": mode, "CALLER_JWT_ISSUER": entra.issuer(TENANT), "CALLER_JWT_AUDIENCE": API,
                "CALLER_EASYAUTH_ALLOW_LOCAL": "true"}
    result = subprocess.run([sys.executable, "-c", FRESH_PROCESS_LOGGING, module], cwd=ROOT,
                            env={**os.environ, **settings}, capture_output=True, text=True, timeout=60, check=True)
    logged = json.loads(result.stdout.strip().splitlines()[-1])
    assert "leak?" in logged and CLIENT_SECRET not in logged and "<redacted>" in logged and "eyJ" not in logged
