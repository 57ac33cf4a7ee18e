"""``python -m devtools``: the offline stack in the foreground, and ``--doctor`` against a running one.

One serve loop (the dev server's background thread); the main thread only waits for SIGINT or SIGTERM,
then stops everything, so Ctrl-C exits within a second and frees the port. A busy port, or a grant type
that cannot work here, is one line on stderr and exit code 2.

While it runs, the stack writes its app settings (with the emulator's generated, throwaway secret) and the
path of its CA bundle to ``.offline-stack/port-<port>.json`` (mode 0600, removed at exit):
``python -m devtools --doctor [--port N]`` (``bash scripts/offline-stack.sh --doctor``) reads it and runs
``python -m token_broker doctor`` with exactly those settings against the running emulators.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from types import FrameType

from .local_settings import load_local_settings
from .offline_stack import ROOT, OfflineStack, OfflineStackError
from .redis_server import RedisServerMissing

__all__ = ["STATE_DIR", "main", "state_path"]

STATE_DIR = ROOT / ".offline-stack"
CALLER_AUTH_CHOICES = ("anonymous", "jwt", "easyauth", "function_key")
PROG = "python -m devtools"


def state_path(port: int) -> Path:
    """Where a stack serving on ``port`` keeps its settings for ``--doctor``."""
    return STATE_DIR / f"port-{port}.json"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Start the offline stack: the Entra ID and Power BI "
                                     "emulators plus the function app on http://localhost:7071.")
    parser.add_argument("--port", type=int, default=7071, help="function app port (default 7071; 0: any free port)")
    parser.add_argument("--grant-type", default="client_credentials",
                        choices=("client_credentials", "password", "on_behalf_of"),
                        help="POWERBI_GRANT_TYPE (default client_credentials)")
    parser.add_argument("--caller-auth", default="anonymous", choices=CALLER_AUTH_CHOICES,
                        help="CALLER_AUTH for the function app (default anonymous; jwt for the sample SPA's sign-in)")
    parser.add_argument("--token-lifetime", type=int, default=3600,
                        help="lifetime of Azure AD tokens, seconds (embed tokens never outlive them)")
    parser.add_argument("--latency", type=float, default=0.0, help="emulator latency per request, seconds")
    parser.add_argument("--redis", action="store_true",
                        help="share caches through a local redis-server (Debian's package) on loopback, with an "
                             "encryption key in a Key Vault emulator, as CACHE_REDIS_HOST does in Azure")
    parser.add_argument("--profiles", action="store_true",
                        help="multitenancy: the demo tenant is a customer whose Power BI profile owns the Demo "
                             "workspace (needs --caller-auth jwt; docs/MULTITENANCY.md)")
    parser.add_argument("--metrics", type=float, metavar="SECONDS",
                        help="print a one-line summary of the broker's OpenTelemetry metrics every SECONDS "
                             "(docs/OPERATIONS.md)")
    parser.add_argument("--doctor", nargs=argparse.REMAINDER, metavar="DOCTOR_ARGS",
                        help="instead of starting a stack: run 'python -m token_broker doctor' against the stack "
                             "running on --port (put --port before --doctor; the rest, e.g. --json, goes to doctor)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Start the offline stack in the foreground until SIGINT or SIGTERM; or, with ``--doctor``, check it."""
    args = _parser().parse_args(argv)
    if args.doctor is not None:
        return run_doctor(args.port, args.doctor)
    if args.port and not _port_free(args.port):
        print(_busy(args.port), file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host_settings = load_local_settings(ROOT / "local.settings.json")
    stack = OfflineStack(port=args.port, grant_type=args.grant_type, caller_auth=args.caller_auth,
                         token_lifetime=args.token_lifetime, latency=args.latency,
                         cors_origins=tuple(host_settings.cors_origins), redis=args.redis,
                         profiles=args.profiles)
    stop = threading.Event()
    if args.metrics:
        from devtools import metrics

        metrics.print_every(metrics.install(), args.metrics, stop,
                            lambda line: print(f"metrics: {line}", flush=True))

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            stack.start()
        except (OfflineStackError, RedisServerMissing) as err:
            print(f"{PROG}: {err}", file=sys.stderr)
            return 2
        except OSError as err:
            if err.errno != errno.EADDRINUSE:
                raise
            print(_busy(args.port), file=sys.stderr)
            return 2
        state = _write_state(stack)
        try:
            print(stack.banner(), flush=True)
            while not stop.wait(0.2):  # signals interrupt the wait; the timeout bounds it anyway
                pass
            print("Stopping the offline stack.", flush=True)
        finally:
            with contextlib.suppress(FileNotFoundError):
                state.unlink()
            stack.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _busy(port: int) -> str:
    return (f"{PROG}: port {port} is already in use (another offline stack or func start?): stop it, or choose "
            f"another port with --port, e.g. --port {port + 1}")


def _port_free(port: int) -> bool:
    """Whether the dev server could bind ``port`` (checked before anything starts, for a one-line answer)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the dev server binds
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def _write_state(stack: OfflineStack) -> Path:
    port = int(stack.url.rpartition(":")[2])
    STATE_DIR.mkdir(exist_ok=True)
    path = state_path(port)
    state = {"url": stack.url, "pid": os.getpid(), "caBundle": stack.ca.ca_bundle_path, "values": stack.settings()}
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds the throwaway secret
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        json.dump(state, file, indent=1)
    return path


def run_doctor(port: int, doctor_args: list[str]) -> int:
    """``python -m token_broker doctor`` with the settings of the stack running on ``port``."""
    path = state_path(port)
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        print(f"{PROG} --doctor: no offline stack is running on port {port}: start one with "
              "'bash scripts/offline-stack.sh' (and name its port with --port before --doctor)", file=sys.stderr)
        return 2
    if not _listening(port):
        print(f"{PROG} --doctor: the offline stack on port {port} is gone ({path} is left from a stack that did not "
              "stop cleanly; delete it): start one with 'bash scripts/offline-stack.sh'", file=sys.stderr)
        return 2
    from token_broker.doctor.cli import main as doctor

    os.environ["REQUESTS_CA_BUNDLE"] = state["caBundle"]  # msal and requests trust the emulators' CA
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith(("POWERBI_", "CALLER_", "EMBED_", "AZURE_APPCONFIG_"))}
    print(f"Doctor against the offline stack on {state['url']}", file=sys.stderr, flush=True)
    return doctor(doctor_args, environ={**environ, **state["values"]})


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False
