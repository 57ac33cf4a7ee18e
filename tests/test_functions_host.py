"""Tests for devtools.functions_host: routing, auth, request/response conversion."""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

from devtools.functions_host import FunctionsHost, HostResponse, route_prefix_from_host_json

GUID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
FUNCTION_KEY = "fn-key-123"
MASTER_KEY = "master-key-456"

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


def _describe(req: func.HttpRequest, **extra: Any) -> func.HttpResponse:
    payload = {
        "method": req.method,
        "url": req.url,
        "params": dict(req.params),
        "route_params": dict(req.route_params),
        "headers": dict(req.headers),
        "body": req.get_body().decode("utf-8", "replace"),
        **extra,
    }
    return func.HttpResponse(json.dumps(payload), mimetype="application/json")


@app.route(route="items/{id:guid}", methods=["GET"])
def get_item(req: func.HttpRequest) -> func.HttpResponse:
    return _describe(req, fn="get_item")


@app.route(route="users/me", methods=["GET"])
def users_me(req: func.HttpRequest) -> func.HttpResponse:
    return _describe(req, fn="users_me")


@app.route(route="users/{name}", methods=["GET", "DELETE"])
def users_by_name(req: func.HttpRequest) -> func.HttpResponse:
    return _describe(req, fn="users_by_name")


@app.route(route="secure", methods=["GET", "POST"], auth_level=func.AuthLevel.FUNCTION)
def secure(req: func.HttpRequest) -> func.HttpResponse:
    return _describe(req, fn="secure")


@app.route(route="admin/op", auth_level=func.AuthLevel.ADMIN)
def admin_op(req: func.HttpRequest) -> func.HttpResponse:
    return _describe(req, fn="admin_op")


@app.route(route="files/{*rest}")
def files(req: func.HttpRequest) -> func.HttpResponse:
    return _describe(req, fn="files")


@app.route(route="boom")
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("secret detail that must not leak")


@app.route(route="echo/{n:int?}")  # no methods restriction
def echo(req: func.HttpRequest) -> func.HttpResponse:
    return _describe(req, fn="echo")


@app.route(route="c/{a:int}/{b:alpha}/{c:range(1,5)}/{d:regex(^x\\d+$)}/{e:length(2)}/{f:bool}")
def constrained(req: func.HttpRequest) -> func.HttpResponse:
    return _describe(req, fn="constrained")


@app.route(route="dl/{name}.{ext}/{page=1}")
def download(req: func.HttpRequest) -> func.HttpResponse:
    return _describe(req, fn="download")


@app.route()  # route defaults to the function name
def ping(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("pong")


@app.function_name("renamed")
@app.route(trigger_arg_name="request")
def some_python_name(request: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return func.HttpResponse(f"{context.function_name}:{len(context.invocation_id)}")


@app.route(route="plain")
def returns_str(req: func.HttpRequest) -> str:
    return "just a string"


@app.route(route="nothing")
def returns_none(req: func.HttpRequest) -> None:
    return None


@app.route(route="cookies")
def cookies(req: func.HttpRequest) -> func.HttpResponse:
    headers = {"X-Dup": "first"}
    response = func.HttpResponse("<p>hi</p>", status_code=201, headers=headers, mimetype="text/html")
    response.headers.add("Set-Cookie", "a=1; Path=/")
    response.headers.add("Set-Cookie", "b=2; Path=/")
    response.headers.add("X-Dup", "second")
    return response


@app.route(route="typed")
def typed(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(b"\x00\x01", mimetype="application/octet-stream", headers={"Content-Type": "image/png"})


@app.route(route="async")
async def async_fn(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("from a coroutine")


@app.timer_trigger(schedule="0 */5 * * * *", arg_name="timer")
def not_http(timer: func.TimerRequest) -> None:
    pass


@pytest.fixture(scope="module")
def host() -> FunctionsHost:
    return FunctionsHost(app, function_keys={"default": FUNCTION_KEY}, master_key=MASTER_KEY)


def body(response: HostResponse) -> dict[str, Any]:
    assert response.status == 200, response
    data: dict[str, Any] = response.json()
    return data


# --- indexing ---------------------------------------------------------------------------------


def test_get_functions_is_called_exactly_once(monkeypatch: pytest.MonkeyPatch) -> None:
    fresh = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @fresh.route(route="one")
    def one(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("1")

    calls = []
    original = fresh.get_functions

    def counting() -> Any:
        calls.append(1)
        return original()

    monkeypatch.setattr(fresh, "get_functions", counting)
    first = FunctionsHost(fresh)
    # A second host over the same app (other options) reuses the index: the SDK itself
    # rejects a second get_functions() call, as the worker only ever makes one.
    second = FunctionsHost(fresh, route_prefix="")
    for _ in range(3):
        assert first.invoke("GET", "/api/one").text == "1"
        assert second.invoke("GET", "/one").text == "1"
    assert calls == [1]


def test_functions_lists_http_functions_only(host: FunctionsHost) -> None:
    by_name = {f.name: f for f in host.functions}
    assert "not_http" not in by_name
    assert by_name["get_item"].route == "items/{id:guid}"
    assert by_name["get_item"].methods == ("GET",)
    assert by_name["echo"].methods is None
    assert by_name["secure"].auth_level == "function"
    assert by_name["admin_op"].auth_level == "admin"
    assert by_name["ping"].route == "ping"
    assert by_name["renamed"].route == "renamed"


def test_app_default_auth_level_is_function_when_not_overridden() -> None:
    strict = func.FunctionApp()  # the SDK's default http_auth_level is FUNCTION

    @strict.route(route="x")
    def x(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("x")

    local = FunctionsHost(strict, function_keys={"default": "k"})
    assert local.functions[0].auth_level == "function"
    assert local.invoke("GET", "/api/x").status == 401
    assert local.invoke("GET", "/api/x?code=k").status == 200


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("a/{x:nonsense}", "unsupported route constraint"),
        ("a/{*rest}/b", "catch-all"),
        ("a/{x?}b", "optional"),
        ("a/{x}/{x}", "repeats"),
        ("a/{x", "cannot parse"),
        ("a//b", "cannot parse"),
    ],
)
def test_bad_templates_fail_at_startup(template: str, message: str) -> None:
    bad = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @bad.route(route=template)
    def f(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse()

    with pytest.raises(ValueError, match=message):
        FunctionsHost(bad)


def test_unexpected_parameters_fail_at_startup() -> None:
    bad = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @bad.route(route="x")
    def f(req: func.HttpRequest, other: str) -> func.HttpResponse:
        return func.HttpResponse()

    with pytest.raises(ValueError, match="do not match trigger"):
        FunctionsHost(bad)


def test_route_prefix_from_host_json(tmp_path: Path) -> None:
    assert route_prefix_from_host_json(tmp_path / "missing.json") == "api"
    host_json = tmp_path / "host.json"
    host_json.write_text(json.dumps({"version": "2.0"}))
    assert route_prefix_from_host_json(host_json) == "api"
    host_json.write_text(json.dumps({"extensions": {"http": {"routePrefix": "/v1/"}}}))
    assert route_prefix_from_host_json(host_json) == "v1"
    host_json.write_text(json.dumps({"extensions": {"http": {"routePrefix": ""}}}))
    assert route_prefix_from_host_json(host_json) == ""


@pytest.mark.parametrize(("prefix", "url"), [("", "/ping"), ("v1", "/v1/ping"), ("api/v2", "/api/v2/ping")])
def test_route_prefix(prefix: str, url: str) -> None:
    local = FunctionsHost(app, route_prefix=prefix)
    assert local.invoke("GET", url).text == "pong"
    assert local.invoke("GET", "/api/ping").status == (200 if prefix == "api" else 404)


# --- routing --------------------------------------------------------------------------------


def test_guid_route_and_params(host: FunctionsHost) -> None:
    data = body(host.invoke("GET", f"/api/items/{GUID}?x=1&y=two"))
    assert data["fn"] == "get_item"
    assert data["route_params"] == {"id": GUID}
    assert data["params"] == {"x": "1", "y": "two"}
    assert data["url"] == f"http://localhost:7071/api/items/{GUID}?x=1&y=two"
    assert data["method"] == "GET"
    for other in (GUID.upper(), "{" + GUID + "}", GUID.replace("-", "")):
        assert host.invoke("GET", f"/api/items/{other}").status == 200
    assert host.invoke("GET", "/api/items/not-a-guid").status == 404


def test_literals_are_case_insensitive_and_trailing_slash_tolerated(host: FunctionsHost) -> None:
    assert body(host.invoke("GET", f"/API/Items/{GUID}/"))["fn"] == "get_item"
    assert host.invoke("GET", "/api/PING").text == "pong"
    assert host.invoke("GET", "/api//ping").status == 404


def test_literal_route_beats_parameter_route(host: FunctionsHost) -> None:
    assert body(host.invoke("GET", "/api/users/me"))["fn"] == "users_me"
    assert body(host.invoke("GET", "/api/users/ME"))["fn"] == "users_me"
    data = body(host.invoke("GET", "/api/users/alice"))
    assert (data["fn"], data["route_params"]) == ("users_by_name", {"name": "alice"})


def test_method_not_listed_is_404_not_405(host: FunctionsHost) -> None:
    assert host.invoke("POST", f"/api/items/{GUID}").status == 404
    assert host.invoke("HEAD", f"/api/items/{GUID}").status == 404
    # DELETE is not allowed on users/me, but the router moves on to users/{name}.
    assert body(host.invoke("DELETE", "/api/users/me"))["fn"] == "users_by_name"


def test_no_methods_restriction_accepts_any_method(host: FunctionsHost) -> None:
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "head"):
        assert body(host.invoke(method, "/api/echo"))["method"] == method.upper()


def test_unknown_route_is_404_with_empty_body(host: FunctionsHost) -> None:
    response = host.invoke("GET", "/api/nope")
    assert (response.status, response.body, response.headers) == (404, b"", [])
    assert host.invoke("GET", "/").status == 404
    assert host.invoke("GET", "/ping").status == 404


def test_catch_all(host: FunctionsHost) -> None:
    assert body(host.invoke("GET", "/api/files/a/b/c.txt"))["route_params"] == {"rest": "a/b/c.txt"}
    assert body(host.invoke("GET", "/api/files"))["route_params"] == {}
    assert body(host.invoke("GET", "/api/files/"))["route_params"] == {}


def test_path_is_decoded_except_slashes(host: FunctionsHost) -> None:
    data = body(host.invoke("GET", "/api/files/a%20b/c%2Fd"))
    assert data["route_params"] == {"rest": "a b/c%2Fd"}
    assert body(host.invoke("GET", "/api/users/j%C3%BCrgen"))["route_params"] == {"name": "jürgen"}
    assert host.invoke("GET", "/api/%70ing").text == "pong"  # literals compare after decoding
    assert host.invoke("GET", "/api/users/a%2Fb").json()["route_params"] == {"name": "a%2Fb"}


def test_optional_parameter_with_constraint(host: FunctionsHost) -> None:
    assert body(host.invoke("GET", "/api/echo"))["route_params"] == {}
    assert body(host.invoke("GET", "/api/echo/42"))["route_params"] == {"n": "42"}
    assert body(host.invoke("GET", "/api/echo/-7"))["route_params"] == {"n": "-7"}
    assert host.invoke("GET", "/api/echo/abc").status == 404
    assert host.invoke("GET", "/api/echo/99999999999").status == 404  # beyond int32


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("c/5/abc/3/x12/ab/true", 200),
        ("c/5/abc/3/x12/ab/FALSE", 200),
        ("c/x/abc/3/x12/ab/true", 404),  # int
        ("c/5/ab1/3/x12/ab/true", 404),  # alpha
        ("c/5/abc/6/x12/ab/true", 404),  # range
        ("c/5/abc/3/y12/ab/true", 404),  # regex
        ("c/5/abc/3/x12/abc/true", 404),  # length
        ("c/5/abc/3/x12/ab/yes", 404),  # bool
    ],
)
def test_inline_constraints(host: FunctionsHost, path: str, status: int) -> None:
    assert host.invoke("GET", f"/api/{path}").status == status


def test_complex_segment_and_default_value(host: FunctionsHost) -> None:
    data = body(host.invoke("GET", "/api/dl/report.v2.pdf"))
    assert data["route_params"] == {"name": "report.v2", "ext": "pdf", "page": "1"}
    assert body(host.invoke("GET", "/api/dl/a.b/3"))["route_params"] == {"name": "a", "ext": "b", "page": "3"}
    assert host.invoke("GET", "/api/dl/noext").status == 404


# --- auth -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "headers", "status"),
    [
        ("/api/secure", {}, 401),
        ("/api/secure?code=wrong", {}, 401),
        ("/api/secure", {"x-functions-key": "wrong"}, 401),
        ("/api/secure?code=", {}, 401),
        (f"/api/secure?code={FUNCTION_KEY}", {}, 200),
        (f"/api/secure?CODE={FUNCTION_KEY}", {}, 200),
        ("/api/secure", {"x-functions-key": FUNCTION_KEY}, 200),
        ("/api/secure", {"X-Functions-Key": MASTER_KEY}, 200),
        (f"/api/secure?code={MASTER_KEY}", {}, 200),
        # The header wins over the query string, even when the header is wrong.
        (f"/api/secure?code={FUNCTION_KEY}", {"x-functions-key": "wrong"}, 401),
        ("/api/admin/op", {"x-functions-key": FUNCTION_KEY}, 401),
        ("/api/admin/op", {}, 401),
        ("/api/admin/op", {"x-functions-key": MASTER_KEY}, 200),
        (f"/api/admin/op?code={MASTER_KEY}", {}, 200),
    ],
)
def test_keys(host: FunctionsHost, url: str, headers: dict[str, str], status: int) -> None:
    response = host.invoke("GET", url, headers=headers)
    assert response.status == status
    if status == 401:
        assert response.body == b""


def test_key_check_happens_after_routing(host: FunctionsHost) -> None:
    assert host.invoke("PUT", "/api/secure").status == 404  # method fails the route first


def test_no_keys_configured_locks_function_level() -> None:
    local = FunctionsHost(app)
    assert local.invoke("GET", "/api/secure?code=anything").status == 401
    assert local.invoke("GET", "/api/admin/op", headers={"x-functions-key": ""}).status == 401


def test_enable_auth_false_behaves_like_func_start() -> None:
    local = FunctionsHost(app, enable_auth=False)
    assert local.invoke("GET", "/api/secure").status == 200
    assert local.invoke("GET", "/api/admin/op").status == 200


# --- request conversion ---------------------------------------------------------------------


def test_body_headers_and_json(host: FunctionsHost) -> None:
    data = body(host.invoke("POST", "/api/echo", json={"a": 1}, headers={"X-Custom": "v"}))
    assert json.loads(data["body"]) == {"a": 1}
    assert data["headers"]["content-type"] == "application/json"
    assert data["headers"]["x-custom"] == "v"
    raw = body(host.invoke("PUT", "/api/echo", body=b"raw bytes", headers={"Content-Type": "text/plain"}))
    assert (raw["body"], raw["headers"]["content-type"]) == ("raw bytes", "text/plain")


def test_query_parameters_like_the_host(host: FunctionsHost) -> None:
    data = body(host.invoke("GET", "/api/echo?a=1&a=2&B=x&b=y&empty=&sp=a%20b&plus=a+b"))
    # Repeats join with ","; names are case-insensitive (first spelling kept); empty values dropped.
    assert data["params"] == {"a": "1,2", "B": "x,y", "sp": "a b", "plus": "a b"}


def test_base_url_option_and_override(host: FunctionsHost) -> None:
    local = FunctionsHost(app, base_url="https://broker.example/")
    assert body(local.invoke("GET", "/api/echo?q=1"))["url"] == "https://broker.example/api/echo?q=1"
    response = host.handle("GET", "/api/echo", {}, b"", base_url="http://127.0.0.1:9999")
    assert response.json()["url"] == "http://127.0.0.1:9999/api/echo"


def test_context_argument_and_function_name(host: FunctionsHost) -> None:
    assert host.invoke("GET", "/api/renamed").text == "renamed:36"


def test_async_function(host: FunctionsHost) -> None:
    assert host.invoke("GET", "/api/async").text == "from a coroutine"


# --- response conversion --------------------------------------------------------------------


def test_response_headers_status_and_content_type(host: FunctionsHost) -> None:
    response = host.invoke("GET", "/api/cookies")
    assert response.status == 201
    assert response.header("content-type") == "text/html; charset=utf-8"
    assert response.header_values("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]
    # The worker ships headers as a dict: a repeated ordinary header keeps its last value.
    assert response.header_values("x-dup") == ["second"]
    assert response.text == "<p>hi</p>"


def test_explicit_content_type_header_wins_and_non_text_has_no_charset(host: FunctionsHost) -> None:
    response = host.invoke("GET", "/api/typed")
    assert (response.header("Content-Type"), response.body) == ("image/png", b"\x00\x01")
    assert host.invoke("GET", "/api/items/" + GUID).header("content-type") == "application/json"
    assert host.invoke("GET", "/api/ping").header("CONTENT-TYPE") == "text/plain; charset=utf-8"


def test_plain_str_return_is_200(host: FunctionsHost) -> None:
    response = host.invoke("GET", "/api/plain")
    assert (response.status, response.text) == (200, "just a string")
    assert response.header("content-type") == "text/plain; charset=utf-8"


def test_exception_is_hidden_behind_500_and_logged(host: FunctionsHost, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="devtools.functions_host"):
        response = host.invoke("GET", "/api/boom")
    assert (response.status, response.body) == (500, b"")
    assert b"secret" not in response.body
    assert "boom" in caplog.text and "secret detail" in caplog.text


def test_non_response_return_is_500(host: FunctionsHost, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="devtools.functions_host"):
        response = host.invoke("GET", "/api/nothing")
    assert (response.status, response.body) == (500, b"")
    assert "NoneType" in caplog.text


def test_host_response_helpers() -> None:
    response = HostResponse(200, [("X-A", "1"), ("x-a", "2")], b'{"k": [1]}')
    assert response.header("X-a") == "1"
    assert response.header("missing") is None
    assert response.header_values("X-A") == ["1", "2"]
    assert response.json() == {"k": [1]}


# --- cost -----------------------------------------------------------------------------------


def test_no_regex_compilation_per_request(host: FunctionsHost, monkeypatch: pytest.MonkeyPatch) -> None:
    host.invoke("GET", f"/api/items/{GUID}?a=1")  # warm any lazily built stdlib caches

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("regex compiled while serving a request")

    monkeypatch.setattr(re, "compile", refuse)
    monkeypatch.setattr(re, "_compile", refuse)
    assert host.invoke("GET", f"/api/items/{GUID}?a=1").status == 200
    assert host.invoke("GET", "/api/c/5/abc/3/x12/ab/true").status == 200
    assert host.invoke("GET", "/api/nope").status == 404


def test_in_process_request_is_cheap(host: FunctionsHost) -> None:
    url = f"/api/items/{GUID}?a=1&b=2"
    headers = {"Accept": "application/json", "User-Agent": "bench"}
    for _ in range(200):
        host.handle("GET", url, headers, b"")
    rounds = 2000
    started = time.perf_counter()
    for _ in range(rounds):
        host.handle("GET", url, headers, b"")
    per_request = (time.perf_counter() - started) / rounds
    assert per_request < 0.25e-3, f"{per_request * 1e6:.1f} us per request"
