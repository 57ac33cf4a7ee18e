"""The app indexes the way the Azure Functions Python worker indexes it (v2 programming model)."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import azure.functions as func

from tests.conftest import Env

ROOT = Path(__file__).resolve().parents[1]


def test_exactly_one_function_register_in_function_app() -> None:
    module = importlib.import_module("function_app")
    registers = [v for v in vars(module).values() if isinstance(v, func.FunctionRegister)]
    assert len(registers) == 1


def test_functions_bindings_and_parameter_names_as_the_worker_reads_them() -> None:
    # A fresh process: get_functions() may run once per app, as in the worker.
    script = (
        "import json, inspect, function_app\n"
        "out = []\n"
        "for f in function_app.app.get_functions():\n"
        "    meta = json.loads(f.get_function_json())\n"
        "    params = list(inspect.signature(f.get_user_function()).parameters)\n"
        "    out.append({'name': f.get_function_name(), 'bindings': meta['bindings'], 'params': params,\n"
        "                'script': meta['scriptFile']})\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    functions = {f["name"]: f for f in json.loads(result.stdout)}
    assert set(functions) == {"token", "embed_token", "report_embed", "powerbi_proxy", "health", "openapi"}
    for function in functions.values():
        trigger = next(b for b in function["bindings"] if b["type"] == "httpTrigger")
        output = next(b for b in function["bindings"] if b["type"] == "http")
        assert function["script"] == "function_app.py"
        assert function["params"] == [trigger["name"]], "each parameter must match a binding name"
        assert output["name"] == "$return"
        assert trigger["authLevel"] == "ANONYMOUS"
        assert set(trigger["methods"]) >= {"GET", "POST", "PUT", "DELETE"}  # the handler answers 405 itself
    assert next(b for b in functions["token"]["bindings"] if b["type"] == "httpTrigger")["route"] == "token"
    assert next(b for b in functions["health"]["bindings"] if b["type"] == "httpTrigger")["route"] == "health"
    routes = {name: next(b["route"] for b in f["bindings"] if b["type"] == "httpTrigger")
              for name, f in functions.items()}
    assert routes["embed_token"] == "embed-token" and routes["report_embed"] == "reports/{reportId}/embed"
    assert routes["powerbi_proxy"] == "powerbi/{*path}"  # a catch-all: the broker normalises the path itself


def test_function_app_is_thin() -> None:
    source = (ROOT / "function_app.py").read_text()
    assert len(source.splitlines()) < 60
    tree_functions = [line for line in source.splitlines() if line.startswith("def ")]
    assert tree_functions
    assert inspect.getsource(importlib.import_module("function_app")).count("return handlers.") == len(tree_functions)


def test_importing_the_app_does_not_load_msal_or_heavy_sdks() -> None:
    script = (
        "import sys, function_app\n"
        "heavy = [m for m in ('msal', 'jwt', 'azure.identity', 'azure.keyvault.secrets', 'azure.appconfiguration')\n"
        "         if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_a_plain_secret_never_loads_azure_identity_key_vault_or_app_configuration(env: Env) -> None:
    """Cold start: with a plain secret, serving a token loads msal but none of the optional Azure SDKs."""
    script = (
        "import sys, function_app\n"
        "from devtools.functions_host import FunctionsHost\n"
        "status = FunctionsHost(function_app.app).invoke('GET', '/api/token').status\n"
        "heavy = [m for m in ('azure.identity', 'azure.keyvault.secrets', 'azure.appconfiguration',\n"
        "                     'azure.appconfiguration.provider') if m in sys.modules]\n"
        "print(status, 'msal' in sys.modules, ','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True,
                            env=dict(os.environ), timeout=60)
    assert result.stdout.split() == ["200", "True"]
