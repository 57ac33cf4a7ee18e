"""Cold start: a fresh Python process from its start to its first ``/api/token`` response.

The broker's process imports ``function_app``, indexes it (``app.get_functions()``, as the Functions
worker does once per process) and calls the registered ``token`` function with a new
``func.HttpRequest``: default configuration (plain client secret, ``CALLER_AUTH=anonymous``) against
the Entra ID emulator of this process (20 ms latency, its CA trusted through ``REQUESTS_CA_BUNDLE``).
The floor is what no broker can avoid: ``python -c`` importing ``azure.functions`` and ``msal`` and
acquiring one token from the same emulator with a new MSAL application (tenant discovery + token
request, the same two round trips the broker makes). Both are timed by this process from
``Popen`` to the child's first line on stdout, so interpreter start-up counts for both and exit
does not; broker and floor runs alternate (in either order) to spread noise.

Bytecode: this machine exports ``PYTHONDONTWRITEBYTECODE=1``, so the app's own modules would be
compiled from source in every process, while pip installed the dependencies with their bytecode.
The headline figure gives both sides cached bytecode (a private ``PYTHONPYCACHEPREFIX`` filled by
an untimed warm-up); ``coldstart.token.source`` removes only the app's own bytecode from it, which is
what a read-only deployment package without ``__pycache__`` costs at every cold start.
``coldstart.token.packaged`` runs the deployment package as azd builds it: the deployed files after the
prepackage hook (infra/hooks/compile_bytecode.py: hash-checked bytecode), zipped and extracted (which loses the
modification times timestamp-checked bytecode depends on), read without writing bytecode; its floor runs in the
same environment.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from .importtime import heavy_modules, import_notes
from .report import Figure, Target
from .stack import BenchStack, RunContext

ROOT = Path(__file__).resolve().parents[1]
MAX_TIMES_FLOOR = 1.15
_CHILD_TIMEOUT = 60.0
_APP_SOURCES = ("function_app.cpython", "token_broker", "devtools")  # the app's bytecode under ROOT

#: The broker as the worker runs it: import the app, index it once, call the registered function.
BROKER = """
import azure.functions as func
import function_app
token = next(f for f in function_app.app.get_functions() if f.get_function_name() == "token").get_user_function()
response = token(func.HttpRequest("GET", "http://localhost:7071/api/token", headers={}, params={},
                                  route_params={}, body=b""))
print(response.status_code, flush=True)
"""
#: The same through the host emulation (adds devtools' own imports, which are never deployed).
BROKER_VIA_HOST = """
import function_app
from devtools.functions_host import FunctionsHost
print(FunctionsHost(function_app.app).invoke("GET", "/api/token").status, flush=True)
"""
FLOOR = """
import os
import azure.functions
import msal
app = msal.ConfidentialClientApplication(
    os.environ["POWERBI_CLIENT_ID"], client_credential=os.environ["POWERBI_CLIENT_SECRET"],
    authority=os.environ["POWERBI_AUTHORITY_HOST"] + "/" + os.environ["POWERBI_TENANT_ID"],
    instance_discovery=False)
result = app.acquire_token_for_client(["https://analysis.windows.net/powerbi/api/.default"])
print(200 if "access_token" in result else result.get("error"), flush=True)
"""
_IMPORT = """
import json, sys, time
before = set(sys.modules)
started = time.perf_counter()
import {modules}
elapsed = time.perf_counter() - started
print(json.dumps({{"ms": elapsed * 1000, "modules": sorted(set(sys.modules) - before)}}), flush=True)
"""
IMPORT_APP = _IMPORT.format(modules="function_app")
IMPORT_FLOOR = _IMPORT.format(modules="azure.functions, msal")
FLOOR_NAME = ("python -c: import azure.functions, msal; a new msal.ConfidentialClientApplication + "
              "acquire_token_for_client against the same emulator (the cold-start floor)")
IMPORT_FLOOR_NAME = "import azure.functions, msal in a fresh process (the floor's imports)"


def first_line(code: str, environ: dict[str, str], *, options: tuple[str, ...] = (),
               cwd: Path = ROOT) -> tuple[float, str]:
    """Run ``python [options] -c code``; milliseconds from start to its first stdout line, and the line.

    The child runs to its end (checked); a child that hangs is killed after a minute.
    """
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, *options, "-c", code], cwd=cwd, env=environ, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    watchdog = threading.Timer(_CHILD_TIMEOUT, process.kill)
    watchdog.start()
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        elapsed_ms = (time.perf_counter() - started) * 1000
        _, errors = process.communicate()
    finally:
        watchdog.cancel()
    if process.returncode != 0 or not line.strip():
        raise RuntimeError(f"cold-start child failed (exit {process.returncode}): {errors[-3000:]}")
    return elapsed_ms, line.strip()


class _Environments:
    """Child environments with the app's bytecode cached (``bytecode``) or compiled at start (``source``)."""

    def __init__(self, stack: BenchStack) -> None:
        self._directory = tempfile.TemporaryDirectory(prefix="bench-pycache-")
        cached = Path(self._directory.name, "cached")
        base = {name: value for name, value in stack.child_environ().items()
                if name not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
        self.bytecode = {**base, "PYTHONPYCACHEPREFIX": str(cached)}
        for code in (BROKER, BROKER_VIA_HOST, FLOOR):  # untimed: compiles everything into the prefix
            first_line(code, self.bytecode)
        without_app = Path(self._directory.name, "without-app")
        shutil.copytree(cached, without_app)
        mirrored_root = without_app / ROOT.relative_to(ROOT.anchor)
        if not (mirrored_root / "token_broker").is_dir():
            raise RuntimeError(f"no bytecode of token_broker under {mirrored_root}: the cache layout is not "
                               "the one this benchmark expects")
        for entry in mirrored_root.iterdir():
            if entry.is_dir() and entry.name.startswith(_APP_SOURCES):
                shutil.rmtree(entry)
            elif entry.name.startswith(_APP_SOURCES):
                entry.unlink()
        self.source = {**base, "PYTHONPYCACHEPREFIX": str(without_app), "PYTHONDONTWRITEBYTECODE": "1"}
        # The deployment package: dependencies' bytecode as pip installed it, the app's from the prepackage hook.
        self.package = _build_package(Path(self._directory.name, "package"))
        self.packaged = {**base, "PYTHONDONTWRITEBYTECODE": "1"}

    def close(self) -> None:
        self._directory.cleanup()


def _build_package(target: Path) -> Path:
    """The api service's package as azd deploys it: deployed files, prepackage hook, zip, extraction."""
    staging = target.with_name("staging")
    staging.mkdir(parents=True)
    for name in ("function_app.py", "host.json", "requirements.txt"):
        shutil.copy2(ROOT / name, staging / name)
    shutil.copytree(ROOT / "token_broker", staging / "token_broker",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    hook = subprocess.run([sys.executable, str(ROOT / "infra" / "hooks" / "compile_bytecode.py"), str(staging)],
                          capture_output=True, text=True, check=False)
    if hook.returncode != 0 or "compiled" not in hook.stdout:
        raise RuntimeError(f"the prepackage hook did not compile the package: {hook.stdout}{hook.stderr}")
    archive = target.with_suffix(".zip")
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as package:
        for path in sorted(staging.rglob("*")):
            package.write(path, path.relative_to(staging))
    with zipfile.ZipFile(archive) as package:
        package.extractall(target)
    if not list(target.glob("token_broker/__pycache__/*.pyc")):
        raise RuntimeError("the package has no bytecode of token_broker")
    return target


def _token_run(stack: BenchStack, code: str, environ: dict[str, str], *, cwd: Path = ROOT) -> float:
    """One fresh process to its first token response; exactly one token request must reach Entra ID."""
    stack.entra.reset_counters()
    elapsed_ms, status = first_line(code, environ, cwd=cwd)
    upstream = stack.upstream_token_requests()
    if status != "200" or upstream != 1:
        raise RuntimeError(f"cold start: status {status}, {upstream} token requests instead of 1")
    return elapsed_ms


def _import_run(code: str, environ: dict[str, str]) -> tuple[float, list[str]]:
    _, line = first_line(code, environ)
    document = json.loads(line)
    return float(document["ms"]), list(document["modules"])


def run(ctx: RunContext) -> list[Figure]:
    """Measure cold starts and imports in fresh processes, alternating broker and floor."""
    stack = ctx.stack()
    stack.configure()  # default lifetime and the 20 ms latency
    environments = _Environments(stack)
    series: dict[str, list[float]] = {name: [] for name in (
        "broker", "floor", "host", "source", "source_floor", "packaged", "packaged_floor", "import", "import_floor",
        "sdk", "sdk_floor")}
    app_modules: list[str] = []
    try:
        steps: list[tuple[str, Callable[[], float]]] = [
            ("broker", lambda: _token_run(stack, BROKER, environments.bytecode)),
            ("floor", lambda: _token_run(stack, FLOOR, environments.bytecode)),
            ("host", lambda: _token_run(stack, BROKER_VIA_HOST, environments.bytecode)),
            ("source", lambda: _token_run(stack, BROKER, environments.source)),
            ("source_floor", lambda: _token_run(stack, FLOOR, environments.source)),
            ("packaged", lambda: _token_run(stack, BROKER, environments.packaged, cwd=environments.package)),
            ("packaged_floor", lambda: _token_run(stack, FLOOR, environments.packaged, cwd=environments.package)),
        ]
        for run_number in range(ctx.profile.cold_runs):
            # Reversed every other run, so that neither broker nor floor always follows the other.
            for name, step in steps if run_number % 2 == 0 else steps[::-1]:
                series[name].append(step())
            for name, code in (("import", IMPORT_APP), ("import_floor", IMPORT_FLOOR)):
                elapsed, modules = _import_run(code, environments.bytecode)
                series[name].append(elapsed)
                series["sdk" if name == "import" else "sdk_floor"].append(float(len(heavy_modules(modules))))
                if name == "import":
                    app_modules = modules
            ctx.progress(f"cold start run {run_number + 1}/{ctx.profile.cold_runs}: broker "
                         f"{series['broker'][-1]:.0f} ms, floor {series['floor'][-1]:.0f} ms, "
                         f"without the app's bytecode {series['source'][-1]:.0f} ms, "
                         f"packaged {series['packaged'][-1]:.0f} ms")
        ctx.note("Cold start: what `import function_app` loads (default settings)",
                 import_notes(app_modules, ROOT, environments.bytecode))
    finally:
        environments.close()

    def runs(name: str) -> tuple[float, ...]:
        return tuple(series[name])

    return [
        Figure("coldstart.token", "Fresh process to its first GET /api/token response: import function_app, "
               "app.get_functions(), call the token function (bytecode cached)", "ms", runs("broker"),
               runs("floor"), FLOOR_NAME, max_times_baseline=MAX_TIMES_FLOOR),
        Figure("coldstart.token.host", "The same through devtools.functions_host.FunctionsHost (adds the host "
               "emulation's imports)", "ms", runs("host"), runs("floor"), FLOOR_NAME),
        Figure("coldstart.token.source", "The same without the app's own bytecode (compiled at start: "
               "PYTHONDONTWRITEBYTECODE, or a read-only package without __pycache__)", "ms", runs("source"),
               runs("source_floor"), FLOOR_NAME + ", dependencies' bytecode as installed"),
        Figure("coldstart.token.packaged", "The same from the deployment package as azd builds it: the prepackage "
               "hook's hash-checked bytecode, zipped and extracted, no bytecode written", "ms", runs("packaged"),
               runs("packaged_floor"), FLOOR_NAME + ", dependencies' bytecode as installed",
               max_times_baseline=MAX_TIMES_FLOOR),
        Figure("coldstart.import", "import function_app in a fresh process (default settings, bytecode cached)",
               "ms", runs("import"), runs("import_floor"), IMPORT_FLOOR_NAME),
        Figure("coldstart.import.sdk_modules", "Modules of msal, azure.identity, azure.keyvault and "
               "azure.appconfiguration loaded by import function_app", "modules", runs("sdk"), runs("sdk_floor"),
               IMPORT_FLOOR_NAME, target=Target("==", 0, every_run=True)),
    ]
