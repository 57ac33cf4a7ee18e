// Azure Managed Redis (Microsoft.Cache/redisEnterprise): the broker's optional shared cache tier (L2), used by
// every Flex Consumption instance for embed tokens, Power BI metadata, cross-instance single flight and the
// shared rate limit. Deployed only with enableRedis (main.bicep); docs/DEPLOY.md "Shared cache".
//
// Microsoft Entra ID authentication only: access keys are disabled on the database, so no password exists to
// leak or rotate; the function app's user-assigned identity gets the built-in "default" data access policy
// through an access policy assignment. TLS only (clientProtocol Encrypted, TLS 1.2 minimum), port 10000.
// Nothing here is a secret: the outputs are a host name and resource names.
param name string
param location string
param tags object

// Azure Managed Redis SKUs (the Enterprise and EnterpriseFlash SKUs of the same resource type are the older
// Azure Cache for Redis Enterprise tiers). Balanced_B0 (0.5 GB) and Balanced_B1 (1 GB) are the smallest:
// an embed token entry is well under 10 KB, so B0 holds tens of thousands of them. Larger caches give more
// memory, connections and throughput (docs/DEPLOY.md).
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
@description('Azure Managed Redis SKU.')
param skuName string = 'Balanced_B0'

@description('Replicate the data to a second node (the SLA needs it). false halves the cost for development caches; the broker survives losing the cache, but every instance falls back to its own memory and to Power BI until it is back.')
param highAvailability bool = true

// Enabled: reachable from the function app's outbound addresses (Flex Consumption has no fixed outbound IPs)
// and from anywhere else, but only over TLS with an Entra ID token of an identity holding an access policy
// assignment; there is no password. Disabled: only through a private endpoint you add (docs/DEPLOY.md).
@allowed([
  'Enabled'
  'Disabled'
])
@description('Public network access to the cache. Disabled needs a private endpoint and a virtual network integration of the function app, which this template does not create.')
param publicNetworkAccess string = 'Enabled'

@description('Object (principal) id of the function app\'s user-assigned managed identity: it gets the "default" data access policy.')
param identityPrincipalId string

resource cluster 'Microsoft.Cache/redisEnterprise@2025-07-01' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: skuName
  }
  properties: {
    minimumTlsVersion: '1.2'
    highAvailability: highAvailability ? 'Enabled' : 'Disabled'
    publicNetworkAccess: publicNetworkAccess
  }
}

// The one database of an Azure Managed Redis cache is always named "default".
resource database 'Microsoft.Cache/redisEnterprise/databases@2025-07-01' = {
  parent: cluster
  name: 'default'
  properties: {
    // TLS only; port 10000 is the port Azure Managed Redis clients connect to.
    clientProtocol: 'Encrypted'
    port: 10000
    // EnterpriseCluster: one endpoint; the service's proxy routes every command to its shard. The broker uses
    // a plain (non-cluster) redis-py client, which would get MOVED errors from an OSSCluster database once it
    // has more than one shard. The price is a proxy hop and no client-side sharding, irrelevant at this load.
    // The policy cannot be changed after the database is created (only NoCluster can be changed).
    clusteringPolicy: 'EnterpriseCluster'
    // Every entry the broker writes has a TTL (its value's own expiry), so when memory runs out the least
    // recently used of them goes first; NoEviction would fail writes instead.
    evictionPolicy: 'VolatileLRU'
    // Microsoft Entra ID only: no access keys exist for anyone to use.
    accessKeysAuthentication: 'Disabled'
    // No persistence and no modules: a cache of values that Power BI can always mint again.
  }
}

// The function app's identity may use the database, with the built-in "default" access policy (the only
// one Azure Managed Redis supports). The assignment's name allows letters and digits only (no GUID).
resource appAccessPolicyAssignment 'Microsoft.Cache/redisEnterprise/databases/accessPolicyAssignments@2025-07-01' = {
  parent: database
  name: 'api${uniqueString(cluster.id, identityPrincipalId)}'
  properties: {
    accessPolicyName: 'default'
    user: {
      objectId: identityPrincipalId
    }
  }
}

output name string = cluster.name
output id string = cluster.id
output hostName string = cluster.properties.hostName
output port int = database.properties.port
