"""The postprovision hook's pieces that run in pipelines, executed for real with a recording ``az`` on PATH.

- infra/hooks/appconfig_keyvalues.py writes the broker's settings into App Configuration after provisioning,
  retrying while the deployer's new data-plane role propagates, and never writes a bootstrap setting.
- postprovision.sh signs the Azure CLI in again with a new GitHub ID token (OpenID Connect), fetched from a
  loopback server standing in for the Actions token service, and gets every token it needs at once.
The ``az`` here is a script that records its arguments (and fails the first calls like a 403 would): the hooks'
contract is the command lines they run.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

ROOT = Path(__file__).resolve().parents[1]
HOOKS = ROOT / "infra" / "hooks"
FAKE_AZ = """#!{python}
import json, os, sys
log = os.environ["AZ_LOG"]
with open(log, "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
calls = sum(1 for _ in open(log))
if calls <= int(os.environ.get("AZ_FAIL_FIRST", "0")):
    sys.stderr.write("ERROR: Operation returned an invalid status 'Forbidden'\\n")
    sys.exit(1)
"""


@pytest.fixture
def fake_az(tmp_path: Path) -> Iterator[dict[str, str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    az = bin_dir / "az"
    az.write_text(FAKE_AZ.format(python=sys.executable))
    az.chmod(0o755)
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "ACTIONS_"))}
    environ.update(PATH=f"{bin_dir}{os.pathsep}{environ['PATH']}", AZ_LOG=str(tmp_path / "az.log"))
    yield environ


def az_calls(environ: dict[str, str]) -> list[list[str]]:
    log = Path(environ["AZ_LOG"])
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def run_writer(environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(HOOKS / "appconfig_keyvalues.py")], env=environ, text=True,
                          capture_output=True, timeout=60, check=False)


def test_the_writer_writes_settings_then_references_then_the_sentinel(fake_az: dict[str, str]) -> None:
    fake_az.update(
        AZURE_APPCONFIG_ENDPOINT="https://appcs-test.azconfig.io",
        AZURE_APPCONFIG_SETTINGS=json.dumps({"POWERBI_CLIENT_ID": "app", "CALLER_AUTH": "function_key",
                                             "AZURE_APPCONFIG_LABEL": "x", "WEBSITE_AUTH_ENABLED": "True"}),
        AZURE_APPCONFIG_KEYVAULT_REFERENCES=json.dumps(
            {"POWERBI_CLIENT_SECRET": "https://kv-test.vault.azure.net/secrets/powerbi-client-secret"}),
        AZ_FAIL_FIRST="2", APPCONFIG_WRITE_WAIT_SECONDS="0.01")
    result = run_writer(fake_az)
    assert result.returncode == 0, result.stderr
    calls = az_calls(fake_az)
    # Two 403s while the role propagates, then the same call again.
    assert calls[0] == calls[1] == calls[2]
    keys = [call[call.index("--key") + 1] for call in calls[2:]]
    assert keys == ["TokenBroker:POWERBI_CLIENT_ID", "TokenBroker:POWERBI_CLIENT_SECRET", "TokenBroker:Sentinel"]
    assert calls[3][:3] == ["appconfig", "kv", "set-keyvault"]
    assert calls[3][calls[3].index("--secret-identifier") + 1].endswith("/secrets/powerbi-client-secret")
    for call in calls:
        assert call[call.index("--endpoint") + 1] == "https://appcs-test.azconfig.io"
        assert call[call.index("--auth-mode") + 1] == "login"
    assert "CALLER_AUTH" in result.stderr and "bootstrap" in result.stderr
    assert "Waiting for the App Configuration role assignment" in result.stdout


def test_the_sentinel_changes_only_with_the_values(fake_az: dict[str, str]) -> None:
    def sentinel(settings: dict[str, str]) -> str:
        Path(fake_az["AZ_LOG"]).unlink(missing_ok=True)
        environ = {**fake_az, "AZURE_APPCONFIG_ENDPOINT": "https://appcs-test.azconfig.io",
                   "AZURE_APPCONFIG_SETTINGS": json.dumps(settings)}
        assert run_writer(environ).returncode == 0
        last = az_calls(environ)[-1]
        assert last[last.index("--key") + 1] == "TokenBroker:Sentinel"
        return str(last[last.index("--value") + 1])

    first = sentinel({"POWERBI_GRANT_TYPE": "client_credentials"})
    assert sentinel({"POWERBI_GRANT_TYPE": "client_credentials"}) == first
    assert sentinel({"POWERBI_GRANT_TYPE": "password"}) != first


def test_the_writer_gives_up_with_the_fix_and_does_nothing_without_a_store(fake_az: dict[str, str]) -> None:
    assert run_writer(fake_az).returncode == 0 and az_calls(fake_az) == []
    fake_az.update(AZURE_APPCONFIG_ENDPOINT="https://appcs-test.azconfig.io",
                   AZURE_APPCONFIG_SETTINGS=json.dumps({"POWERBI_CLIENT_ID": "app"}),
                   AZ_FAIL_FIRST="99", APPCONFIG_WRITE_ATTEMPTS="3", APPCONFIG_WRITE_WAIT_SECONDS="0.01")
    result = run_writer(fake_az)
    assert result.returncode != 0
    assert "App Configuration Data Owner" in result.stderr and len(az_calls(fake_az)) == 3


class _TokenService(BaseHTTPRequestHandler):
    """GitHub's Actions ID token endpoint: GET ?api-version=...&audience=... with the request token."""

    requests: ClassVar[list[tuple[str, str]]] = []

    def do_GET(self) -> None:
        self.requests.append((self.path, self.headers.get("Authorization", "")))
        body = json.dumps({"count": 1, "value": "eyJ.fresh-github-id-token.sig"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def refresh_function(hook: Path) -> str:
    """The hook's refresh_github_oidc_sign_in function, as written."""
    text = hook.read_text()
    start = text.index("refresh_github_oidc_sign_in() {")
    return text[start:text.index("\n}\n", start) + 3]


def test_the_hook_signs_the_cli_in_again_with_a_new_github_id_token(fake_az: dict[str, str]) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TokenService)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        fake_az.update(ACTIONS_ID_TOKEN_REQUEST_URL=f"http://127.0.0.1:{server.server_port}/token?api-version=2.0",
                       ACTIONS_ID_TOKEN_REQUEST_TOKEN="request-token", AZURE_CLIENT_ID="pipeline-client-id",
                       AZURE_TENANT_ID="tenant-id", AZURE_SUBSCRIPTION_ID="subscription-id")
        script = refresh_function(HOOKS / "postprovision.sh") + "refresh_github_oidc_sign_in\n"
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=fake_az, text=True,
                                capture_output=True, timeout=60, check=False)
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr
    assert _TokenService.requests == [("/token?api-version=2.0&audience=api%3A%2F%2FAzureADTokenExchange",
                                       "Bearer request-token")]
    calls = az_calls(fake_az)
    login = calls[0]
    assert login[:2] == ["login", "--service-principal"]
    assert login[login.index("--federated-token") + 1] == "eyJ.fresh-github-id-token.sig"
    assert login[login.index("--username") + 1] == "pipeline-client-id"
    assert calls[1] == ["account", "set", "--subscription", "subscription-id"]
    warmed = [" ".join(call) for call in calls[2:]]
    assert any("https://vault.azure.net" in c for c in warmed) and any("ms-graph" in c for c in warmed)
    assert "request-token" not in result.stdout + result.stderr
    assert "fresh-github-id-token" not in result.stdout + result.stderr


def test_the_hook_leaves_a_developers_sign_in_alone(fake_az: dict[str, str]) -> None:
    script = refresh_function(HOOKS / "postprovision.sh") + "refresh_github_oidc_sign_in\n"
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=fake_az, text=True,
                            capture_output=True, timeout=60, check=False)
    assert result.returncode == 0 and az_calls(fake_az) == []


def test_both_hooks_refresh_before_their_first_key_vault_or_graph_call() -> None:
    for hook, definition, call in ((HOOKS / "postprovision.sh", "refresh_github_oidc_sign_in() {",
                                    "\nrefresh_github_oidc_sign_in\n"),
                                   (HOOKS / "postprovision.ps1", "function Update-GitHubOidcSignIn {",
                                    "\nUpdate-GitHubOidcSignIn\n")):
        text = "\n".join(line for line in hook.read_text().splitlines() if not line.lstrip().startswith("#")) + "\n"
        assert definition in text and call in text, hook.name
        body_end = text.index(call)
        assert "ACTIONS_ID_TOKEN_REQUEST_URL" in text and "api%3A%2F%2FAzureADTokenExchange" in text
        assert "--federated-token" in text
        for first_use in ("az account show", "appconfig_keyvalues.py", "az ad sp show"):
            assert text.index(first_use) > body_end, f"{hook.name}: {first_use} runs before the re-sign-in"


def test_the_prepackage_hook_compiles_hash_checked_bytecode_for_the_runtime(tmp_path: Path) -> None:
    """PEP 552 flags (bytes 4-7 of a .pyc): 0b11 = hash-based, checked. Timestamp .pyc files would be stale after
    the package's zip loses modification times; another Python version's would be ignored."""
    project = tmp_path / "project"
    (project / "token_broker").mkdir(parents=True)
    (project / "function_app.py").write_text("import token_broker\n")
    (project / "token_broker" / "__init__.py").write_text("VALUE = 1\n")
    syntax = subprocess.run(["bash", "-n", str(HOOKS / "prepackage.sh")], capture_output=True, timeout=60, check=False)
    assert syntax.returncode == 0
    compiled = subprocess.run([sys.executable, str(HOOKS / "compile_bytecode.py"), str(project)], text=True,
                              capture_output=True, timeout=120, check=False)
    runtime = re.search(r"version: '(\d+\.\d+)'", (ROOT / "infra" / "app" / "api.bicep").read_text())
    assert runtime
    if f"{sys.version_info.major}.{sys.version_info.minor}" != runtime.group(1):
        assert compiled.returncode == 0 and "not compiled" in compiled.stderr
        return
    assert compiled.returncode == 0, compiled.stderr
    tag = sys.implementation.cache_tag
    for pyc in (project / "__pycache__" / f"function_app.{tag}.pyc",
                project / "token_broker" / "__pycache__" / f"__init__.{tag}.pyc"):
        assert int.from_bytes(pyc.read_bytes()[4:8], "little") == 0b11, pyc


# -- the shared cache's encryption key (ENABLE_REDIS): created once, never replaced by a provision -------------

#: ``az`` standing in for the Key Vault commands the hook runs, over a JSON file of secret versions. ``secret
#: list`` answers the hook's ``[?name=='…'] | [0].id`` query; ``secret set`` stores its standard input (``--file
#: /dev/stdin``). The first AZ_FAIL_KEYVAULT_FIRST Key Vault calls fail like a 403 while the role propagates.
KEYVAULT_AZ = """#!{python}
import json, os, re, sys
args = sys.argv[1:]
with open(os.environ["AZ_LOG"], "a") as f:
    f.write(json.dumps(args) + "\\n")
state_path = os.environ["AZ_VAULT"]
state = json.load(open(state_path)) if os.path.exists(state_path) else {{"secrets": {{}}, "keyvault_calls": 0}}
def option(name):
    return args[args.index(name) + 1]
if args[:1] == ["keyvault"]:
    state["keyvault_calls"] += 1
    json.dump(state, open(state_path, "w"))
    if state["keyvault_calls"] <= int(os.environ.get("AZ_FAIL_KEYVAULT_FIRST", "0")):
        sys.stderr.write("ERROR: (Forbidden) Caller is not authorized to perform action on resource.\\n")
        sys.exit(1)
if args[:3] == ["keyvault", "secret", "list"]:
    name = re.fullmatch(r"\\[\\?name=='([^']+)'\\] \\| \\[0\\]\\.id", option("--query")).group(1)
    versions = state["secrets"].get(name, [])
    vault = option("--vault-name")
    print(f"https://{{vault}}.vault.azure.net/secrets/{{name}}" if versions else "")
elif args[:3] == ["keyvault", "secret", "set"]:
    assert "--value" not in args and option("--file") == "/dev/stdin" and option("--encoding") == "utf-8"
    state["secrets"].setdefault(option("--name"), []).append(sys.stdin.read())
    json.dump(state, open(state_path, "w"))
"""


@pytest.fixture
def vault_az(tmp_path: Path) -> Iterator[dict[str, str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    az = bin_dir / "az"
    az.write_text(KEYVAULT_AZ.format(python=sys.executable))
    az.chmod(0o755)
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith(("AZURE_", "ACTIONS_", "POWERBI_", "CACHE_", "CALLER_"))}
    environ.update(PATH=f"{bin_dir}{os.pathsep}{environ['PATH']}", AZ_LOG=str(tmp_path / "az.log"),
                   AZ_VAULT=str(tmp_path / "vault.json"), KEYVAULT_WRITE_WAIT_SECONDS="0",
                   AZURE_KEY_VAULT_NAME="kv-test", POWERBI_CLIENT_ID="6731de76-14a6-49ae-97bc-6eba6914391e",
                   POWERBI_CREDENTIAL_MODE="federated", AZURE_REDIS_NAME="amr-test",
                   AZURE_FUNCTION_APP_NAME="func-api-test", AZURE_RESOURCE_GROUP="rg-test")
    yield environ


def run_hook(environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The whole POSIX postprovision hook against the Key Vault ``az``, run as azd runs it on Linux and macOS:
    the path itself (azure-dev's bash script runner), so its ``#!/usr/bin/env bash`` line picks the shell."""
    return subprocess.run([str(HOOKS / "postprovision.sh")], env=environ, text=True, capture_output=True,
                          timeout=60, check=False)


def stored_keys(environ: dict[str, str]) -> list[str]:
    vault = Path(environ["AZ_VAULT"])
    secrets = json.loads(vault.read_text())["secrets"] if vault.exists() else {}
    return list(secrets.get("cache-encryption-key", []))


def test_the_hook_creates_the_cache_key_once_and_never_shows_it(vault_az: dict[str, str]) -> None:
    first = run_hook(vault_az)
    assert first.returncode == 0, first.stderr
    [key] = stored_keys(vault_az)
    # What `openssl rand -base64 32` prints, without its newline: the base64 of 32 random bytes.
    assert re.fullmatch(r"[A-Za-z0-9+/]{43}=", key)
    assert len(base64.b64decode(key, validate=True)) == 32
    calls = az_calls(vault_az)
    assert key not in first.stdout + first.stderr
    assert all(key not in argument for call in calls for argument in call), "the key was on a command line"
    kinds = [call[:3] for call in calls]
    assert kinds.count(["keyvault", "secret", "set"]) == 1
    write = next(call for call in calls if call[:3] == ["keyvault", "secret", "set"])
    assert write[write.index("--vault-name") + 1] == "kv-test"
    assert ["functionapp", "restart"] in [call[:2] for call in calls]

    # The next provision finds it and keeps it: no write, no restart.
    Path(vault_az["AZ_LOG"]).unlink()
    second = run_hook(vault_az)
    assert second.returncode == 0, second.stderr
    assert stored_keys(vault_az) == [key]
    assert "already holds the shared cache's encryption key cache-encryption-key: kept" in second.stdout
    assert [call[:3] for call in az_calls(vault_az) if call[0] == "keyvault"] == [["keyvault", "secret", "list"]]
    assert ["functionapp", "restart"] not in [call[:2] for call in az_calls(vault_az)]


def test_the_cache_key_is_rotated_only_on_request(vault_az: dict[str, str]) -> None:
    assert run_hook(vault_az).returncode == 0
    rotated = run_hook({**vault_az, "CACHE_ROTATE_ENCRYPTION_KEY": "true"})
    assert rotated.returncode == 0, rotated.stderr
    first, second = stored_keys(vault_az)
    assert first != second and len(base64.b64decode(second, validate=True)) == 32
    assert "still decrypts" in rotated.stdout and "CACHE_ROTATE_ENCRYPTION_KEY false" in rotated.stdout


def test_the_hook_waits_for_the_vault_role_then_writes(vault_az: dict[str, str]) -> None:
    """The deployer's Key Vault Secrets Officer assignment is minutes old: the first calls get 403."""
    result = run_hook({**vault_az, "AZ_FAIL_KEYVAULT_FIRST": "3"})
    assert result.returncode == 0, result.stderr
    assert len(stored_keys(vault_az)) == 1
    # Progress goes to stderr: the vault read's stdout is the value the hook reads.
    assert "Waiting for the Key Vault role assignment to take effect (1/10)" in result.stderr
    assert "Waiting for permission to write secrets" not in result.stdout
    kinds = [call[:3] for call in az_calls(vault_az) if call[0] == "keyvault"]
    assert kinds == [["keyvault", "secret", "list"]] * 4 + [["keyvault", "secret", "set"]]


def test_the_hook_gives_up_with_the_fix_when_the_vault_stays_closed(vault_az: dict[str, str]) -> None:
    result = run_hook({**vault_az, "AZ_FAIL_KEYVAULT_FIRST": "99"})
    assert result.returncode != 0
    assert "Key Vault Secrets Officer" in result.stderr and stored_keys(vault_az) == []
    assert len(az_calls(vault_az)) == 1 + 10  # az account show, then ten attempts


def test_without_the_shared_cache_the_hook_touches_no_key(vault_az: dict[str, str]) -> None:
    environ = {k: v for k, v in vault_az.items() if k != "AZURE_REDIS_NAME"}
    result = run_hook(environ)
    assert result.returncode == 0, result.stderr
    assert [call for call in az_calls(environ) if call[0] == "keyvault"] == []
    assert "cache-encryption-key" not in result.stdout


def test_the_powershell_hook_mirrors_the_cache_key_step() -> None:
    """pwsh is not installed here: the Windows hook is held to the same contract by its text."""
    text = (HOOKS / "postprovision.ps1").read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "$cacheKeyName = 'cache-encryption-key'" in code
    assert "if (Get-Setting 'AZURE_REDIS_NAME') { Save-CacheEncryptionKey }" in code
    assert "[System.Security.Cryptography.RandomNumberGenerator]::GetBytes(32)" in code
    assert "[Convert]::ToBase64String(" in code and "Get-Random" not in code
    assert "/secrets/$Name/versions?api-version=7.4" in code  # metadata only, 404 when absent
    assert "if ($status -eq 404) { return @() }" in code
    assert "$exists = @(Get-SecretVersions $cacheKeyName).Count -gt 0" in code
    assert "'CACHE_ROTATE_ENCRYPTION_KEY'" in code and "if ($exists -and -not $rotate)" in code
    assert "Invoke-RestMethod -Method Put" in code and "az keyvault secret set" not in code
    assert "Write-Host $secretBody" not in code and "$secretBody = $null" in code
    start = code.index("function Save-CacheEncryptionKey {")
    function = code[start:code.index("\nif (Get-Setting 'AZURE_REDIS_NAME')")]
    read = code[code.index("function Get-SecretVersions("):code.index("function Save-ClientSecret {")]
    for part in (read, function):  # the read and the write each retry while the vault role propagates
        assert part.count("Start-Sleep -Seconds $vaultWaitSeconds") == 1
        assert part.count("$attempt -le 10") == 1
