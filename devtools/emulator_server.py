"""A small reusable base for HTTPS JSON protocol emulators.

Subclasses declare handlers with :func:`route`; the base class provides the threaded HTTPS server,
request recording and fault injection (latency, HTTP errors, connection resets, malformed JSON,
hangs), so that every emulator (Entra ID, Key Vault, Power BI, managed identity...) behaves alike.
The value types live in :mod:`devtools.emulator_http`, the knobs and recording in
:mod:`devtools.emulator_faults` and the socket layer in :mod:`devtools.emulator_transport`; this module
re-exports the public names.

Example::

    class EchoEmulator(EmulatorServer):
        @route("POST", r"/echo/(?P<name>[^/]+)")
        def _echo(self, request: Request) -> Response:
            return Response.json({"name": request.path_params["name"], "body": request.json()})
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import socket
import ssl
import threading
import traceback
from collections.abc import Callable
from types import TracebackType
from typing import Self, TypeVar, cast
from urllib.parse import parse_qsl, unquote, urlsplit

from devtools.emulator_faults import Fault, FaultInjection, RecordedRequest
from devtools.emulator_http import Headers, Request, Response
from devtools.emulator_transport import EmulatorHTTPServer, EmulatorRequestHandler, random_loopback
from devtools.tls import DevCertificateAuthority

__all__ = ["EmulatorServer", "Fault", "Headers", "RecordedRequest", "Request", "Response", "route"]

Handler = Callable[["Request"], "Response"]
_F = TypeVar("_F", bound=Callable[..., "Response"])


def route(method: str, pattern: str) -> Callable[[_F], _F]:
    """Mark an :class:`EmulatorServer` method as the handler of ``method`` + ``pattern``.

    ``pattern`` is a regex matched against the whole URL-decoded path; its named groups arrive in
    ``request.path_params``. Decorators can be stacked; a subclass overriding the method keeps its routes
    only if it decorates the override again.
    """

    def decorate(func: _F) -> _F:
        existing: list[tuple[str, str]] = getattr(func, "_emulator_routes", [])
        setattr(func, "_emulator_routes", [*existing, (method.upper(), pattern)])  # noqa: B010
        return func

    return decorate


class EmulatorServer(FaultInjection):
    """Threaded HTTPS server on a loopback address, with request recording and fault injection.

    ``host=None`` picks a random 127.a.b.c, so several emulators (and processes) can each own port 443.
    ``port=None`` tries 443 first, because some clients drop the port from URLs (MSAL's user-realm
    lookup), and falls back to an ephemeral port when 443 cannot be bound. Restarting after
    :meth:`stop` reuses the same address and port. ``tls=False`` serves plain HTTP instead (for endpoints
    that are plain HTTP in Azure too, like App Service's managed-identity endpoint); then ``port=None``
    means an ephemeral port and ``ca`` is not used.

    Knobs (thread-safe): :attr:`latency` is added before every response; :meth:`set_latency` with a
    ``path_prefix`` overrides it for matching paths (the longest matching prefix wins);
    :meth:`inject_fault` / :meth:`clear_faults`. Recording: :attr:`requests`, :meth:`count`,
    :meth:`reset_counters` (only the latest ``max_recorded_requests`` are kept). Set ``verbose = True`` for
    request logs and handler tracebacks on stderr.
    """

    verbose = False

    def __init__(self, *, ca: DevCertificateAuthority, host: str | None = None, port: int | None = None,
                 tls: bool = True) -> None:
        super().__init__()
        self.ca = ca
        self.tls = tls
        self.ssl_context: ssl.SSLContext | None = None  # issued by start(), once the address is known
        self._requested = (host, port)
        self._bound: tuple[str, int] | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: EmulatorHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        for name, specs in self._declared_routes().items():
            for method, pattern in specs:
                self._routes.append((method, re.compile(pattern), cast(Handler, getattr(self, name))))

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Self:
        """Bind and serve from a background daemon thread. Idempotent."""
        with self._lock:
            if self._httpd is None:
                self._stopping.clear()
                httpd = self._bind()
                self._bound = (httpd.server_name, httpd.server_port)
                self.ssl_context = self.ca.server_ssl_context(httpd.server_name) if self.tls else None
                self._httpd = httpd
                self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                                name=f"{type(self).__name__}@{self.base_url}", daemon=True)
                self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close open connections and wake handlers sleeping on latency or hang faults."""
        with self._lock:
            httpd, thread = self._httpd, self._thread
            self._httpd = self._thread = None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        with httpd.active_lock:
            connections = list(httpd.active)
        for conn in connections:
            with contextlib.suppress(OSError):  # plain socket shutdown: SSLSocket's would race the reader
                socket.socket.shutdown(conn, socket.SHUT_RDWR)
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def host(self) -> str:
        """The loopback address served on (known once started)."""
        return self._address()[0]

    @property
    def port(self) -> int:
        """The TCP port served on (known once started)."""
        return self._address()[1]

    @property
    def on_port_443(self) -> bool:
        """Whether the server got the standard HTTPS port."""
        return self.port == 443

    @property
    def base_url(self) -> str:
        """``https://host`` on port 443, else ``https://host:port`` (``http://host:port`` without TLS); no slash."""
        host, port = self._address()
        if not self.tls:
            return f"http://{host}" if port == 80 else f"http://{host}:{port}"
        return f"https://{host}" if port == 443 else f"https://{host}:{port}"

    def _address(self) -> tuple[str, int]:
        if self._bound is None:
            raise RuntimeError(f"{type(self).__name__} has not been started")
        return self._bound

    def _bind(self) -> EmulatorHTTPServer:
        host, port = self._requested
        if self._bound is not None or port is not None or not self.tls:  # plain HTTP has no reason to want 443
            return EmulatorHTTPServer(self._bound or (host or random_loopback(), port or 0), self)
        candidates = [host] if host else [random_loopback() for _ in range(8)]
        for candidate in candidates:
            try:
                return EmulatorHTTPServer((candidate, 443), self)
            except PermissionError:
                break  # unprivileged: no other address will do better
            except OSError:
                continue  # 443 taken on this address: try another one
        try:
            return EmulatorHTTPServer((candidates[0], 0), self)
        except OSError:
            if host:
                raise
            return EmulatorHTTPServer(("127.0.0.1", 0), self)  # platforms where only 127.0.0.1 exists

    # -------------------------------------------------------------------- routing
    @classmethod
    def _declared_routes(cls) -> dict[str, list[tuple[str, str]]]:
        found: dict[str, list[tuple[str, str]]] = {}
        for klass in reversed(cls.__mro__):
            for name, attr in vars(klass).items():
                found.pop(name, None)  # an override replaces (or drops) the base routes, in definition order
                specs = getattr(attr, "_emulator_routes", None)
                if specs is not None:
                    found[name] = specs
        return found

    def add_route(self, method: str, pattern: str, handler: Handler) -> None:
        """Register a handler at runtime; it takes precedence over the class's routes."""
        with self._lock:
            self._routes.insert(0, (method.upper(), re.compile(pattern), handler))

    def handle(self, request: Request) -> Response:
        """Dispatch ``request`` to its route (JSON 404/405 when there is none)."""
        with self._lock:
            routes = list(self._routes)
        path_known = False
        for method, pattern, handler in routes:
            match = pattern.fullmatch(request.path)
            if match is None:
                continue
            path_known = True
            if method == request.method or (method, request.method) == ("GET", "HEAD"):
                params = {k: v for k, v in match.groupdict().items() if v is not None}
                return handler(dataclasses.replace(request, path_params=params))
        if path_known:
            return Response.json({"error": "method_not_allowed", "path": request.path}, 405)
        return Response.json({"error": "not_found", "path": request.path}, 404)

    # -------------------------------------------------------------------- serving
    def _serve_one(self, handler: EmulatorRequestHandler) -> None:
        try:
            body = handler.read_body()
        except ValueError as exc:
            handler.close_connection = True
            handler.write_response(Response.json({"error": "bad_request", "error_description": str(exc)}, 400))
            return
        parts = urlsplit(handler.path)
        request = Request(handler.command, unquote(parts.path), dict(parse_qsl(parts.query, keep_blank_values=True)),
                          Headers(list(handler.headers.items())), body)
        fault, delay = self._take_fault(request.path)
        self._record(request, fault)
        if delay and self._stopping.wait(delay):
            handler.abort()  # stopped while sleeping: never answer
            return
        if fault is not None and fault.kind in ("hang", "reset"):
            if fault.kind == "hang":
                self._stopping.wait(fault.delay)
            handler.abort()
        elif fault is not None and fault.kind == "malformed_json":
            handler.write_response(Response(200, b'{"token_type": "Bearer", "access_token": "eyJ0eXAi'))
        elif fault is not None:
            payload = fault.json_body if fault.json_body is not None else {
                "error": "temporarily_unavailable", "error_description": f"Injected fault: HTTP {fault.status}"}
            handler.write_response(Response.json(payload, fault.status, fault.headers))
        else:
            try:
                response = self.handle(request)
            except Exception as exc:  # a handler bug must surface as a 500, not as a hung client
                if self.verbose:
                    traceback.print_exc()
                response = Response.json({"error": "emulator_error", "error_description": repr(exc)}, 500)
            handler.write_response(response)
