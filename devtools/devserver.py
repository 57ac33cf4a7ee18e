"""A local HTTP server in the spirit of ``func start``, on top of :class:`FunctionsHost`.

Threaded, HTTP/1.1 keep-alive, Core Tools-style CORS (``Host.CORS`` /
``Host.CORSCredentials`` in local.settings.json) and an optional static
directory for sample front ends.  Development only: it binds to loopback.

Run ``python -m devtools.devserver`` from the project root to serve ``function_app.py``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import mimetypes
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote

from devtools.functions_host import FunctionsHost, HostResponse, route_prefix_from_host_json
from devtools.local_settings import load_local_settings

__all__ = ["MAX_BODY_BYTES", "DevServer", "main"]

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 100 * 1024 * 1024  # the Functions host's default request size limit
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_HOST_HEADER = re.compile(r"^[A-Za-z0-9.\-]+(?::\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](?::\d{1,5})?$")
# Fixed types for the web assets a sample SPA needs; the system mime.types table varies
# between machines (e.g. .js as application/javascript or text/javascript).
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
    ".wasm": "application/wasm",
}


def _content_type(path: Path) -> str:
    known = _CONTENT_TYPES.get(path.suffix.lower())
    if known:
        return known
    guessed, _ = mimetypes.guess_type(path.name)
    if guessed is None:
        return "application/octet-stream"
    return f"{guessed}; charset=utf-8" if guessed.startswith("text/") else guessed


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # socketserver's default backlog of 5 refuses bursts of new connections

    def __init__(self, address: tuple[str, int], devserver: DevServer) -> None:
        self.devserver = devserver
        # Open connections, so stop() can end idle keep-alive threads instead of leaving
        # them serving requests after the listening socket has gone.
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients (browsers, load tools) reset keep-alive connections; that is not a server error.
        if isinstance(sys.exc_info()[1], ConnectionError):
            log.debug("connection from %s reset", client_address)
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response therefore carries Content-Length
    # Without TCP_NODELAY each keep-alive response waits ~40 ms for the client's delayed ACK.
    disable_nagle_algorithm = True
    server: _Server
    timeout = 120  # drop idle keep-alive connections eventually

    def log_message(self, format: str, *args: Any) -> None:
        # The stdlib writes to stderr; route its error chatter through logging instead.
        log.debug("%s %s", self.address_string(), format % args)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # one access line per request is written by _dispatch, with its duration

    def handle_expect_100(self) -> bool:
        # Refuse an oversized upload before the client starts sending it.
        if self._declared_length() > MAX_BODY_BYTES:
            self._reply(HostResponse(413), close=True)
            log.info("%s %s 413 (refused before 100-continue)", self.command, self.path.partition("?")[0])
            return False
        return super().handle_expect_100()

    def _declared_length(self) -> int:
        value = self.headers.get("Content-Length", "0").strip()
        return int(value) if value.isdigit() else -1 if value else 0

    def _dispatch(self) -> None:
        started = time.perf_counter()
        try:
            response, close = self._respond()
        except Exception:
            # A bug here must not kill the connection thread silently (socketserver would
            # print to stderr); answer like the host does and keep the details in the log.
            log.exception("dev server failed on %s %s", self.command, self.path.partition("?")[0])
            response, close = HostResponse(500), True
        # Logged just before the bytes go out, so a client holding the response can rely on
        # the line existing (tests do); the duration covers reading and handling the request.
        log.info(
            "%s %s %d %.1fms",
            self.command,
            self.path.partition("?")[0],  # query strings may carry secrets (?code=...)
            response.status,
            (time.perf_counter() - started) * 1000,
        )
        self._reply(response, close=close)

    def _respond(self) -> tuple[HostResponse, bool]:
        """Produce the response; the flag says the connection must close afterwards."""
        if "Transfer-Encoding" in self.headers:
            return HostResponse(411), True  # bodies are read by Content-Length only
        length = self._declared_length()
        if length < 0:
            return HostResponse(400), True
        if length > MAX_BODY_BYTES:
            return HostResponse(413), True  # unread body left on the socket: must close
        body = self.rfile.read(length) if length else b""
        dev = self.server.devserver
        origin = self.headers.get("Origin")
        headers = _joined_headers(self.headers.items())
        if (
            dev.cors_enabled
            and origin
            and self.command == "OPTIONS"
            and ("Access-Control-Request-Method" in self.headers)
        ):
            # Like ASP.NET's CORS middleware, a configured policy answers every preflight
            # itself (204) and never lets it reach a function; a refused origin simply gets
            # no CORS headers, which is what makes the browser block the real request.
            response = HostResponse(204)
            if dev.origin_allowed(origin):
                dev.add_preflight_headers(response, origin, self.headers)
            return response, False
        if dev.static_dir is not None and dev.is_static_path(self.path):
            response = dev.serve_static(self.command, self.path)
        else:
            host_header = self.headers.get("Host", "")
            base = f"http://{host_header}" if _HOST_HEADER.match(host_header) else dev.url
            response = dev.host.handle(self.command, self.path, headers, body, base_url=base)
        if dev.cors_enabled and origin and dev.origin_allowed(origin):
            dev.add_cors_headers(response, origin)
        return response, False

    def _reply(self, response: HostResponse, *, close: bool) -> None:
        self.send_response(response.status)
        names = {name.lower() for name, _ in response.headers}
        for name, value in response.headers:
            if name.lower() not in ("content-length", "connection", "transfer-encoding", "date", "server"):
                self.send_header(name, value)
        # RFC 9110 forbids a Content-Length on 204 and 304; everything else gets one, so
        # keep-alive clients always know where the body ends.
        if response.status not in (204, 304):
            self.send_header("Content-Length", str(len(response.body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        if "content-type" not in names and response.body:
            self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if self.command != "HEAD" and response.status not in (204, 304):
            self.wfile.write(response.body)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _dispatch


def _joined_headers(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Merge repeated request headers with "," as the host does (StringValues.ToString())."""
    merged: dict[str, str] = {}
    for name, value in items:
        key = name.lower()
        merged[key] = f"{merged[key]},{value}" if key in merged else value
    return merged


class DevServer:
    """Serve a :class:`FunctionsHost` over HTTP on loopback (``port=0``: pick a free one).

    ``cors_origins`` lists exact origins (``"*"`` only if given explicitly);
    ``cors_credentials`` adds ``Access-Control-Allow-Credentials: true``.
    ``static_dir`` serves files under ``static_prefix`` (e.g. a sample SPA); :attr:`generated` maps a path
    under it to a function whose answer is served instead of a file (e.g. a configuration made at start).
    """

    def __init__(
        self,
        host: FunctionsHost,
        *,
        port: int = 7071,
        bind: str = "127.0.0.1",
        cors_origins: Iterable[str] = (),
        cors_credentials: bool = False,
        cors_max_age: int = 600,
        static_dir: Path | str | None = None,
        static_prefix: str = "/samples/",
    ) -> None:
        if bind not in ("127.0.0.1", "localhost"):
            raise ValueError("the dev server only binds to loopback")
        self.host = host
        self.cors_origins = frozenset(o.rstrip("/") for o in cors_origins)
        self.cors_credentials = cors_credentials
        if "*" in self.cors_origins and cors_credentials:
            # Browsers reject "*" with credentials and ASP.NET refuses the combination.
            raise ValueError("CORS '*' cannot be combined with CORSCredentials")
        self.cors_max_age = cors_max_age
        self.static_dir = Path(static_dir).resolve() if static_dir is not None else None
        self.static_prefix = "/" + static_prefix.strip("/") + "/"
        self.generated: dict[str, Callable[[], HostResponse]] = {}
        self._server = _Server((bind, port), self)
        self._thread: threading.Thread | None = None
        self._serving = False  # serve_forever() running on a caller's thread

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:7071``."""
        address, port = self._server.server_address[:2]
        return f"http://{address!s}:{port}"

    @property
    def cors_enabled(self) -> bool:
        """Whether a CORS policy is configured (otherwise OPTIONS reaches the functions)."""
        return bool(self.cors_origins)

    def origin_allowed(self, origin: str) -> bool:
        """Exact-match origin check; ``*`` only when configured."""
        return "*" in self.cors_origins or origin in self.cors_origins

    def add_cors_headers(self, response: HostResponse, origin: str) -> None:
        """Decorate a response for an allowed origin (the caller checks :meth:`origin_allowed`)."""
        # Drop any CORS headers the function set itself, so clients never see two values.
        response.headers = [(k, v) for k, v in response.headers if not k.lower().startswith("access-control-allow-")]
        wildcard = "*" in self.cors_origins
        response.headers.append(("Access-Control-Allow-Origin", "*" if wildcard else origin))
        vary = [v for k, v in response.headers if k.lower() == "vary"]
        if not wildcard and not any("origin" in v.lower() for v in vary):
            response.headers.append(("Vary", "Origin"))
        if self.cors_credentials:
            response.headers.append(("Access-Control-Allow-Credentials", "true"))

    def add_preflight_headers(self, response: HostResponse, origin: str, request_headers: Any) -> None:
        """Fill a preflight answer: echo the requested method and headers, as Core Tools does."""
        self.add_cors_headers(response, origin)
        response.headers.append(("Access-Control-Allow-Methods", request_headers["Access-Control-Request-Method"]))
        wanted = request_headers.get("Access-Control-Request-Headers")
        if wanted:
            response.headers.append(("Access-Control-Allow-Headers", wanted))
        response.headers.append(("Access-Control-Max-Age", str(self.cors_max_age)))

    def is_static_path(self, url: str) -> bool:
        """Whether ``url`` falls under ``static_prefix``."""
        path = url.partition("?")[0]
        return path.startswith(self.static_prefix) or path == self.static_prefix.rstrip("/")

    def serve_static(self, method: str, url: str) -> HostResponse:
        """Serve a file below ``static_dir`` for ``url`` under ``static_prefix``."""
        assert self.static_dir is not None
        path = url.partition("?")[0].partition("#")[0]
        if path == self.static_prefix.rstrip("/"):
            return HostResponse(301, [("Location", self.static_prefix)])
        if method not in ("GET", "HEAD"):
            return HostResponse(405, [("Allow", "GET, HEAD")])
        if path in self.generated:
            return self.generated[path]()
        relative = unquote(path[len(self.static_prefix) :])
        if "\x00" in relative or "\\" in relative:
            return HostResponse(404)
        # Resolve (following symlinks) and insist the result is still inside the root:
        # that rejects "..", encoded "%2e%2e", absolute paths and escaping links alike.
        target = (self.static_dir / relative).resolve()
        if not target.is_relative_to(self.static_dir):
            return HostResponse(404)
        if target.is_dir():
            if not path.endswith("/"):
                return HostResponse(301, [("Location", path + "/")])
            target = target / "index.html"
        if not target.is_file():
            return HostResponse(404)
        headers = [
            ("Content-Type", _content_type(target)),
            ("X-Content-Type-Options", "nosniff"),
            ("Cache-Control", "no-cache"),
        ]
        return HostResponse(200, headers, target.read_bytes())

    def start(self) -> DevServer:
        """Serve on a background daemon thread; returns self."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="devserver", daemon=True
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve on the calling thread until :meth:`stop` (or Ctrl+C in the caller).

        One serve loop per server: a second loop on the same socket would block in ``accept()`` and make
        :meth:`stop` wait forever, so this refuses to run after :meth:`start`.
        """
        if self._thread is not None or self._serving:
            raise RuntimeError("the dev server is already serving (start() or serve_forever()): one loop only")
        self._serving = True
        try:
            self._server.serve_forever(poll_interval=0.2)
        finally:
            self._serving = False

    def stop(self) -> None:
        """Stop accepting, close open connections and release the port."""
        if self._thread is not None or self._serving:
            self._server.shutdown()  # blocks until the serve_forever loop has left
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._server.connections_lock:
            for connection in list(self._server.connections):
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    log.debug("connection already closed")
        self._server.server_close()

    def __enter__(self) -> DevServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """``func start`` stand-in: load settings, import ``function_app``, print routes, serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="function app directory")
    parser.add_argument("--port", type=int, help="default: Host.LocalHttpPort or 7071")
    parser.add_argument("--enable-auth", action="store_true", help="check function keys (func --enableAuth)")
    parser.add_argument("--static-dir", type=Path, help="serve this directory under /samples/")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = load_local_settings(args.root / "local.settings.json")
    for name in settings.apply_to_environ():
        log.warning("Skipping '%s' from local settings as it's already defined in the environment", name)
    sys.path.insert(0, str(args.root))  # settings first: the app may read them at import time
    app = importlib.import_module("function_app").app
    port = args.port if args.port is not None else settings.port or 7071
    host = FunctionsHost(
        app,
        route_prefix=route_prefix_from_host_json(args.root / "host.json"),
        base_url=f"http://localhost:{port}",
        enable_auth=args.enable_auth,
    )
    server = DevServer(
        host,
        port=port,
        cors_origins=settings.cors_origins,
        cors_credentials=settings.cors_credentials,
        static_dir=args.static_dir,
    )
    print("Functions:")
    for info in host.functions:
        methods = ",".join(info.methods) if info.methods else "all"
        prefix = f"/{host.route_prefix}" if host.route_prefix else ""
        print(f"  {info.name}: [{methods}] {server.url}{prefix}/{info.route} ({info.auth_level})")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
