// The Power BI token broker on Azure Functions Flex Consumption, deployed with `azd up`.
// Follows the Azure-Samples azd Functions Flex Consumption (Python) template: subscription scope, one
// resource group, names from abbreviations.json and a resourceToken, azd-env-name tags on every resource,
// azd-service-name 'api' on the function app. See docs/DEPLOY.md.
//
// The client secret is never in this template, a parameter or an output: depending on credentialMode the
// postprovision hook (infra/hooks/postprovision.sh) creates it and writes it straight into Key Vault, or no
// secret exists at all (federated).
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; used in resource names, tags and display names.')
param environmentName string

// Regions that offer Flex Consumption, as in the azd Flex template (Azure-Samples/
// functions-quickstart-python-http-azd). The list grows: check `az functionapp list-flexconsumption-locations`
// and add a region here when Microsoft adds one (docs/DEPLOY.md).
@minLength(1)
@allowed([
  'australiaeast'
  'australiasoutheast'
  'brazilsouth'
  'canadacentral'
  'centralindia'
  'centralus'
  'eastasia'
  'eastus'
  'eastus2'
  'eastus2euap'
  'francecentral'
  'germanywestcentral'
  'italynorth'
  'japaneast'
  'koreacentral'
  'northcentralus'
  'northeurope'
  'norwayeast'
  'southafricanorth'
  'southcentralus'
  'southeastasia'
  'southindia'
  'spaincentral'
  'swedencentral'
  'uaenorth'
  'uksouth'
  'ukwest'
  'westcentralus'
  'westeurope'
  'westus'
  'westus2'
  'westus3'
])
@description('Region of every resource. It must offer Flex Consumption (az functionapp list-flexconsumption-locations).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Resource id of an existing action group the alert rules notify (docs/OPERATIONS.md). Empty: none.')
param alertActionGroupId string = ''

@description('E-mail address for a new action group the alert rules notify. Empty: no action group is created.')
param alertEmailAddress string = ''

@description('Object id of the user or service principal running azd (AZURE_PRINCIPAL_ID). It gets the data-plane roles the postprovision hook and App Configuration need, and owns the app registrations. Empty: none.')
param principalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
])
@description('Type of principalId: User, or ServicePrincipal when azd runs in a pipeline.')
param principalType string = 'User'

@description('Name of the resource group; default rg-<environmentName>.')
param resourceGroupName string = ''

@allowed([
  'keyVaultReference'
  'runtimeSecretUri'
  'federated'
])
@description('keyVaultReference: POWERBI_CLIENT_SECRET is a Key Vault reference resolved by the platform. runtimeSecretUri: POWERBI_CLIENT_SECRET_URI, read by the broker at run time with its managed identity. federated: no secret at all; the managed identity is a federated credential of the app registration.')
param credentialMode string = 'keyVaultReference'

@allowed([
  'client_credentials'
  'on_behalf_of'
  'password'
])
@description('POWERBI_GRANT_TYPE. password is legacy: store the master user\'s password in Key Vault as powerbi-master-password yourself.')
param powerbiGrantType string = 'client_credentials'

@description('POWERBI_USERNAME: the master user (password grant only).')
param powerbiUsername string = ''

// The Microsoft Graph Bicep extension (entra.bicep) runs in the public Entra ID cloud only; these are the
// Power BI clouds reachable with a public-cloud Entra ID tenant (USGov is GCC).
@allowed([
  'Public'
  'USGov'
])
@description('POWERBI_CLOUD: which Power BI cloud the broker calls.')
param powerbiCloud string = 'Public'

@description('Create the app registrations, service principal and security group with the Microsoft Graph Bicep extension (needs Application Developer or Cloud Application Administrator). false: use powerbiClientId and callerJwtAudience.')
param createEntraApplications bool = true

@description('POWERBI_CLIENT_ID of an existing app registration, when createEntraApplications is false.')
param powerbiClientId string = ''

@description('CALLER_JWT_AUDIENCE (comma separated) of an existing API app registration, when createEntraApplications is false.')
param callerJwtAudience string = ''

@allowed([
  'jwt'
  'easyauth'
  'function_key'
  'anonymous'
])
@description('CALLER_AUTH: how callers are authenticated. jwt verifies Entra ID tokens issued for the API app registration.')
param callerAuth string = 'jwt'

@description('CALLER_REQUIRED_ROLES (jwt and easyauth only): callers need one of these app roles.')
param callerRequiredRoles string = 'Report.Viewer'

@description('CALLER_REQUIRED_SCOPES (jwt and easyauth only): callers need one of these scopes.')
param callerRequiredScopes string = ''

@minValue(0)
@description('CALLER_RATE_LIMIT_PER_MINUTE: token requests per caller per minute and instance; 0 turns it off.')
param callerRateLimitPerMinute int = 0

@description('Origins of the single-page apps allowed to call the broker from a browser (CORS), e.g. ["https://reports.contoso.com"]. Never "*".')
param corsAllowedOrigins array = []

@description('POWERBI_WORKSPACE_ID: default workspace; also used by the postprovision hook to print the exact command that gives the service principal access to it.')
param powerbiWorkspaceId string = ''

@description('EMBED_ALLOWED_WORKSPACES: workspace IDs embed tokens may be issued for, comma separated. Empty: embed tokens are off.')
param embedAllowedWorkspaces string = ''

@description('Keep the broker\'s non-secret settings in an Azure App Configuration store instead of app settings.')
param useAppConfiguration bool = false

@allowed([
  'free'
  'standard'
])
@description('App Configuration tier: free (one per subscription, no SLA) or standard.')
param appConfigurationSku string = 'free'

// The shared cache tier (app/redis.bicep, docs/DEPLOY.md "Shared cache (Azure Managed Redis)"): off by default.
@description('Create an Azure Managed Redis cache that every instance shares (embed tokens, Power BI metadata, single flight, the rate limit), with Entra ID authentication only, and point the broker at it (CACHE_REDIS_HOST, CACHE_REDIS_AUTH=entra, CACHE_ENCRYPTION_KEY_URI). The postprovision hook creates the encryption key.')
param enableRedis bool = false

@allowed([
  'Balanced_B0'
  'Balanced_B1'
  'Balanced_B3'
  'Balanced_B5'
  'Balanced_B10'
  'Balanced_B20'
  'Balanced_B50'
  'Balanced_B100'
  'MemoryOptimized_M10'
  'MemoryOptimized_M20'
  'MemoryOptimized_M50'
  'MemoryOptimized_M100'
  'ComputeOptimized_X3'
  'ComputeOptimized_X5'
  'ComputeOptimized_X10'
  'ComputeOptimized_X20'
  'ComputeOptimized_X50'
  'ComputeOptimized_X100'
])
@description('Azure Managed Redis SKU (enableRedis only). Balanced_B0 (0.5 GB) fits the broker\'s entries; larger SKUs add memory, connections and throughput.')
param redisSku string = 'Balanced_B0'

@description('Azure Managed Redis high availability (a replica; needed for the SLA). false halves the cost of a development cache.')
param redisHighAvailability bool = true

@allowed([
  'Enabled'
  'Disabled'
])
@description('Public network access to the cache (always TLS and Entra ID only). Disabled: only through a private endpoint and virtual network integration you add; this template creates neither.')
param redisPublicNetworkAccess string = 'Enabled'

@minValue(7)
@maxValue(90)
@description('Soft-delete retention of the Key Vault, days. With purge protection the vault name stays reserved this long after azd down.')
param keyVaultRetentionInDays int = 7

@minValue(40)
@maxValue(1000)
@description('Most instances the function app scales out to (Flex Consumption accepts 40-1000).')
param maximumInstanceCount int = 100

@minValue(1)
@maxValue(1000)
@description('HTTP requests one instance handles at once (Flex Consumption perInstanceConcurrency); measured in docs/PERFORMANCE.md.')
param httpPerInstanceConcurrency int = 8

@allowed([
  512
  2048
  4096
])
@description('Memory of each function app instance, MB.')
param instanceMemoryMB int = 2048

var abbrs = loadJsonContent('./abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}

var functionAppName = '${abbrs.webSitesFunctions}api-${resourceToken}'
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}-${take(toLower(uniqueString(functionAppName, resourceToken)), 7)}'
var keyVaultName = '${abbrs.keyVaultVaults}${resourceToken}'
// Key Vault secret names (names, never values). The postprovision hook writes the client secret.
var clientSecretName = 'powerbi-client-secret'
var masterPasswordName = 'powerbi-master-password'
// The shared cache's AES-GCM key (base64 of 32 random bytes): the postprovision hook creates it when it does not
// exist, never replaces it (rotation is a new version: docs/DEPLOY.md); Bicep has no good random source.
var cacheEncryptionKeySecretName = 'cache-encryption-key'

var isPasswordGrant = powerbiGrantType == 'password'
var needsVaultSecrets = (credentialMode != 'federated') || isPasswordGrant
var callerHasIdentity = (callerAuth == 'jwt') || (callerAuth == 'easyauth')
// Audience of the managed identity token used as a client assertion (federated mode). Both Power BI clouds
// allowed above sign in with the commercial Entra ID, whose token exchange audience this is.
var tokenExchangeAudience = 'api://AzureADTokenExchange'

resource rg 'Microsoft.Resources/resourceGroups@2021-04-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}api-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
  }
}

// The workbook and alert rules over the broker's OpenTelemetry metrics and spans (docs/OPERATIONS.md).
module observability 'app/observability.bicep' = {
  name: 'observability'
  scope: rg
  params: {
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    actionGroupName: '${abbrs.insightsActionGroups}${resourceToken}'
    alertActionGroupId: alertActionGroupId
    alertEmailAddress: alertEmailAddress
    location: location
    tags: tags
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
  }
}

module keyVault 'app/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: keyVaultName
    location: location
    tags: tags
    softDeleteRetentionInDays: keyVaultRetentionInDays
  }
}

module entra 'app/entra.bicep' = if (createEntraApplications) {
  name: 'entra'
  scope: rg
  params: {
    environmentName: environmentName
    resourceToken: resourceToken
    credentialMode: credentialMode
    grantType: powerbiGrantType
    identityPrincipalId: identity.outputs.principalId
    ownerPrincipalId: principalId
    tokenExchangeAudience: tokenExchangeAudience
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    identityPrincipalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    keyVaultName: keyVault.outputs.name
    deployerPrincipalId: principalId
    deployerPrincipalType: principalType
    // The hook writes the client secret, and with the shared cache its encryption key.
    deployerWritesToVault: needsVaultSecrets || enableRedis
  }
}

module redis 'app/redis.bicep' = if (enableRedis) {
  name: 'redis'
  scope: rg
  params: {
    name: '${abbrs.cacheRedisEnterprise}${resourceToken}'
    location: location
    tags: tags
    skuName: redisSku
    highAvailability: redisHighAvailability
    publicNetworkAccess: redisPublicNetworkAccess
    identityPrincipalId: identity.outputs.principalId
  }
}

var appClientId = createEntraApplications ? entra.outputs.powerbiClientId : powerbiClientId
var appCallerJwtAudience = createEntraApplications ? entra.outputs.callerJwtAudience : callerJwtAudience
var callerJwtIssuer = '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
var clientSecretUri = '${keyVault.outputs.uri}secrets/${clientSecretName}'
var masterPasswordUri = '${keyVault.outputs.uri}secrets/${masterPasswordName}'
// Versionless: the broker reads the current version to encrypt and the previous one to decrypt.
var cacheEncryptionKeyUri = '${keyVault.outputs.uri}secrets/${cacheEncryptionKeySecretName}'
var redisName = enableRedis ? redis.outputs.name : ''
var redisEndpoint = enableRedis ? '${redis.outputs.hostName}:${redis.outputs.port}' : ''

// ---- The broker's settings (token_broker/settings.py is the contract; tests/test_infra.py checks it) ----

// Bootstrap settings: the broker reads them from the process environment only (a bootstrap key found in the
// App Configuration store is ignored), because they decide how the app is indexed and where the store is:
// CALLER_AUTH gives the routes' auth level when the worker indexes them, before any store is read. So they
// are always app settings, never key-values. (AZURE_CLIENT_ID is one too; api.bicep sets it.)
// Refresh interval: every instance asks the store once per interval whether the sentinel changed. The free
// tier allows 1,000 requests a day per store, which a 60 s interval exceeds on one busy instance (1,440 a
// day); 3,600 s keeps ~40 busy instance-days inside the quota. Standard has no daily quota.
var appConfigurationRefreshSeconds = (appConfigurationSku == 'free') ? 3600 : 60
var bootstrapAppSettings = union(
  {
    CALLER_AUTH: callerAuth
  },
  useAppConfiguration ? {
    AZURE_APPCONFIG_ENDPOINT: appConfigurationEndpoint
    AZURE_APPCONFIG_REFRESH_SECONDS: string(appConfigurationRefreshSeconds)
  } : {}
)

// Non-secret settings the deployment knows, including where the credential comes from when it is not a
// Key Vault reference (runtimeSecretUri: the secret's URI; federated: the managed identity).
var brokerAppSettings = union(
  {
    POWERBI_TENANT_ID: tenant().tenantId
    POWERBI_CLIENT_ID: appClientId
    POWERBI_GRANT_TYPE: powerbiGrantType
    POWERBI_CLOUD: powerbiCloud
    CALLER_RATE_LIMIT_PER_MINUTE: string(callerRateLimitPerMinute)
  },
  (callerAuth == 'jwt') ? {
    CALLER_JWT_ISSUER: callerJwtIssuer
    CALLER_JWT_AUDIENCE: appCallerJwtAudience
  } : {},
  callerHasIdentity ? {
    CALLER_REQUIRED_ROLES: callerRequiredRoles
    CALLER_REQUIRED_SCOPES: callerRequiredScopes
  } : {},
  isPasswordGrant ? {
    POWERBI_USERNAME: powerbiUsername
  } : {},
  (!empty(powerbiWorkspaceId)) ? {
    POWERBI_WORKSPACE_ID: powerbiWorkspaceId
  } : {},
  (!empty(embedAllowedWorkspaces)) ? {
    EMBED_ALLOWED_WORKSPACES: embedAllowedWorkspaces
  } : {},
  (credentialMode == 'runtimeSecretUri') ? {
    POWERBI_CLIENT_SECRET_URI: clientSecretUri
  } : {},
  (credentialMode == 'federated') ? {
    POWERBI_CLIENT_ASSERTION: 'managed_identity'
  } : {},
  (isPasswordGrant && (credentialMode == 'runtimeSecretUri')) ? {
    POWERBI_PASSWORD_URI: masterPasswordUri
  } : {}
)

// With enableRedis, the shared cache: CACHE_REDIS_HOST (host:10000, TLS), CACHE_REDIS_AUTH=entra (the managed
// identity's Entra ID token; AZURE_CLIENT_ID selects it) and CACHE_ENCRYPTION_KEY_URI (the vault key the values
// are encrypted under, versionless). All three or none. Always app settings, also with App Configuration: like
// AZURE_CLIENT_ID they wire the app to resources of this deployment, they reach the broker however it reads
// them (from its environment at bootstrap, or with its other settings: app settings win over the store), and
// turning the cache off removes them, which the store's writer would not (it never deletes a key-value).
var sharedCacheAppSettings = enableRedis ? {
  CACHE_REDIS_HOST: redisEndpoint
  CACHE_REDIS_AUTH: 'entra'
  CACHE_ENCRYPTION_KEY_URI: cacheEncryptionKeyUri
} : {}

// Secrets as Key Vault references resolved by the platform with keyVaultReferenceIdentity.
var keyVaultReferenceAppSettings = union(
  (credentialMode == 'keyVaultReference') ? {
    POWERBI_CLIENT_SECRET: '@Microsoft.KeyVault(VaultName=${keyVault.outputs.name};SecretName=${clientSecretName})'
  } : {},
  (isPasswordGrant && (credentialMode != 'runtimeSecretUri')) ? {
    POWERBI_PASSWORD: '@Microsoft.KeyVault(VaultName=${keyVault.outputs.name};SecretName=${masterPasswordName})'
  } : {}
)

// The same secrets as App Configuration Key Vault references (setting name: secret URI).
var keyVaultReferenceUris = union(
  (credentialMode == 'keyVaultReference') ? {
    POWERBI_CLIENT_SECRET: clientSecretUri
  } : {},
  (isPasswordGrant && (credentialMode != 'runtimeSecretUri')) ? {
    POWERBI_PASSWORD: masterPasswordUri
  } : {}
)

module appConfiguration 'app/appconfig.bicep' = if (useAppConfiguration) {
  name: 'appconfig'
  scope: rg
  params: {
    name: '${abbrs.appConfigurationConfigurationStores}${resourceToken}'
    location: location
    tags: tags
    sku: appConfigurationSku
    identityPrincipalId: identity.outputs.principalId
    deployerPrincipalId: principalId
    deployerPrincipalType: principalType
  }
}

var appConfigurationEndpoint = useAppConfiguration ? appConfiguration.outputs.endpoint : ''

// With App Configuration the app settings hold the bootstrap settings (and the shared cache's wiring) only;
// otherwise they hold everything.
var functionAppSettings = useAppConfiguration ? union(bootstrapAppSettings, sharedCacheAppSettings) : union(
  bootstrapAppSettings, brokerAppSettings, sharedCacheAppSettings, keyVaultReferenceAppSettings)

module api 'app/api.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: functionAppName
    planName: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: storage.outputs.deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    appSettings: functionAppSettings
    corsAllowedOrigins: corsAllowedOrigins
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    httpPerInstanceConcurrency: httpPerInstanceConcurrency
    // CALLER_AUTH=easyauth: App Service Authentication validates tokens for the API app registration.
    easyAuthEnabled: callerAuth == 'easyauth'
    easyAuthClientId: createEntraApplications ? entra.outputs.callerApiClientId : first(split(callerJwtAudience, ','))
    easyAuthIssuer: callerJwtIssuer
    easyAuthAllowedAudiences: split(appCallerJwtAudience, ',')
  }
  // The identity must hold its roles (storage, Key Vault) before the host starts.
  dependsOn: [
    rbac
  ]
}

// ---- Outputs: azd stores them in .azure/<env>/.env for the hooks. Never a secret. ----
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = api.outputs.name
output SERVICE_API_NAME string = api.outputs.name
output SERVICE_API_URI string = api.outputs.uri
output AZURE_MANAGED_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output AZURE_MANAGED_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_KEY_VAULT_URI string = keyVault.outputs.uri
output AZURE_APPCONFIG_ENDPOINT string = appConfigurationEndpoint
// What the postprovision hook writes to the store (infra/hooks/appconfig_keyvalues.py): non-secret settings, and
// setting name -> Key Vault secret URI. Never a bootstrap setting (tests/test_infra.py checks it).
output AZURE_APPCONFIG_SETTINGS object = useAppConfiguration ? brokerAppSettings : {}
output AZURE_APPCONFIG_KEYVAULT_REFERENCES object = useAppConfiguration ? keyVaultReferenceUris : {}
// The shared cache (empty without enableRedis); the postprovision hook creates the encryption key when it is set.
output AZURE_REDIS_NAME string = redisName
output AZURE_REDIS_ENDPOINT string = redisEndpoint
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
output POWERBI_TENANT_ID string = tenant().tenantId
output POWERBI_CLIENT_ID string = appClientId
output POWERBI_GRANT_TYPE string = powerbiGrantType
output POWERBI_CREDENTIAL_MODE string = credentialMode
output POWERBI_WORKSPACE_ID string = powerbiWorkspaceId
output POWERBI_CLOUD string = powerbiCloud
output POWERBI_SERVICE_PRINCIPAL_ID string = createEntraApplications ? entra.outputs.powerbiServicePrincipalId : ''
output POWERBI_SECURITY_GROUP_ID string = createEntraApplications ? entra.outputs.securityGroupId : ''
output POWERBI_SECURITY_GROUP_NAME string = createEntraApplications ? entra.outputs.securityGroupName : ''
output CALLER_AUTH string = callerAuth
output CALLER_JWT_ISSUER string = callerJwtIssuer
output CALLER_JWT_AUDIENCE string = appCallerJwtAudience
output CALLER_API_CLIENT_ID string = createEntraApplications ? entra.outputs.callerApiClientId : ''
output CALLER_API_SCOPE string = createEntraApplications ? entra.outputs.callerApiScope : ''
