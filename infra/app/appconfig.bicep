// Optional Azure App Configuration store (useAppConfiguration) for the broker's non-secret settings, as unlabelled
// key-values named TokenBroker:<SETTING>, Key Vault references for secrets, and the sentinel key
// TokenBroker:Sentinel the broker watches for changes. Local (access key) authentication is disabled.
//
// The key-values are written by the postprovision hook (infra/hooks/appconfig_keyvalues.py), not here: with access
// keys off, Resource Manager would write them with the deployer's identity, through the App Configuration Data
// Owner role this same deployment grants, and a new role assignment takes minutes to reach the data plane (403 on
// the first provision). The hook retries while it propagates. The function app's identity gets App
// Configuration Data Reader.
param name string
param location string
param tags object

@allowed([
  'free'
  'standard'
])
@description('free: one store per subscription, 10 MB, 1,000 requests a day, no SLA. standard: SLA, replicas, private endpoints; billed per day.')
param sku string = 'free'

@description('Principal (object) id of the function app\'s user-assigned managed identity.')
param identityPrincipalId string

@description('Object id of the user or service principal running azd: writes the key-values.')
param deployerPrincipalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param deployerPrincipalType string = 'User'

var appConfigurationDataReaderRoleId = '516239f1-63e1-4d78-a4de-a74fb236a071' // App Configuration Data Reader
var appConfigurationDataOwnerRoleId = '5ae67dd6-50cb-40e7-96ff-dc2bfa4b606b' // App Configuration Data Owner

resource store 'Microsoft.AppConfiguration/configurationStores@2024-05-01' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: sku
  }
  properties: {
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
    dataPlaneProxy: {
      authenticationMode: 'Pass-through'
      privateLinkDelegation: 'Disabled'
    }
  }
}

resource identityDataReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(store.id, identityPrincipalId, appConfigurationDataReaderRoleId)
  scope: store
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', appConfigurationDataReaderRoleId)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource deployerDataOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  name: guid(store.id, deployerPrincipalId, appConfigurationDataOwnerRoleId)
  scope: store
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', appConfigurationDataOwnerRoleId)
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
  }
}

output name string = store.name
output id string = store.id
output endpoint string = store.properties.endpoint
