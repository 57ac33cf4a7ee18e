"""One product process ("instance") driven over stdin/stdout, for tests and benchmarks of what instances share.

``python -m devtools.instance`` imports ``function_app`` from the current directory and serves it through its own
index (:class:`devtools.functions_host.FunctionsHost`), with the app settings in its environment (as the Python
worker would). Each input line is a JSON request ``{"method", "url", "headers", "json"}`` or a batch
``{"batch": [request, ...], "threads": N}``; each output line is the JSON answer ``{"status", "body", "headers",
"seconds"}`` (a batch: ``{"results": [...]}``, bodies left out unless ``"bodies": true``). ``{"exit": true}``
or end of input stops it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

from devtools.functions_host import FunctionsHost, route_prefix_from_host_json

ROOT = Path(__file__).resolve().parents[1]


def _answer(host: FunctionsHost, request: dict[str, Any], body: bool) -> dict[str, Any]:
    started = time.perf_counter()
    response = host.invoke(request.get("method", "GET"), request["url"], headers=request.get("headers") or {},
                           json=request.get("json"))
    answer: dict[str, Any] = {"status": response.status, "seconds": time.perf_counter() - started}
    if body:
        answer["body"] = response.body.decode("utf-8", "replace")
        answer["headers"] = dict(response.headers)
    return answer


class Instance:
    """The parent's handle on one ``python -m devtools.instance`` process (environment: ``environ``)."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._process = subprocess.Popen([sys.executable, "-m", "devtools.instance"], cwd=ROOT, env=dict(environ),
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                         text=True, bufsize=1)
        ready = self._read()
        if not ready.get("ready"):
            raise RuntimeError(f"the instance did not start: {ready}")

    def _read(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the instance exited ({self._process.poll()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def _send(self, message: Mapping[str, Any]) -> dict[str, Any]:
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(message) + "\n")
        self._process.stdin.flush()
        return self._read()

    def request(self, method: str, url: str, *, headers: Mapping[str, str] | None = None,
                json_body: Any = None) -> dict[str, Any]:
        """One request: ``{"status", "body", "headers", "seconds"}``."""
        return self._send({"method": method, "url": url, "headers": dict(headers or {}), "json": json_body})

    def batch(self, requests: list[Mapping[str, Any]], *, threads: int = 1, bodies: bool = False
              ) -> list[dict[str, Any]]:
        """Many requests, on ``threads`` threads: each ``{"status", "seconds"}`` (and the body if ``bodies``)."""
        results: list[dict[str, Any]] = self._send({"batch": list(requests), "threads": threads,
                                                     "bodies": bodies})["results"]
        return results

    def close(self) -> None:
        if self._process.poll() is None:
            try:
                assert self._process.stdin is not None
                self._process.stdin.write(json.dumps({"exit": True}) + "\n")
                self._process.stdin.close()
                self._process.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait(10)
        if self._process.stdout is not None:
            self._process.stdout.close()

    def __enter__(self) -> Instance:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def instance_environ(settings: Mapping[str, str], *, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of an instance: ``base`` (default: this process's) with the app ``settings``."""
    environ = dict(os.environ if base is None else base)
    environ.update(settings)
    environ["PYTHONPATH"] = str(ROOT)
    return environ


def main() -> int:
    sys.path.insert(0, str(ROOT))
    import function_app

    host = FunctionsHost(function_app.app, route_prefix=route_prefix_from_host_json(ROOT / "host.json"))
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        if request.get("exit"):
            break
        if "batch" in request:
            bodies = bool(request.get("bodies"))
            with ThreadPoolExecutor(max(1, int(request.get("threads", 1)))) as pool:
                results = list(pool.map(_answer, [host] * len(request["batch"]), request["batch"],
                                        [bodies] * len(request["batch"])))
            print(json.dumps({"results": results}), flush=True)
        else:
            print(json.dumps(_answer(host, request, True)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
