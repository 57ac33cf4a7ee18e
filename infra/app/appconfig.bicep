// Optional Azure App Configuration store (useAppConfiguration): the broker's non-secret settings as
// unlabelled key-values named TokenBroker:<SETTING>, Key Vault references (resolved by the broker with its
// managed identity) for secrets, and the sentinel key TokenBroker:Sentinel the broker watches for changes.
// Local (access key) authentication is disabled, so Azure Resource Manager writes the key-values with the
// deploying principal's own identity (dataPlaneProxy 'Pass-through'): it gets App Configuration Data
// Owner here. The function app's identity gets App Configuration Data Reader.
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

@description('Plain key-values: setting name to value.')
param settings object

@description('Key Vault references: setting name to the Key Vault secret URI.')
param keyVaultReferences object = {}

@description('Prefix of the broker\'s keys; the broker loads <prefix>* and trims it (KEY_PREFIX in token_broker/app_configuration.py).')
param settingPrefix string = 'TokenBroker:'

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

resource plainKeyValues 'Microsoft.AppConfiguration/configurationStores/keyValues@2024-05-01' = [for setting in items(settings): {
  parent: store
  name: '${settingPrefix}${setting.key}'
  properties: {
    value: setting.value
    contentType: 'text/plain'
  }
  dependsOn: [
    deployerDataOwner
  ]
}]

resource keyVaultReferenceKeyValues 'Microsoft.AppConfiguration/configurationStores/keyValues@2024-05-01' = [for reference in items(keyVaultReferences): {
  parent: store
  name: '${settingPrefix}${reference.key}'
  properties: {
    value: string({
      uri: reference.value
    })
    contentType: 'application/vnd.microsoft.appconfig.keyvaultref+json;charset=utf-8'
  }
  dependsOn: [
    deployerDataOwner
  ]
}]

// Running brokers watch this key and reload every setting when it changes; its value changes whenever a
// deployment changes the settings above.
resource sentinel 'Microsoft.AppConfiguration/configurationStores/keyValues@2024-05-01' = {
  parent: store
  name: '${settingPrefix}Sentinel'
  properties: {
    value: uniqueString(string(settings), string(keyVaultReferences))
    contentType: 'text/plain'
  }
  dependsOn: [
    plainKeyValues
    keyVaultReferenceKeyValues
  ]
}

output name string = store.name
output id string = store.id
output endpoint string = store.properties.endpoint
