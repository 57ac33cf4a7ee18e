"""Tests for devtools.devserver (over real sockets) and devtools.local_settings."""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
import requests

from devtools import devserver as devserver_module
from devtools.devserver import MAX_BODY_BYTES, DevServer
from devtools.functions_host import FunctionsHost
from devtools.local_settings import LocalSettings, load_local_settings

ORIGIN = "http://localhost:3000"
calls: list[str] = []

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="echo")  # every method
def echo(req: func.HttpRequest) -> func.HttpResponse:
    calls.append(req.method)
    payload = {
        "method": req.method,
        "url": req.url,
        "params": dict(req.params),
        "headers": dict(req.headers),
        "body": req.get_body().decode(),
    }
    return func.HttpResponse(json.dumps(payload), mimetype="application/json")


@app.route(route="items/{id:guid}", methods=["GET"])
def get_item(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(req.route_params["id"])


@app.route(route="secure", auth_level=func.AuthLevel.FUNCTION)
def secure(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("ok")


@app.route(route="boom")
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("hidden")


@app.route(route="empty")
def empty(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(status_code=204)


@app.route(route="own-cors")
def own_cors(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("x", headers={"Access-Control-Allow-Origin": "https://evil.example"})


HOST = FunctionsHost(app, function_keys={"default": "k1"})


@pytest.fixture(scope="module")
def static_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("static")
    (base / "secret.txt").write_text("outside the root")
    root = base / "site"
    (root / "js").mkdir(parents=True)
    (root / "index.html").write_text("<h1>sample</h1>")
    (root / "js" / "app.js").write_text("console.log(1)")
    (root / "style.css").write_text("body{}")
    (root / "data.json").write_text("{}")
    (root / "escape").symlink_to(base / "secret.txt")
    return root


@pytest.fixture(scope="module")
def server(static_root: Path) -> Iterator[DevServer]:
    with DevServer(HOST, port=0, cors_origins=[ORIGIN, "https://app.example/"], static_dir=static_root) as srv:
        yield srv


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def raw_request(server: DevServer, data: bytes) -> bytes:
    """Send raw bytes and read until the server closes or a short timeout."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=2) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
    return b"".join(chunks)


def raw_get(server: DevServer, path: str) -> http.client.HTTPResponse:
    """GET with the path sent verbatim (requests would normalise ".." away)."""
    conn = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=5)
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


# --- basic serving ----------------------------------------------------------------------------


def test_round_trip_and_request_conversion(server: DevServer, session: requests.Session) -> None:
    r = session.post(f"{server.url}/api/echo?a=1&a=2", data=b"hello", headers={"X-Thing": "v"})
    assert r.status_code == 200
    data = r.json()
    assert (data["method"], data["body"], data["params"]) == ("POST", "hello", {"a": "1,2"})
    assert data["headers"]["x-thing"] == "v"
    assert data["url"] == f"{server.url}/api/echo?a=1&a=2"  # from the Host header
    assert r.headers["Content-Length"] == str(len(r.content))
    assert r.headers["Content-Type"] == "application/json"


def test_statuses_and_content_length_always_set(server: DevServer, session: requests.Session) -> None:
    for path, status in [("/api/nope", 404), ("/api/secure", 401), ("/api/boom", 500), ("/api/secure?code=k1", 200)]:
        r = session.get(server.url + path)
        assert r.status_code == status, path
        assert r.headers["Content-Length"] == str(len(r.content))
    assert session.post(f"{server.url}/api/items/0b4e28ba-2fa1-11d2-883f-0016d3cca427").status_code == 404
    r = session.get(f"{server.url}/api/empty")
    assert (r.status_code, r.content) == (204, b"")


def test_keep_alive_reuses_one_connection(server: DevServer) -> None:
    conn = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=5)
    conn.request("GET", "/api/echo")
    first = conn.getresponse()
    first.read()
    sock = conn.sock
    conn.request("POST", "/api/echo", body=b"second")
    second = conn.getresponse()
    assert json.loads(second.read())["body"] == "second"
    assert conn.sock is sock and sock is not None
    assert first.version == 11 and not first.will_close
    conn.close()


def test_head_has_length_but_no_body(server: DevServer, static_root: Path) -> None:
    r = requests.head(f"{server.url}/samples/index.html", timeout=5)
    assert r.status_code == 200
    assert r.headers["Content-Length"] == str(len((static_root / "index.html").read_bytes()))
    assert r.content == b""


def test_concurrent_requests(server: DevServer) -> None:
    results: list[int] = []

    def hit() -> None:
        with requests.Session() as s:
            results.extend(s.get(f"{server.url}/api/echo", timeout=5).status_code for _ in range(5))

    threads = [threading.Thread(target=hit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 40


# --- body limits ------------------------------------------------------------------------------


def test_oversized_body_is_refused_before_reading(server: DevServer) -> None:
    head = f"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: {MAX_BODY_BYTES + 1}\r\n\r\n"
    reply = raw_request(server, head.encode())
    assert reply.startswith(b"HTTP/1.1 413")
    assert b"Connection: close" in reply


def test_oversized_body_refused_instead_of_100_continue(server: DevServer) -> None:
    head = f"POST /api/echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {MAX_BODY_BYTES + 1}\r\n\r\n"
    reply = raw_request(server, head.encode())
    assert reply.startswith(b"HTTP/1.1 413")
    assert b"100 Continue" not in reply


def test_chunked_and_bad_lengths(server: DevServer) -> None:
    chunked = raw_request(server, b"POST /api/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert chunked.startswith(b"HTTP/1.1 411")
    bad = raw_request(server, b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
    assert bad.startswith(b"HTTP/1.1 400")


# --- CORS -------------------------------------------------------------------------------------


def preflight(server: DevServer, origin: str, **headers: str) -> requests.Response:
    base = {"Origin": origin, "Access-Control-Request-Method": "POST", **headers}
    return requests.options(f"{server.url}/api/echo", headers=base, timeout=5)


def test_preflight_from_allowed_origin(server: DevServer) -> None:
    calls.clear()
    r = preflight(server, ORIGIN, **{"Access-Control-Request-Headers": "content-type,x-functions-key"})
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert r.headers["Access-Control-Allow-Methods"] == "POST"
    assert r.headers["Access-Control-Allow-Headers"] == "content-type,x-functions-key"
    assert r.headers["Access-Control-Max-Age"] == "600"
    assert r.headers["Vary"] == "Origin"
    assert "Access-Control-Allow-Credentials" not in r.headers
    assert calls == []  # answered by the CORS layer, not the function
    # Configured with a trailing slash, still matched exactly.
    assert preflight(server, "https://app.example").headers["Access-Control-Allow-Origin"] == "https://app.example"


def test_preflight_from_disallowed_origin_gets_nothing(server: DevServer) -> None:
    calls.clear()
    for origin in ("https://evil.example", "http://localhost:3001", "HTTP://LOCALHOST:3000", "null"):
        r = preflight(server, origin)
        assert r.status_code == 204
        assert not [h for h in r.headers if h.lower().startswith("access-control-")]
    assert calls == []


def test_plain_options_without_preflight_headers_reaches_function(server: DevServer) -> None:
    calls.clear()
    assert requests.options(f"{server.url}/api/echo", headers={"Origin": ORIGIN}, timeout=5).status_code == 200
    assert calls == ["OPTIONS"]


def test_cors_headers_on_normal_responses(server: DevServer) -> None:
    r = requests.get(f"{server.url}/api/echo", headers={"Origin": ORIGIN}, timeout=5)
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert r.headers["Vary"] == "Origin"
    r = requests.get(f"{server.url}/api/nope", headers={"Origin": ORIGIN}, timeout=5)
    assert (r.status_code, r.headers["Access-Control-Allow-Origin"]) == (404, ORIGIN)
    r = requests.get(f"{server.url}/api/echo", headers={"Origin": "https://evil.example"}, timeout=5)
    assert "Access-Control-Allow-Origin" not in r.headers
    assert "Access-Control-Allow-Origin" not in requests.get(f"{server.url}/api/echo", timeout=5).headers
    r = requests.get(f"{server.url}/api/own-cors", headers={"Origin": ORIGIN}, timeout=5)
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN  # one value, ours


def test_cors_credentials_and_wildcard() -> None:
    with DevServer(HOST, port=0, cors_origins=[ORIGIN], cors_credentials=True, cors_max_age=5) as srv:
        r = preflight(srv, ORIGIN)
        assert r.headers["Access-Control-Allow-Credentials"] == "true"
        assert r.headers["Access-Control-Max-Age"] == "5"
        r = requests.get(f"{srv.url}/api/echo", headers={"Origin": ORIGIN}, timeout=5)
        assert r.headers["Access-Control-Allow-Credentials"] == "true"
    with DevServer(HOST, port=0, cors_origins=["*"]) as srv:
        assert preflight(srv, "https://any.example").headers["Access-Control-Allow-Origin"] == "*"
        r = requests.get(f"{srv.url}/api/echo", headers={"Origin": "https://any.example"}, timeout=5)
        assert r.headers["Access-Control-Allow-Origin"] == "*"
    with pytest.raises(ValueError, match="CORSCredentials"):
        DevServer(HOST, port=0, cors_origins=["*"], cors_credentials=True)


def test_without_cors_config_preflight_goes_to_the_host() -> None:
    calls.clear()
    with DevServer(HOST, port=0) as srv:
        r = preflight(srv, ORIGIN)
        assert r.status_code == 200 and "Access-Control-Allow-Origin" not in r.headers
    assert calls == ["OPTIONS"]


# --- logging ----------------------------------------------------------------------------------


def test_access_log_line_without_query_string(server: DevServer, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="devtools.devserver"):
        requests.get(f"{server.url}/api/secure?code=k1", timeout=5)
        requests.get(f"{server.url}/api/nope?code=k1", timeout=5)
    lines = [r.getMessage() for r in caplog.records if r.name == "devtools.devserver"]
    assert any(line.startswith("GET /api/secure 200 ") and line.endswith("ms") for line in lines)
    assert any(line.startswith("GET /api/nope 404 ") for line in lines)
    assert not any("k1" in line or "code=" in line for line in lines)


# --- static files -----------------------------------------------------------------------------


def test_static_files(server: DevServer) -> None:
    r = requests.get(f"{server.url}/samples/", timeout=5)
    assert (r.status_code, r.text) == (200, "<h1>sample</h1>")
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    expected = {
        "js/app.js": "text/javascript; charset=utf-8",
        "style.css": "text/css; charset=utf-8",
        "data.json": "application/json",
    }
    for name, content_type in expected.items():
        assert requests.get(f"{server.url}/samples/{name}", timeout=5).headers["Content-Type"] == content_type
    r = requests.get(f"{server.url}/samples", allow_redirects=False, timeout=5)
    assert (r.status_code, r.headers["Location"]) == (301, "/samples/")
    r = requests.get(f"{server.url}/samples/js", allow_redirects=False, timeout=5)
    assert (r.status_code, r.headers["Location"]) == (301, "/samples/js/")
    assert requests.get(f"{server.url}/samples/missing.html", timeout=5).status_code == 404
    r = requests.post(f"{server.url}/samples/index.html", timeout=5)
    assert (r.status_code, r.headers["Allow"]) == (405, "GET, HEAD")
    assert requests.get(f"{server.url}/samplesX", timeout=5).status_code == 404  # not under the prefix


@pytest.mark.parametrize(
    "path",
    [
        "/samples/../secret.txt",
        "/samples/%2e%2e/secret.txt",
        "/samples/..%2fsecret.txt",
        "/samples/js/../../secret.txt",
        "/samples/%2Fetc%2Fpasswd",
        "/samples//etc/passwd",
        "/samples/escape",  # a symlink pointing outside the root
        "/samples/..%5csecret.txt",
        "/samples/index.html%00.js",
    ],
)
def test_static_path_traversal_is_refused(server: DevServer, path: str) -> None:
    assert raw_get(server, path).status == 404


# --- lifecycle --------------------------------------------------------------------------------


def test_start_stop_releases_port_and_closes_idle_connections() -> None:
    srv = DevServer(HOST, port=0).start()
    url = srv.url
    assert url.startswith("http://127.0.0.1:")
    conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=5)
    conn.request("GET", "/api/echo")
    conn.getresponse().read()
    srv.stop()
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        conn.request("GET", "/api/echo")
        conn.getresponse().read()
    conn.close()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/api/echo", timeout=2)
    # The port is free again.
    port = int(url.rsplit(":", 1)[1])
    DevServer(HOST, port=port).stop()


def test_serve_forever_on_own_thread_stops_from_another() -> None:
    srv = DevServer(HOST, port=0, bind="localhost")
    worker = threading.Thread(target=srv.serve_forever)
    worker.start()
    try:
        assert requests.get(f"{srv.url}/api/echo", timeout=5).status_code == 200
    finally:
        srv.stop()
        worker.join(timeout=5)
    assert not worker.is_alive()


def test_emulator_bug_becomes_500_and_is_logged(
    server: DevServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("emulator bug")

    monkeypatch.setattr(HOST, "handle", broken)
    with caplog.at_level(logging.ERROR, logger="devtools.devserver"):
        r = requests.get(f"{server.url}/api/echo?code=k1", timeout=5)
    assert (r.status_code, r.content, r.headers["Connection"]) == (500, b"", "close")
    assert "emulator bug" in caplog.text and "k1" not in caplog.text


def test_only_loopback() -> None:
    with pytest.raises(ValueError, match="loopback"):
        DevServer(HOST, bind="0.0.0.0", port=0)  # noqa: S104 - the point of the test


def test_main_serves_function_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    (tmp_path / "function_app.py").write_text(
        "import os\nimport azure.functions as func\n"
        "app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)\n"
        "SEEN = os.environ.get('DEVSERVER_TEST_SETTING')\n"
        "@app.route(route='hello', methods=['GET'])\n"
        "def hello(req):\n    return func.HttpResponse('hi')\n"
    )
    (tmp_path / "local.settings.json").write_text(
        json.dumps({"IsEncrypted": False, "Values": {"DEVSERVER_TEST_SETTING": "on"}, "Host": {"LocalHttpPort": 0}})
    )
    (tmp_path / "host.json").write_text(json.dumps({"extensions": {"http": {"routePrefix": "v1"}}}))
    # Record the real module (or its absence) so that the fake one is gone after this test.
    monkeypatch.setitem(sys.modules, "function_app", sys.modules.get("function_app"))
    monkeypatch.delitem(sys.modules, "function_app")
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv("DEVSERVER_TEST_SETTING", raising=False)

    def fake_serve(self: DevServer) -> None:
        self.start()  # serve in the background so this thread can play the client
        assert requests.get(f"{self.url}/v1/hello", timeout=5).text == "hi"
        raise KeyboardInterrupt

    monkeypatch.setattr(DevServer, "serve_forever", fake_serve)
    monkeypatch.setattr(logging, "basicConfig", lambda **_: None)
    assert devserver_module.main(["--root", str(tmp_path), "--port", "0"]) == 0
    assert sys.modules["function_app"].SEEN == "on"
    out = capsys.readouterr().out
    assert "hello: [GET] http://127.0.0.1:" in out and "/v1/hello (anonymous)" in out


# --- local.settings.json ----------------------------------------------------------------------


def test_local_settings_missing_file(tmp_path: Path) -> None:
    assert load_local_settings(tmp_path / "local.settings.json") == LocalSettings()


def test_local_settings_full(tmp_path: Path) -> None:
    path = tmp_path / "local.settings.json"
    content = {
        "IsEncrypted": False,
        "Values": {"FUNCTIONS_WORKER_RUNTIME": "python", "A": ""},
        "ConnectionStrings": {},
        "Host": {
            "LocalHttpPort": 7072,
            "CORS": " http://localhost:3000, https://x.example/ ,",
            "CORSCredentials": True,
        },
    }
    path.write_text("\ufeff" + json.dumps(content), encoding="utf-8")  # tolerate a BOM
    settings = load_local_settings(path)
    assert settings.values == {"FUNCTIONS_WORKER_RUNTIME": "python", "A": ""}
    assert settings.cors_origins == ["http://localhost:3000", "https://x.example"]
    assert settings.cors_credentials is True
    assert settings.port == 7072


def test_local_settings_minimal(tmp_path: Path) -> None:
    path = tmp_path / "local.settings.json"
    path.write_text('{"Values": {}}')
    assert load_local_settings(path) == LocalSettings()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{\n  "Values": {\n    "A": "1",\n  }\n}', r"local\.settings\.json: invalid JSON at line 4, column 3"),
        ('{"IsEncrypted": true, "Values": {"A": "xyz"}}', "IsEncrypted is true"),
        ("[]", "top level must be a JSON object"),
        ('{"Values": {"A": 1}}', "Values.A must be a string"),
        ('{"Values": []}', "'Values' must be a JSON object"),
        ('{"Host": {"LocalHttpPort": "7071"}}', "LocalHttpPort"),
        ('{"Host": {"LocalHttpPort": 70000}}', "LocalHttpPort"),
        ('{"Host": {"CORS": ["http://a"]}}', "CORS"),
        ('{"Host": {"CORSCredentials": "true"}}', "CORSCredentials"),
    ],
)
def test_local_settings_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "local.settings.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_local_settings(path)


def test_apply_to_environ_keeps_existing_variables() -> None:
    env = {"EXISTING": "from-env"}
    settings = LocalSettings(values={"EXISTING": "from-file", "NEW": "v"})
    assert settings.apply_to_environ(env) == ["EXISTING"]
    assert env == {"EXISTING": "from-env", "NEW": "v"}
    assert "NEW" not in os.environ
