"""The threaded HTTPS (or plain HTTP) transport under :class:`~devtools.emulator_server.EmulatorServer`.

:class:`EmulatorHTTPServer` accepts connections and runs each TLS handshake in the connection's own
thread; :class:`EmulatorRequestHandler` reads request bodies, writes responses and can reset a
connection. Every request is handed back to the emulator, which routes it and applies faults.
"""

from __future__ import annotations

import contextlib
import random
import socket
import socketserver
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, cast

from devtools.emulator_http import Headers, Response

if TYPE_CHECKING:
    from devtools.emulator_server import EmulatorServer

__all__ = ["EmulatorHTTPServer", "EmulatorRequestHandler", "random_loopback"]

_MAX_BODY = 16 * 1024 * 1024


class EmulatorHTTPServer(ThreadingHTTPServer):
    """HTTPS (or, when the emulator has ``tls=False``, HTTP) server bound to one address, serving ``emulator``."""

    daemon_threads = True
    request_queue_size = 1024  # a burst of 200 concurrent connects must not overflow the backlog

    def __init__(self, address: tuple[str, int], emulator: EmulatorServer) -> None:
        self.emulator = emulator
        self.active: set[socket.socket] = set()
        self.active_lock = threading.Lock()
        super().__init__(address, EmulatorRequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would reverse-resolve the address, which can stall; skip it.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs here, in the connection's own thread, so the accept loop never blocks.
        raw = cast(socket.socket, request)
        raw.settimeout(10)
        context = self.emulator.ssl_context
        try:
            if not self.emulator.tls:
                conn = raw
            elif context is None:
                raise OSError("no TLS context")
            else:
                conn = context.wrap_socket(raw, server_side=True)
        except OSError:
            raw.close()
            return
        with self.active_lock:
            self.active.add(conn)
        try:
            EmulatorRequestHandler(conn, client_address, self)
        except OSError:
            pass  # the client went away
        finally:
            with self.active_lock:
                self.active.discard(conn)
            conn.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        if self.emulator.verbose:
            super().handle_error(request, client_address)


class EmulatorRequestHandler(BaseHTTPRequestHandler):
    """One keep-alive connection; each request is served by the emulator's ``_serve_one``."""

    protocol_version = "HTTP/1.1"  # keep-alive, as Azure front ends do
    disable_nagle_algorithm = True  # headers and body are separate writes; avoid delayed-ACK stalls
    timeout = 60  # idle keep-alive connections eventually give their thread back
    server: EmulatorHTTPServer

    def _serve(self) -> None:
        self.server.emulator._serve_one(self)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            raise ValueError("chunked request bodies are not supported; send Content-Length")
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            raise ValueError("request body too large")
        return self.rfile.read(length) if length else b""

    def write_response(self, response: Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers.items():
            if name.lower() not in ("content-length", "content-type"):
                self.send_header(name, value)
        content_type = Headers(response.headers).get("content-type", response.content_type)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def abort(self) -> None:
        # SO_LINGER 0 turns close() into a TCP RST: a genuine "connection reset by peer".
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.emulator.verbose:
            super().log_message(format, *args)


def random_loopback() -> str:
    """A random 127.a.b.c address; all of 127.0.0.0/8 is loopback on Linux (.0 and .255 avoided)."""
    return "127.{}.{}.{}".format(*(random.randint(1, 254) for _ in range(3)))
