#!/usr/bin/env bash
# azd postprovision hook (POSIX). azd exports the outputs of infra/main.bicep as environment variables.
#
# 1. keyVaultReference / runtimeSecretUri modes: creates a client secret for the Power BI app registration
#    and writes it straight into Key Vault. The secret only ever travels through a pipe: it is never printed,
#    never written to disk and never on a command line (visible in `ps`). A secret that is still valid for
#    more than POWERBI_CLIENT_SECRET_RENEW_DAYS is kept, so re-running `azd provision` does not pile up
#    credentials; POWERBI_ROTATE_CLIENT_SECRET=true forces a new one.
# 2. ENABLE_REDIS=true (the AZURE_REDIS_NAME output is set): creates the shared cache's encryption key, the
#    Key Vault secret cache-encryption-key holding the base64 of 32 random bytes (openssl rand -base64 32), when
#    it does not exist. An existing key is never replaced by a provision; CACHE_ROTATE_ENCRYPTION_KEY=true adds
#    a new version (the broker encrypts with the newest and still decrypts with the previous one). The key goes
#    from openssl through a pipe into Key Vault: never printed, never on a command line, never on disk.
# 3. USE_APP_CONFIGURATION=true: writes the broker's settings into the App Configuration store
#    (appconfig_keyvalues.py says why this is not done by Resource Manager).
# 4. Prints the Power BI admin steps that no template can do: the tenant setting and workspace access.
#
# In GitHub Actions (OpenID Connect), azure/login signs the Azure CLI in with a GitHub ID token that expires after
# about 5 minutes, and the CLI needs it again for every new resource (Key Vault, Microsoft Graph): after a longer
# provision that fails with AADSTS700024. The hook therefore signs the CLI in again with a fresh ID token, and
# gets its Key Vault, Graph and ARM tokens at once (the CLI caches them for an hour), before it calls anything.
#
# Needs the Azure CLI signed in to the same tenant (`az login`), as a user who owns the app registration
# (the deployment makes AZURE_PRINCIPAL_ID its owner) and holds Key Vault Secrets Officer on the vault
# (also granted by the deployment).
set -euo pipefail
umask 077

mode="${POWERBI_CREDENTIAL_MODE:-keyVaultReference}"
grant_type="${POWERBI_GRANT_TYPE:-client_credentials}"
vault="${AZURE_KEY_VAULT_NAME:?AZURE_KEY_VAULT_NAME is not set: run this hook through azd (azd provision).}"
client_id="${POWERBI_CLIENT_ID:?POWERBI_CLIENT_ID is not set: run this hook through azd (azd provision).}"
env_name="${AZURE_ENV_NAME:-azd}"
# Must match clientSecretName / masterPasswordName in infra/main.bicep (tests/test_infra.py checks it).
secret_name="powerbi-client-secret"
password_name="powerbi-master-password"
# Must match cacheEncryptionKeySecretName in infra/main.bicep (tests/test_infra.py checks it).
cache_key_name="cache-encryption-key"
# Seconds between the attempts while this deployment's Key Vault role assignment propagates.
vault_wait_seconds="${KEYVAULT_WRITE_WAIT_SECONDS:-30}"
validity_days="${POWERBI_CLIENT_SECRET_DAYS:-180}"
renew_days="${POWERBI_CLIENT_SECRET_RENEW_DAYS:-30}"

case "${POWERBI_CLOUD:-Public}" in
  USGov) api_host="https://api.powerbigov.us"; pbi_resource="https://analysis.usgovcloudapi.net/powerbi/api" ;;
  *) api_host="https://api.powerbi.com"; pbi_resource="https://analysis.windows.net/powerbi/api" ;;
esac

# An ISO 8601 UTC time $1 days from now (GNU date, then BSD date).
utc_in_days() {
  date -u -d "+$1 days" '+%Y-%m-%dT%H:%M:%SZ' 2>/dev/null || date -u -v "+$1d" '+%Y-%m-%dT%H:%M:%SZ'
}

# GitHub Actions with `permissions: id-token: write` and AZURE_CLIENT_ID / AZURE_TENANT_ID in the job's environment:
# sign the Azure CLI in again with a new GitHub ID token (see above). Elsewhere (a developer's az login, Azure
# Pipelines with keepAzSessionActive) nothing changes. The request token travels on curl's standard input, never
# on a command line; the ID token (audience api://AzureADTokenExchange, valid 5 minutes, useless to anyone but
# this workflow's federated credential) is on az login's command line for the second the call takes, as
# azure/login does it.
refresh_github_oidc_sign_in() {
  if [ -z "${ACTIONS_ID_TOKEN_REQUEST_URL:-}" ] || [ -z "${ACTIONS_ID_TOKEN_REQUEST_TOKEN:-}" ] \
      || [ -z "${AZURE_CLIENT_ID:-}" ] || [ -z "${AZURE_TENANT_ID:-}" ]; then
    return 0
  fi
  local response id_token
  response="$(printf 'header = "Authorization: Bearer %s"\n' "$ACTIONS_ID_TOKEN_REQUEST_TOKEN" \
    | curl --silent --show-error --fail --config - \
      "${ACTIONS_ID_TOKEN_REQUEST_URL}&audience=api%3A%2F%2FAzureADTokenExchange")" || {
    echo "Could not get a new GitHub ID token: does the job have 'permissions: id-token: write'?" >&2
    return 1
  }
  id_token="$(printf '%s' "$response" | sed -n 's/.*"value"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p')"
  response=""
  if [ -z "$id_token" ]; then
    echo "The GitHub ID token response has no value." >&2
    return 1
  fi
  az login --service-principal --username "$AZURE_CLIENT_ID" --tenant "$AZURE_TENANT_ID" \
    --federated-token "$id_token" --allow-no-subscriptions --output none
  id_token=""
  if [ -n "${AZURE_SUBSCRIPTION_ID:-}" ]; then
    az account set --subscription "$AZURE_SUBSCRIPTION_ID"
  fi
  # Every token this hook needs, now, while the assertion is fresh: the CLI reuses them for about an hour.
  az account get-access-token --output none
  az account get-access-token --resource https://vault.azure.net --output none
  az account get-access-token --resource-type ms-graph --output none
  if [ -n "${AZURE_APPCONFIG_ENDPOINT:-}" ]; then
    az account get-access-token --resource https://azconfig.io --output none
  fi
  echo "Signed the Azure CLI in again with a new GitHub ID token (OpenID Connect)."
}
refresh_github_oidc_sign_in

if ! az account show --output none 2>/dev/null; then
  echo "The Azure CLI is not signed in. Run 'az login --tenant ${AZURE_TENANT_ID:-<tenant id>}', then 'azd hooks run postprovision'." >&2
  exit 1
fi

vault_secret_list() {
  # Prints what the JMESPath query $1 selects from the vault's secret list (metadata only: list never returns
  # secret values). Retried while the role assignments of this deployment propagate; fails after 10 tries.
  local attempt
  for attempt in 1 2 3 4 5 6 7 8 9 10; do
    if az keyvault secret list --vault-name "$vault" --query "$1" --output tsv 2>/dev/null; then
      return 0
    fi
    if [ "$attempt" = 10 ]; then
      echo "Cannot read Key Vault $vault: does the signed-in user hold Key Vault Secrets Officer on it?" >&2
      return 1
    fi
    echo "Waiting for the Key Vault role assignment to take effect ($attempt/10)..." >&2
    sleep "$vault_wait_seconds"
  done
}

store_client_secret() {
  # When does the secret in the vault expire?
  local expires
  expires="$(vault_secret_list "[?name=='${secret_name}'] | [0].attributes.expires")" || return 1

  local renew_before
  renew_before="$(utc_in_days "$renew_days")"
  if [ -n "$expires" ] && [ "${POWERBI_ROTATE_CLIENT_SECRET:-false}" != "true" ] \
      && [[ "${expires:0:19}" > "${renew_before:0:19}" ]]; then
    echo "Key Vault $vault already holds $secret_name, valid until $expires: kept."
    echo "(Set POWERBI_ROTATE_CLIENT_SECRET=true with 'azd env set' to create a new one.)"
    return 0
  fi

  local end_date display_name client_secret stored=false
  end_date="$(utc_in_days "$validity_days")"
  display_name="azd ${env_name} $(date -u '+%Y-%m-%d')"
  echo "Creating a client secret '$display_name' for app registration $client_id (expires $end_date)..."
  # The value stays in this shell's memory: command substitution, then the printf builtin into a pipe.
  client_secret="$(az ad app credential reset --id "$client_id" --append --display-name "$display_name" \
    --end-date "$end_date" --query password --output tsv)" || client_secret=""
  if [ -z "$client_secret" ]; then
    echo "Could not create a client secret: is the signed-in user an owner of app registration $client_id" \
      "(or an Application Administrator)?" >&2
    return 1
  fi
  for attempt in 1 2 3 4 5 6 7 8 9 10; do
    if printf '%s' "$client_secret" | az keyvault secret set --vault-name "$vault" --name "$secret_name" \
        --file /dev/stdin --encoding utf-8 --expires "$end_date" --content-type "text/plain" \
        --tags "app-client-id=$client_id" "credential=$display_name" --output none; then
      stored=true
      break
    fi
    echo "Waiting for permission to write secrets to Key Vault $vault ($attempt/10)..."
    sleep 30
  done
  client_secret=""
  unset client_secret
  if [ "$stored" != true ]; then
    echo "The client secret '$display_name' was created but could not be stored in Key Vault $vault." >&2
    echo "Delete it (az ad app credential list --id $client_id; az ad app credential delete --id $client_id" \
      "--key-id <keyId>) and run 'azd hooks run postprovision' again." >&2
    return 1
  fi
  echo "Stored the client secret in Key Vault $vault as $secret_name (expires $end_date)."
  echo "Older credentials of the app registration stay valid until they expire; list or remove them with"
  echo "  az ad app credential list --id $client_id --query \"[].{name:displayName, keyId:keyId, end:endDateTime}\""

  # Key Vault references are resolved when the app starts: restart it to pick up the new secret.
  if [ -n "${AZURE_FUNCTION_APP_NAME:-}" ] && [ -n "${AZURE_RESOURCE_GROUP:-}" ]; then
    az functionapp restart --name "$AZURE_FUNCTION_APP_NAME" --resource-group "$AZURE_RESOURCE_GROUP" \
      ${AZURE_SUBSCRIPTION_ID:+--subscription "$AZURE_SUBSCRIPTION_ID"} --output none || true
  fi
}

case "$mode" in
  keyVaultReference | runtimeSecretUri)
    store_client_secret
    ;;
  federated)
    echo "Credential mode 'federated': the app registration trusts the function app's managed identity;"
    echo "no client secret exists."
    ;;
  *)
    echo "Unknown POWERBI_CREDENTIAL_MODE '$mode'." >&2
    exit 1
    ;;
esac

store_cache_encryption_key() {
  # Does the vault hold the key?
  local existing attempt stored=false
  existing="$(vault_secret_list "[?name=='${cache_key_name}'] | [0].id")" || return 1

  if [ -n "$existing" ] && [ "${CACHE_ROTATE_ENCRYPTION_KEY:-false}" != "true" ]; then
    echo "Key Vault $vault already holds the shared cache's encryption key $cache_key_name: kept."
    echo "(Rotate it with 'azd env set CACHE_ROTATE_ENCRYPTION_KEY true' and 'azd provision': docs/DEPLOY.md.)"
    return 0
  fi
  if [ -n "$existing" ]; then
    echo "CACHE_ROTATE_ENCRYPTION_KEY=true: adding a new version of $cache_key_name; the broker still decrypts"
    echo "with the previous one. Set it back with 'azd env set CACHE_ROTATE_ENCRYPTION_KEY false'."
  else
    echo "Creating the shared cache's encryption key $cache_key_name in Key Vault $vault..."
  fi
  # 32 random bytes from openssl, base64 without the newline, piped straight into Key Vault.
  for attempt in 1 2 3 4 5 6 7 8 9 10; do
    if openssl rand -base64 32 | tr -d '\n' | az keyvault secret set --vault-name "$vault" \
        --name "$cache_key_name" --file /dev/stdin --encoding utf-8 --content-type "text/plain" \
        --tags "purpose=token-broker-cache-encryption" "format=base64-32-bytes" --output none; then
      stored=true
      break
    fi
    if [ "$attempt" != 10 ]; then
      echo "Waiting for permission to write secrets to Key Vault $vault ($attempt/10)..."
      sleep "$vault_wait_seconds"
    fi
  done
  if [ "$stored" != true ]; then
    echo "Could not store $cache_key_name in Key Vault $vault: does the signed-in user hold Key Vault Secrets" \
      "Officer on it? (A deleted secret of that name must be recovered first: az keyvault secret recover" \
      "--vault-name $vault --name $cache_key_name.)" >&2
    return 1
  fi
  echo "Stored the shared cache's encryption key in Key Vault $vault as $cache_key_name."
  # Restart the app so that every instance loads the new version now.
  if [ -n "${AZURE_FUNCTION_APP_NAME:-}" ] && [ -n "${AZURE_RESOURCE_GROUP:-}" ]; then
    az functionapp restart --name "$AZURE_FUNCTION_APP_NAME" --resource-group "$AZURE_RESOURCE_GROUP" \
      ${AZURE_SUBSCRIPTION_ID:+--subscription "$AZURE_SUBSCRIPTION_ID"} --output none || true
  fi
}

if [ -n "${AZURE_REDIS_NAME:-}" ]; then
  store_cache_encryption_key
fi

if [ -n "${AZURE_APPCONFIG_ENDPOINT:-}" ]; then
  python3 "$(dirname "$0")/appconfig_keyvalues.py"
  # A running broker reloads on the sentinel only every AZURE_APPCONFIG_REFRESH_SECONDS: restart it now.
  if [ -n "${AZURE_FUNCTION_APP_NAME:-}" ] && [ -n "${AZURE_RESOURCE_GROUP:-}" ]; then
    az functionapp restart --name "$AZURE_FUNCTION_APP_NAME" --resource-group "$AZURE_RESOURCE_GROUP" \
      ${AZURE_SUBSCRIPTION_ID:+--subscription "$AZURE_SUBSCRIPTION_ID"} --output none || true
  fi
fi

sp_id="${POWERBI_SERVICE_PRINCIPAL_ID:-}"
if [ -z "$sp_id" ]; then
  sp_id="$(az ad sp show --id "$client_id" --query id --output tsv 2>/dev/null || true)"
fi
group_name="${POWERBI_SECURITY_GROUP_NAME:-<a security group containing the service principal>}"
group_id="${POWERBI_SECURITY_GROUP_ID:-<security group object id>}"
workspace="${POWERBI_WORKSPACE_ID:-<workspace id>}"

cat <<EOF

==================================================================================================
Power BI admin steps (once per tenant / workspace; they cannot be automated by this template)
==================================================================================================
App registration (POWERBI_CLIENT_ID): $client_id
Service principal object id:          ${sp_id:-<run: az ad sp show --id $client_id --query id -o tsv>}
Security group:                       $group_name ($group_id)

1. Tenant setting (a Fabric / Power BI administrator):
   Power BI admin portal > Tenant settings > Developer settings >
   "Service principals can call Fabric public APIs": Enabled, "Specific security groups":
   add the security group "$group_name". The change can take 15 minutes to apply.

2. Workspace access (a workspace Admin), for each workspace the apps show: add the service principal
   as Viewer (Manage access > Add people or groups), or with the REST API
     POST $api_host/v1.0/myorg/groups/{groupId}/users
     {"identifier": "<service principal object id>", "principalType": "App", "groupUserAccessRight": "Viewer"}
   for example with the Azure CLI:
     az rest --method post \\
       --url "$api_host/v1.0/myorg/groups/$workspace/users" \\
       --resource "$pbi_resource" \\
       --headers "Content-Type=application/json" \\
       --body '{"identifier": "${sp_id:-<service principal object id>}", "principalType": "App", "groupUserAccessRight": "Viewer"}'
   (To add the whole security group instead: "identifier": "$group_id", "principalType": "Group".)
EOF

if [ -n "${CALLER_API_CLIENT_ID:-}" ]; then
  cat <<EOF

3. Callers: assign the app role Report.Viewer to the users or groups who may see reports
   (Entra ID > Enterprise applications > the API app ${CALLER_API_CLIENT_ID} > Users and groups).
   Single-page apps request the scope ${CALLER_API_SCOPE:-api://<API>/access_as_user} with MSAL.js.
EOF
fi

if [ "$grant_type" = "on_behalf_of" ]; then
  cat <<EOF

4. on_behalf_of: add the delegated Power BI Service permissions the reports need (for example
   Report.Read.All) to app registration $client_id and grant admin consent (API permissions page).
EOF
fi

if [ "$grant_type" = "password" ]; then
  cat <<EOF

5. password grant (legacy): store the master user's password in Key Vault yourself, without echoing it:
     read -rsp 'Master user password: ' pw && printf '%s' "\$pw" | az keyvault secret set \\
       --vault-name $vault --name $password_name --file /dev/stdin --encoding utf-8 --output none; unset pw
EOF
fi
echo
