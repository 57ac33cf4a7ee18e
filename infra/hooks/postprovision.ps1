# azd postprovision hook (Windows, or PowerShell 7 anywhere). The same steps as postprovision.sh:
# 1. keyVaultReference / runtimeSecretUri modes: creates a client secret for the Power BI app registration
#    and writes it straight into Key Vault. The secret stays in this process's memory: it is created with
#    the Microsoft Graph addPassword call and stored with the Key Vault REST API (Invoke-RestMethod), so it
#    is never printed, never written to disk and never on a command line. A secret still valid for more
#    than POWERBI_CLIENT_SECRET_RENEW_DAYS is kept; POWERBI_ROTATE_CLIENT_SECRET=true forces a new one.
# 2. ENABLE_REDIS=true (AZURE_REDIS_NAME is set): creates the shared cache's encryption key cache-encryption-key
#    (the base64 of 32 bytes from RandomNumberGenerator) when it does not exist, stored with the Key Vault REST
#    API from this process's memory. An existing key is never replaced by a provision;
#    CACHE_ROTATE_ENCRYPTION_KEY=true adds a new version (the broker still decrypts with the previous one).
# 3. USE_APP_CONFIGURATION=true: writes the broker's settings into the App Configuration store
#    (appconfig_keyvalues.py says why this is not done by Resource Manager).
# 4. Prints the Power BI admin steps that no template can do.
# Needs the Azure CLI signed in to the same tenant (az login). In GitHub Actions (OpenID Connect) it signs the
# CLI in again with a fresh GitHub ID token first: the one azure/login used expires after about 5 minutes
# (AADSTS700024 after a longer provision); see postprovision.sh.
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

function Get-Setting([string]$Name, [string]$Default = '') {
    $value = [Environment]::GetEnvironmentVariable($Name)
    if ([string]::IsNullOrEmpty($value)) { return $Default }
    return $value
}

$mode = Get-Setting 'POWERBI_CREDENTIAL_MODE' 'keyVaultReference'
$grantType = Get-Setting 'POWERBI_GRANT_TYPE' 'client_credentials'
$vault = Get-Setting 'AZURE_KEY_VAULT_NAME'
$vaultUri = (Get-Setting 'AZURE_KEY_VAULT_URI' "https://$vault.vault.azure.net/").TrimEnd('/')
$clientId = Get-Setting 'POWERBI_CLIENT_ID'
$envName = Get-Setting 'AZURE_ENV_NAME' 'azd'
# Must match clientSecretName / masterPasswordName in infra/main.bicep (tests/test_infra.py checks it).
$secretName = 'powerbi-client-secret'
$passwordName = 'powerbi-master-password'
# Must match cacheEncryptionKeySecretName in infra/main.bicep (tests/test_infra.py checks it).
$cacheKeyName = 'cache-encryption-key'
# Seconds between the attempts while this deployment's Key Vault role assignment propagates.
$vaultWaitSeconds = [double](Get-Setting 'KEYVAULT_WRITE_WAIT_SECONDS' '30')
$validityDays = [int](Get-Setting 'POWERBI_CLIENT_SECRET_DAYS' '180')
$renewDays = [int](Get-Setting 'POWERBI_CLIENT_SECRET_RENEW_DAYS' '30')

if (-not $vault -or -not $clientId) {
    throw 'AZURE_KEY_VAULT_NAME or POWERBI_CLIENT_ID is not set: run this hook through azd (azd provision).'
}
if ((Get-Setting 'POWERBI_CLOUD' 'Public') -eq 'USGov') {
    $apiHost = 'https://api.powerbigov.us'; $pbiResource = 'https://analysis.usgovcloudapi.net/powerbi/api'
} else {
    $apiHost = 'https://api.powerbi.com'; $pbiResource = 'https://analysis.windows.net/powerbi/api'
}

function Update-GitHubOidcSignIn {
    $requestUrl = Get-Setting 'ACTIONS_ID_TOKEN_REQUEST_URL'
    $requestToken = Get-Setting 'ACTIONS_ID_TOKEN_REQUEST_TOKEN'
    $pipelineClientId = Get-Setting 'AZURE_CLIENT_ID'
    $tenantId = Get-Setting 'AZURE_TENANT_ID'
    if (-not $requestUrl -or -not $requestToken -or -not $pipelineClientId -or -not $tenantId) { return }
    # The request token stays in this process (a header of Invoke-RestMethod), never on a command line.
    $response = Invoke-RestMethod -Method Get -Headers @{ Authorization = "Bearer $requestToken" } `
        -Uri "$requestUrl&audience=api%3A%2F%2FAzureADTokenExchange"
    if (-not $response.value) { throw 'The GitHub ID token response has no value.' }
    az login --service-principal --username $pipelineClientId --tenant $tenantId `
        --federated-token $response.value --allow-no-subscriptions --output none
    if ($LASTEXITCODE -ne 0) { throw 'az login with a new GitHub ID token failed.' }
    $subscription = Get-Setting 'AZURE_SUBSCRIPTION_ID'
    if ($subscription) { az account set --subscription $subscription }
    # Every token this hook needs, now, while the assertion is fresh: the CLI reuses them for about an hour.
    az account get-access-token --output none
    az account get-access-token --resource https://vault.azure.net --output none
    az account get-access-token --resource-type ms-graph --output none
    if (Get-Setting 'AZURE_APPCONFIG_ENDPOINT') {
        az account get-access-token --resource https://azconfig.io --output none
    }
    Write-Host 'Signed the Azure CLI in again with a new GitHub ID token (OpenID Connect).'
}
Update-GitHubOidcSignIn

az account show --output none 2>$null
if ($LASTEXITCODE -ne 0) {
    throw "The Azure CLI is not signed in. Run 'az login', then 'azd hooks run postprovision'."
}

function Get-AccessToken([string]$Resource) {
    # The token comes back on az's standard output, never on a command line.
    $token = az account get-access-token --resource $Resource --query accessToken --output tsv
    if ($LASTEXITCODE -ne 0 -or -not $token) { throw "Could not get an access token for $Resource." }
    return $token
}

function Get-SecretVersions([string]$Name) {
    # The versions of secret $Name (metadata only: the versions list never returns values); none when it does not
    # exist (404). Retried while this deployment's role assignments propagate; throws after 10 tries.
    $vaultToken = Get-AccessToken 'https://vault.azure.net'
    $headers = @{ Authorization = "Bearer $vaultToken" }
    for ($attempt = 1; $attempt -le 10; $attempt++) {
        try {
            $versions = Invoke-RestMethod -Method Get -Headers $headers `
                -Uri "$vaultUri/secrets/$Name/versions?api-version=7.4"
            return @($versions.value | Where-Object { $_ })
        } catch {
            $status = $null
            if ($_.Exception.PSObject.Properties['Response'] -and $_.Exception.Response) {
                $status = [int]$_.Exception.Response.StatusCode
            }
            if ($status -eq 404) { return @() }
            if ($attempt -eq 10) { throw "Cannot read Key Vault ${vault}: does the signed-in user hold Key Vault Secrets Officer on it?" }
            Write-Host "Waiting for the Key Vault role assignment to take effect ($attempt/10)..."
            Start-Sleep -Seconds $vaultWaitSeconds
        }
    }
}

function Save-ClientSecret {
    $headers = @{ Authorization = "Bearer $(Get-AccessToken 'https://vault.azure.net')" }
    $expires = $null
    $latest = Get-SecretVersions $secretName | Where-Object { $_.attributes.enabled } |
        Sort-Object { $_.attributes.created } -Descending | Select-Object -First 1
    if ($latest -and $latest.attributes.PSObject.Properties['exp']) {
        $expires = [DateTimeOffset]::FromUnixTimeSeconds([long]$latest.attributes.exp).UtcDateTime
    }

    $rotate = (Get-Setting 'POWERBI_ROTATE_CLIENT_SECRET' 'false') -eq 'true'
    if ($expires -and -not $rotate -and $expires -gt (Get-Date).ToUniversalTime().AddDays($renewDays)) {
        Write-Host "Key Vault $vault already holds $secretName, valid until $($expires.ToString('u')): kept."
        Write-Host "(Set POWERBI_ROTATE_CLIENT_SECRET=true with 'azd env set' to create a new one.)"
        return
    }

    $endDate = (Get-Date).ToUniversalTime().AddDays($validityDays)
    $displayName = "azd $envName $((Get-Date).ToUniversalTime().ToString('yyyy-MM-dd'))"
    Write-Host "Creating a client secret '$displayName' for app registration $clientId (expires $($endDate.ToString('u')))..."
    $graphToken = Get-AccessToken 'https://graph.microsoft.com'
    $body = @{ passwordCredential = @{ displayName = $displayName; endDateTime = $endDate.ToString('o') } } |
        ConvertTo-Json -Depth 3
    $credential = Invoke-RestMethod -Method Post -ContentType 'application/json' -Body $body `
        -Headers @{ Authorization = "Bearer $graphToken" } `
        -Uri "https://graph.microsoft.com/v1.0/applications(appId='$clientId')/addPassword"

    $secretBody = @{
        value       = $credential.secretText
        contentType = 'text/plain'
        attributes  = @{ exp = [DateTimeOffset]::new($endDate).ToUnixTimeSeconds() }
        tags        = @{ 'app-client-id' = $clientId; credential = $displayName }
    } | ConvertTo-Json -Depth 3
    $credential = $null
    $stored = $false
    for ($attempt = 1; $attempt -le 10; $attempt++) {
        try {
            Invoke-RestMethod -Method Put -ContentType 'application/json' -Body $secretBody -Headers $headers `
                -Uri "$vaultUri/secrets/${secretName}?api-version=7.4" | Out-Null
            $stored = $true
            break
        } catch {
            Write-Host "Waiting for permission to write secrets to Key Vault $vault ($attempt/10)..."
            Start-Sleep -Seconds 30
        }
    }
    $secretBody = $null
    if (-not $stored) {
        throw ("The client secret '$displayName' was created but could not be stored in Key Vault $vault. " +
            "Delete it (az ad app credential list/delete --id $clientId) and run 'azd hooks run postprovision' again.")
    }
    Write-Host "Stored the client secret in Key Vault $vault as $secretName (expires $($endDate.ToString('u')))."
    Write-Host "Older credentials stay valid until they expire: az ad app credential list --id $clientId"

    # Key Vault references are resolved when the app starts: restart it to pick up the new secret.
    $app = Get-Setting 'AZURE_FUNCTION_APP_NAME'
    $group = Get-Setting 'AZURE_RESOURCE_GROUP'
    if ($app -and $group) {
        $subscription = Get-Setting 'AZURE_SUBSCRIPTION_ID'
        if ($subscription) {
            az functionapp restart --name $app --resource-group $group --subscription $subscription --output none
        } else {
            az functionapp restart --name $app --resource-group $group --output none
        }
    }
}

switch ($mode) {
    { $_ -in 'keyVaultReference', 'runtimeSecretUri' } { Save-ClientSecret }
    'federated' {
        Write-Host "Credential mode 'federated': the app registration trusts the function app's managed identity;"
        Write-Host 'no client secret exists.'
    }
    default { throw "Unknown POWERBI_CREDENTIAL_MODE '$mode'." }
}

function Save-CacheEncryptionKey {
    $headers = @{ Authorization = "Bearer $(Get-AccessToken 'https://vault.azure.net')" }
    $exists = @(Get-SecretVersions $cacheKeyName).Count -gt 0

    $rotate = (Get-Setting 'CACHE_ROTATE_ENCRYPTION_KEY' 'false') -eq 'true'
    if ($exists -and -not $rotate) {
        Write-Host "Key Vault $vault already holds the shared cache's encryption key ${cacheKeyName}: kept."
        Write-Host "(Rotate it with 'azd env set CACHE_ROTATE_ENCRYPTION_KEY true' and 'azd provision': docs/DEPLOY.md.)"
        return
    }
    if ($exists) {
        Write-Host "CACHE_ROTATE_ENCRYPTION_KEY=true: adding a new version of $cacheKeyName; the broker still decrypts"
        Write-Host "with the previous one. Set it back with 'azd env set CACHE_ROTATE_ENCRYPTION_KEY false'."
    } else {
        Write-Host "Creating the shared cache's encryption key $cacheKeyName in Key Vault $vault..."
    }
    # 32 bytes from the operating system's cryptographic random generator, base64; only in this process.
    $secretBody = @{
        value       = [Convert]::ToBase64String([System.Security.Cryptography.RandomNumberGenerator]::GetBytes(32))
        contentType = 'text/plain'
        tags        = @{ purpose = 'token-broker-cache-encryption'; format = 'base64-32-bytes' }
    } | ConvertTo-Json -Depth 3
    $stored = $false
    for ($attempt = 1; $attempt -le 10; $attempt++) {
        try {
            Invoke-RestMethod -Method Put -ContentType 'application/json' -Body $secretBody -Headers $headers `
                -Uri "$vaultUri/secrets/${cacheKeyName}?api-version=7.4" | Out-Null
            $stored = $true
            break
        } catch {
            if ($attempt -lt 10) {
                Write-Host "Waiting for permission to write secrets to Key Vault $vault ($attempt/10)..."
                Start-Sleep -Seconds $vaultWaitSeconds
            }
        }
    }
    $secretBody = $null
    if (-not $stored) {
        throw ("Could not store $cacheKeyName in Key Vault ${vault}: does the signed-in user hold Key Vault Secrets " +
            "Officer on it? (A deleted secret of that name must be recovered first: az keyvault secret recover " +
            "--vault-name $vault --name $cacheKeyName.)")
    }
    Write-Host "Stored the shared cache's encryption key in Key Vault $vault as $cacheKeyName."
    # Restart the app so that every instance loads the new version now.
    $app = Get-Setting 'AZURE_FUNCTION_APP_NAME'
    $group = Get-Setting 'AZURE_RESOURCE_GROUP'
    if ($app -and $group) { az functionapp restart --name $app --resource-group $group --output none }
}

if (Get-Setting 'AZURE_REDIS_NAME') { Save-CacheEncryptionKey }

if (Get-Setting 'AZURE_APPCONFIG_ENDPOINT') {
    $python = Get-Command python3 -ErrorAction SilentlyContinue
    if (-not $python) { $python = Get-Command python -ErrorAction Stop }
    & $python.Source (Join-Path $PSScriptRoot 'appconfig_keyvalues.py')
    if ($LASTEXITCODE -ne 0) { throw 'Writing the settings to App Configuration failed (see above).' }
    # A running broker reloads on the sentinel only every AZURE_APPCONFIG_REFRESH_SECONDS: restart it now.
    $app = Get-Setting 'AZURE_FUNCTION_APP_NAME'
    $group = Get-Setting 'AZURE_RESOURCE_GROUP'
    if ($app -and $group) { az functionapp restart --name $app --resource-group $group --output none }
}

$spId = Get-Setting 'POWERBI_SERVICE_PRINCIPAL_ID'
if (-not $spId) { $spId = az ad sp show --id $clientId --query id --output tsv 2>$null }
if (-not $spId) { $spId = '<service principal object id>' }
$groupName = Get-Setting 'POWERBI_SECURITY_GROUP_NAME' '<a security group containing the service principal>'
$groupId = Get-Setting 'POWERBI_SECURITY_GROUP_ID' '<security group object id>'
$workspace = Get-Setting 'POWERBI_WORKSPACE_ID' '<workspace id>'

Write-Host @"

==================================================================================================
Power BI admin steps (once per tenant / workspace; they cannot be automated by this template)
==================================================================================================
App registration (POWERBI_CLIENT_ID): $clientId
Service principal object id:          $spId
Security group:                       $groupName ($groupId)

1. Tenant setting (a Fabric / Power BI administrator):
   Power BI admin portal > Tenant settings > Developer settings >
   "Service principals can call Fabric public APIs": Enabled, "Specific security groups":
   add the security group "$groupName". The change can take 15 minutes to apply.

2. Workspace access (a workspace Admin), for each workspace the apps show: add the service principal
   as Viewer (Manage access > Add people or groups), or with the REST API
     POST $apiHost/v1.0/myorg/groups/{groupId}/users
     {"identifier": "<service principal object id>", "principalType": "App", "groupUserAccessRight": "Viewer"}
   for example with the Azure CLI:
     az rest --method post ``
       --url "$apiHost/v1.0/myorg/groups/$workspace/users" ``
       --resource "$pbiResource" ``
       --headers "Content-Type=application/json" ``
       --body '{\"identifier\": \"$spId\", \"principalType\": \"App\", \"groupUserAccessRight\": \"Viewer\"}'
   (To add the whole security group instead: "identifier": "$groupId", "principalType": "Group".)
"@

$callerApi = Get-Setting 'CALLER_API_CLIENT_ID'
if ($callerApi) {
    Write-Host @"

3. Callers: assign the app role Report.Viewer to the users or groups who may see reports
   (Entra ID > Enterprise applications > the API app $callerApi > Users and groups).
   Single-page apps request the scope $(Get-Setting 'CALLER_API_SCOPE' 'api://<API>/access_as_user') with MSAL.js.
"@
}
if ($grantType -eq 'on_behalf_of') {
    Write-Host @"

4. on_behalf_of: add the delegated Power BI Service permissions the reports need (for example
   Report.Read.All) to app registration $clientId and grant admin consent (API permissions page).
"@
}
if ($grantType -eq 'password') {
    Write-Host @"

5. password grant (legacy): store the master user's password in Key Vault as '$passwordName' in vault
   $vault (Key Vault > Secrets > Generate/Import), or from this PowerShell without echoing it:
     `$pw = Read-Host 'Master user password' -AsSecureString
     Set-AzKeyVaultSecret -VaultName $vault -Name $passwordName -SecretValue `$pw
"@
}
