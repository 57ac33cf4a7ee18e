"""Writes the broker's settings into its App Configuration store (postprovision hook, USE_APP_CONFIGURATION=true).

Why here and not in Bicep: the store has access keys disabled, so key-values can only be written with an Entra ID
identity holding an App Configuration data-plane role. Resource Manager would write them with the deployer's
identity in the same deployment that grants the deployer App Configuration Data Owner, and a new role assignment
takes minutes to reach the data plane: the first provision failed with 403. This script runs after provisioning,
as the signed-in Azure CLI user or pipeline identity, and retries 403s while the role propagates.

Input (azd exports main.bicep's outputs to the hook's environment):
  AZURE_APPCONFIG_ENDPOINT             the store
  AZURE_APPCONFIG_SETTINGS             JSON object: setting name -> value (never a secret)
  AZURE_APPCONFIG_KEYVAULT_REFERENCES  JSON object: setting name -> Key Vault secret URI
Keys are TokenBroker:<SETTING> (KEY_PREFIX in token_broker/app_configuration.py), unlabelled. Bootstrap settings
(CALLER_AUTH, AZURE_APPCONFIG_*, AZURE_CLIENT_ID, WEBSITE_*, IDENTITY_*) are never written: the broker reads them
from app settings only. The sentinel TokenBroker:Sentinel changes only when the written values change; keys the
operator added by hand are left alone. Exit status 0 when there is nothing to do or everything was written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

KEY_PREFIX = "TokenBroker:"
SENTINEL_KEY = KEY_PREFIX + "Sentinel"
KEY_VAULT_REFERENCE = "application/vnd.microsoft.appconfig.keyvaultref+json;charset=utf-8"
BOOTSTRAP_SETTINGS = frozenset({"CALLER_AUTH", "AZURE_CLIENT_ID"})
BOOTSTRAP_PREFIXES = ("AZURE_APPCONFIG_", "WEBSITE_", "IDENTITY_")
ATTEMPTS = int(os.environ.get("APPCONFIG_WRITE_ATTEMPTS") or 10)
WAIT_SECONDS = float(os.environ.get("APPCONFIG_WRITE_WAIT_SECONDS") or 30)


def is_bootstrap(name: str) -> bool:
    return name in BOOTSTRAP_SETTINGS or name.startswith(BOOTSTRAP_PREFIXES)


def az(*args: str) -> None:
    """One Azure CLI call, retried while the data-plane role propagates (403) or the store is still starting."""
    executable = shutil.which("az") or "az"
    for attempt in range(1, ATTEMPTS + 1):
        result = subprocess.run([executable, *args, "--output", "none"],  # noqa: S603 (fixed az arguments)
                                capture_output=True, text=True, check=False)
        if result.returncode == 0:
            return
        error = (result.stderr or "").strip().splitlines()
        if attempt == ATTEMPTS:
            raise SystemExit(f"App Configuration refused the write after {ATTEMPTS} attempts: "
                             f"{error[-1] if error else 'no message'}\nDoes the signed-in identity hold App "
                             "Configuration Data Owner on the store? (docs/DEPLOY.md, first deploy)")
        print(f"Waiting for the App Configuration role assignment to take effect ({attempt}/{ATTEMPTS})...",
              flush=True)
        time.sleep(WAIT_SECONDS)


def load(name: str) -> dict[str, str]:
    text = (os.environ.get(name) or "").strip() or "{}"
    value = json.loads(text)
    if not isinstance(value, dict):
        raise SystemExit(f"{name} is not a JSON object")
    return {str(k): str(v) for k, v in value.items()}


def main() -> int:
    endpoint = (os.environ.get("AZURE_APPCONFIG_ENDPOINT") or "").strip()
    if not endpoint:
        return 0
    settings = load("AZURE_APPCONFIG_SETTINGS")
    references = load("AZURE_APPCONFIG_KEYVAULT_REFERENCES")
    store = ("--endpoint", endpoint, "--auth-mode", "login", "--yes")
    written: dict[str, str] = {}
    for name, value in sorted(settings.items()):
        if is_bootstrap(name):
            print(f"Skipped {name}: a bootstrap setting is read from app settings only.", file=sys.stderr)
            continue
        az("appconfig", "kv", "set", *store, "--key", KEY_PREFIX + name, "--value", value,
           "--content-type", "text/plain")
        written[name] = value
    for name, uri in sorted(references.items()):
        if is_bootstrap(name):
            print(f"Skipped {name}: a bootstrap setting is read from app settings only.", file=sys.stderr)
            continue
        az("appconfig", "kv", "set-keyvault", *store, "--key", KEY_PREFIX + name, "--secret-identifier", uri)
        written[name] = json.dumps({"uri": uri, "contentType": KEY_VAULT_REFERENCE})
    # Last, so that a broker that sees the new sentinel also sees every value it stands for.
    digest = hashlib.sha256(json.dumps(written, sort_keys=True).encode()).hexdigest()[:16]
    az("appconfig", "kv", "set", *store, "--key", SENTINEL_KEY, "--value", digest, "--content-type", "text/plain")
    print(f"Wrote {len(written)} settings to App Configuration {endpoint} (sentinel {digest}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
