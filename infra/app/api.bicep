// The Flex Consumption plan and the function app (Python 3.11, Linux) running the broker, with its
// user-assigned managed identity for everything: runtime storage, deployment package, Application
// Insights, Key Vault references, App Configuration and (federated mode) the Power BI client assertion.
param name string
param planName string
param location string
param tags object

@description('Resource id of the user-assigned managed identity.')
param identityId string

@description('Client id of the user-assigned managed identity.')
param identityClientId string

param storageAccountName string
param deploymentContainerName string
param applicationInsightsName string

@description('The broker\'s app settings (the settings contract); platform settings are added here.')
param appSettings object = {}

@description('Origins allowed to call the broker from a browser (CORS), e.g. https://reports.contoso.com. Never *.')
param corsAllowedOrigins array = []

// Flex Consumption accepts 40 to 1,000 instances (lower values are rejected when the app is created).
@minValue(40)
@maxValue(1000)
@description('Most instances the app scales out to (Flex Consumption: 40-1000).')
param maximumInstanceCount int = 100

// Measured on this broker (python -m benchmarks, suite concurrency; docs/PERFORMANCE.md "HTTP concurrency per
// instance"): a new instance serving a burst overlaps its Entra ID and Power BI round trips up to 8 requests in
// flight (160 embed requests: 702 ms with 1, 277 ms with 8, no better with 16 or 32), warm throughput is the same
// at 1-8 (the work is a cache hit under the GIL), and warm p99 at full occupancy grows past 8 (embed 15 ms at 8,
// 22 ms at 16, 37 ms at 32). Fewer would scale out to more instances, each with cold caches and a cold start.
// The Python worker's thread pool is sized to match (PYTHON_THREADPOOL_THREAD_COUNT).
@minValue(1)
@maxValue(1000)
@description('HTTP requests one instance handles at once (functionAppConfig.scaleAndConcurrency.triggers.http.perInstanceConcurrency); the Python worker gets as many threads, up to 32.')
param httpPerInstanceConcurrency int = 8

@allowed([
  512
  2048
  4096
])
@description('Memory of each instance, MB.')
param instanceMemoryMB int = 2048

@description('CALLER_AUTH=easyauth: turn on App Service Authentication with the Entra ID provider, requiring a valid token on every route except health and the OpenAPI description.')
param easyAuthEnabled bool = false

@description('Client (application) id of the API app registration Easy Auth validates tokens for.')
param easyAuthClientId string = ''

@description('Issuer Easy Auth trusts, e.g. https://login.microsoftonline.com/<tenant id>/v2.0.')
param easyAuthIssuer string = ''

@description('Audiences Easy Auth accepts: the API app\'s client id and identifier URI.')
param easyAuthAllowedAudiences array = []

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    // Key Vault references are resolved with the user-assigned identity, not a system-assigned one.
    keyVaultReferenceIdentity: identityId
    // No ftpsState: Flex Consumption rejects it (ARM error 51021, "Flex Consumption plan deprecations");
    // FTP is off through basicPublishingCredentialsPolicies below. tests/test_flex.py keeps it out.
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      http20Enabled: true
      cors: {
        allowedOrigins: corsAllowedOrigins
        supportCredentials: false
      }
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
        triggers: {
          http: {
            perInstanceConcurrency: httpPerInstanceConcurrency
          }
        }
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// No basic-auth publishing (FTP or SCM): azd deploys with Entra ID.
resource ftpPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

// Runtime settings: identity-based storage, Entra ID authenticated telemetry, the identity to use.
// (Flex Consumption sets FUNCTIONS_WORKER_RUNTIME and FUNCTIONS_EXTENSION_VERSION itself from
// functionAppConfig.runtime and rejects them as app settings; tests/test_flex.py holds the full list.)
// AzureWebJobsStorage__blobServiceUri, not __accountName: with an account name the host also builds queue
// and table clients and logs 403s every few minutes, because the identity holds blob roles only (an
// HTTP-only app needs nothing but blobs: host keys and leases). As the azd Flex template does.
var platformAppSettings = {
  AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  // The Python worker configures the Azure Monitor OpenTelemetry distro (azure-monitor-opentelemetry in
  // requirements.txt) before loading the app, so the broker's OpenTelemetry metrics and spans are exported;
  // host.json's telemetryMode OpenTelemetry makes the host export the same way (docs/OPERATIONS.md).
  PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'true'
  // Which identity the broker uses for Key Vault, App Configuration and federation.
  AZURE_CLIENT_ID: identityClientId
  // Python worker threads for synchronous functions (not in the Flex deprecation table; 32 is its maximum).
  PYTHON_THREADPOOL_THREAD_COUNT: string(min(httpPerInstanceConcurrency, 32))
}

resource siteAppSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: functionApp
  name: 'appsettings'
  properties: union(appSettings, platformAppSettings)
}

// App Service Authentication (Easy Auth) for CALLER_AUTH=easyauth: the platform validates the caller's Entra
// ID token before the broker runs and passes X-MS-CLIENT-PRINCIPAL; WEBSITE_AUTH_ENABLED=True tells the
// broker that the header comes from the platform. A bearer-token API: no client secret, no login redirects,
// no token store. Health and the OpenAPI description stay reachable without a token (smoke tests, tooling).
resource authSettings 'Microsoft.Web/sites/config@2024-04-01' = if (easyAuthEnabled) {
  parent: functionApp
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
      runtimeVersion: '~1'
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'Return401'
      excludedPaths: [
        '/api/health'
        '/api/openapi.json'
      ]
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: easyAuthClientId
          openIdIssuer: easyAuthIssuer
        }
        validation: {
          allowedAudiences: easyAuthAllowedAudiences
        }
      }
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
    httpSettings: {
      requireHttps: true
    }
  }
}

output name string = functionApp.name
output id string = functionApp.id
output uri string = 'https://${functionApp.properties.defaultHostName}'
