"""A throwaway Debian ``redis-server`` on loopback, for the tests, benchmarks and ``python -m devtools --redis``.

Not an emulator: the real server, started with no persistence (``--save '' --appendonly no``) on a free port,
optionally with TLS (a certificate from the dev CA), a password (``requirepass``) and a memory cap
(``maxmemory`` + ``noeviction``, so a full Redis answers ``OOM``). It can be frozen (``SIGSTOP``), thawed,
killed and restarted on the same port, which is how the tests make Redis fail mid-load.

Example::

    with RedisServer() as server:
        redis.Redis(port=server.port).ping()
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from types import TracebackType

from devtools.tls import DevCertificateAuthority

__all__ = ["RedisServer", "RedisServerMissing", "redis_server_path"]

INSTALL_HINT = "install Debian's redis-server (sudo apt-get install redis-server)"


class RedisServerMissing(RuntimeError):
    """``redis-server`` is not installed."""


def redis_server_path() -> str:
    """The ``redis-server`` binary ($BROKER_REDIS_SERVER, else PATH, else /usr/bin), or RedisServerMissing."""
    found = os.environ.get("BROKER_REDIS_SERVER") or shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None)
    if not found:
        raise RedisServerMissing(f"redis-server is not installed: {INSTALL_HINT}")
    return found


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process on ``host`` (loopback). ``tls_ca``: serve TLS only, with a dev-CA certificate."""

    def __init__(self, *, host: str = "127.0.0.1", port: int | None = None, password: str | None = None,
                 maxmemory: str | None = None, tls_ca: DevCertificateAuthority | None = None) -> None:
        self.host = host
        self.port = port or _free_port(host)
        self.password = password
        self.maxmemory = maxmemory
        self._ca = tls_ca
        self._dir = tempfile.mkdtemp(prefix="devtools-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def tls(self) -> bool:
        return self._ca is not None

    @property
    def address(self) -> str:
        """``host:port``, as CACHE_REDIS_HOST takes it."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _command(self) -> list[str]:
        command = [redis_server_path(), "--bind", self.host, "--save", "", "--appendonly", "no",
                   "--dir", self._dir, "--daemonize", "no", "--loglevel", "warning", "--protected-mode", "no"]
        if self._ca is not None:
            cert, key = self._ca.write_server_certificate(self._dir, self.host)
            command += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", cert, "--tls-key-file", key,
                        "--tls-ca-cert-file", self._ca.ca_bundle_path, "--tls-auth-clients", "no"]
        else:
            command += ["--port", str(self.port)]
        if self.password is not None:
            command += ["--requirepass", self.password]
        if self.maxmemory is not None:
            command += ["--maxmemory", self.maxmemory, "--maxmemory-policy", "noeviction"]
        return command

    def start(self) -> RedisServer:
        """Start the server and wait until it accepts connections (10 s at most)."""
        if self._process is not None and self._process.poll() is None:
            return self
        self._process = subprocess.Popen(self._command(), stdout=subprocess.DEVNULL,  # noqa: S603 - our own binary
                                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                error = (self._process.stderr.read() if self._process.stderr else b"").decode(errors="replace")
                raise RuntimeError(f"redis-server exited with {self._process.returncode}: {error.strip()[:500]}")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=0.2):
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not listen on {self.address} within 10 seconds")

    def freeze(self) -> None:
        """SIGSTOP: connections stay open and nothing answers (a hung server)."""
        if self._process is not None:
            os.kill(self._process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if self._process is not None:
            os.kill(self._process.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL (after a SIGCONT, so a frozen server dies too); the data is gone, the port free."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGCONT)
            process.kill()
            process.wait(10)
        if process is not None and process.stderr is not None:
            process.stderr.close()

    def restart(self) -> RedisServer:
        self.kill()
        return self.start()

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self._dir, ignore_errors=True)

    def client(self, **options: object) -> object:
        """A redis-py client for inspecting the server from tests (raw keys and values)."""
        import redis

        extra: dict[str, object] = {"password": self.password}
        if self._ca is not None:
            extra.update(ssl=True, ssl_ca_certs=self._ca.ca_bundle_path)
        return redis.Redis(host=self.host, port=self.port, **{**extra, **options})  # type: ignore[arg-type]

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
