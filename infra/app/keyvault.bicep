// Key Vault for the broker's secrets (the client secret, the master user's password). Access is by Azure
// RBAC only: the function app's identity gets Key Vault Secrets User (rbac.bicep); the deploying user gets
// Key Vault Secrets Officer so that the postprovision hook can store the client secret. No secret is
// created here: the hook creates the client secret and writes it straight into the vault.
param name string
param location string
param tags object

@description('Days a deleted vault or secret is kept (7-90). Purge protection keeps the vault name reserved this long after the vault is deleted. Cannot be changed after the vault is created.')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 7

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

output name string = vault.name
output id string = vault.id
output uri string = vault.properties.vaultUri
