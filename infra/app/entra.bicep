// Entra ID objects of the broker, created with the Microsoft Graph Bicep extension (see ../bicepconfig.json):
//   - the app registration that calls Power BI (POWERBI_CLIENT_ID) and its service principal,
//   - in 'federated' credential mode, a federated identity credential that trusts the function app's
//     user-assigned managed identity (no client secret exists at all),
//   - the API app registration that callers (single-page apps) request tokens for (CALLER_JWT_AUDIENCE),
//   - a security group holding the service principal, for the Power BI tenant setting
//     "Service principals can call Fabric public APIs".
// Every object has a uniqueName, so re-deploying updates the same objects instead of creating new ones.
// The Microsoft Graph Bicep extension works in the Azure public cloud only.
extension microsoftGraphV1

@description('Name of the azd environment, shown in the display names.')
param environmentName string

@description('Token that makes the unique names unique per subscription, environment and location.')
param resourceToken string

@description('keyVaultReference | runtimeSecretUri | federated: how the broker proves the app registration\'s identity.')
param credentialMode string

@description('client_credentials | on_behalf_of | password (POWERBI_GRANT_TYPE).')
param grantType string

@description('Principal (object) id of the function app\'s user-assigned managed identity.')
param identityPrincipalId string

@description('Object id of the user or service principal running the deployment; made owner of the app registrations so that it can manage their credentials. Empty: no owner is added.')
param ownerPrincipalId string = ''

@description('Audience of the managed identity token exchanged for the app\'s token (federated mode): api://AzureADTokenExchange in the public cloud.')
param tokenExchangeAudience string = 'api://AzureADTokenExchange'

var isFederated = credentialMode == 'federated'
// With on_behalf_of the caller's token must be issued for the Power BI client app itself (Azure AD only
// exchanges tokens whose audience is the app doing the exchange), so that app exposes the API.
var isOnBehalfOf = grantType == 'on_behalf_of'
var owners = empty(ownerPrincipalId) ? [] : [ownerPrincipalId]

var powerbiAppUniqueName = 'powerbi-token-broker-${resourceToken}'
var callerApiUniqueName = 'powerbi-token-broker-api-${resourceToken}'
var securityGroupUniqueName = 'powerbi-token-broker-sp-${resourceToken}'

// identifierUris cannot be api://<appId>: appId is assigned by Entra ID when the application is created,
// and a resource cannot reference its own properties in its definition (that would take a second
// deployment pass that patches the application). api://<tenant id>/<uniqueName> is known up front, unique
// (uniqueName is unique in the tenant), stable across re-deployments and one of the secure identifier URI
// formats that the "uriAdditionWithoutUniqueTenantIdentifier" app management policy accepts. (A plain
// api://<uniqueName> is rejected by tenants that enforce that policy.) Version 2 access tokens carry the
// application (client) ID in "aud", which is why CALLER_JWT_AUDIENCE lists the client ID first.
var powerbiAppIdentifierUri = 'api://${tenant().tenantId}/${powerbiAppUniqueName}'
var callerApiIdentifierUri = 'api://${tenant().tenantId}/${callerApiUniqueName}'

// Scope and app role ids must be GUIDs that stay the same on every deployment: derive them.
var callerScopes = [
  {
    id: guid(callerApiUniqueName, 'access_as_user')
    value: 'access_as_user'
    type: 'User'
    isEnabled: true
    adminConsentDisplayName: 'Get Power BI tokens from the token broker'
    adminConsentDescription: 'Allows the app to call the Power BI token broker on behalf of the signed-in user.'
    userConsentDisplayName: 'Show you Power BI reports'
    userConsentDescription: 'Allows the app to get Power BI tokens from the token broker on your behalf.'
  }
]
var callerRoles = [
  {
    id: guid(callerApiUniqueName, 'Report.Viewer')
    value: 'Report.Viewer'
    displayName: 'Report viewer'
    description: 'May get Power BI tokens from the token broker (CALLER_REQUIRED_ROLES).'
    allowedMemberTypes: [
      'User'
      'Application'
    ]
    isEnabled: true
  }
]

// The Power BI app exposes the caller scope and role only with on_behalf_of, but it always declares them and
// switches isEnabled: Microsoft Graph refuses to remove an enabled scope or app role ("... must be disabled
// before it can be deleted"), so removing them when the grant type changes would fail the redeploy. A
// disabled scope or role cannot be requested, consented or assigned (docs/DEPLOY.md, "Redeploying").
var powerbiAppScopes = [for scope in callerScopes: union(scope, { isEnabled: isOnBehalfOf })]
var powerbiAppRoles = [for role in callerRoles: union(role, { isEnabled: isOnBehalfOf })]

// The app registration that signs in to Entra ID and calls Power BI.
resource powerbiApp 'Microsoft.Graph/applications@v1.0' = {
  uniqueName: powerbiAppUniqueName
  displayName: 'Power BI token broker (${environmentName})'
  signInAudience: 'AzureADMyOrg'
  notes: 'Created by azd (infra/app/entra.bicep). Its service principal belongs to the security group ${securityGroupUniqueName}.'
  owners: {
    relationships: owners
  }
  identifierUris: [
    powerbiAppIdentifierUri
  ]
  api: {
    requestedAccessTokenVersion: 2
    oauth2PermissionScopes: powerbiAppScopes
  }
  appRoles: powerbiAppRoles

  // federated mode: the function app's managed identity token is the client assertion (no secret).
  resource managedIdentityCredential 'federatedIdentityCredentials@v1.0' = if (isFederated) {
    name: '${powerbiApp.uniqueName}/function-app-managed-identity'
    description: 'The Power BI token broker\'s user-assigned managed identity (POWERBI_CLIENT_ASSERTION=managed_identity).'
    issuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
    subject: identityPrincipalId
    audiences: [
      tokenExchangeAudience
    ]
  }
}

// Service principals get the same owners as their applications: a pipeline identity holding only
// Application.ReadWrite.OwnedBy can update what it owns, and gets 403 on a service principal it does not.
resource powerbiServicePrincipal 'Microsoft.Graph/servicePrincipals@v1.0' = {
  appId: powerbiApp.appId
  owners: {
    relationships: owners
  }
}

// The API that callers request tokens for (not needed with on_behalf_of, see above).
resource callerApiApp 'Microsoft.Graph/applications@v1.0' = if (!isOnBehalfOf) {
  uniqueName: callerApiUniqueName
  displayName: 'Power BI token broker API (${environmentName})'
  signInAudience: 'AzureADMyOrg'
  notes: 'Created by azd (infra/app/entra.bicep). Assign the Report.Viewer role to the users and groups who may see reports.'
  owners: {
    relationships: owners
  }
  identifierUris: [
    callerApiIdentifierUri
  ]
  api: {
    requestedAccessTokenVersion: 2
    oauth2PermissionScopes: callerScopes
  }
  appRoles: callerRoles
}

// The enterprise application of the API: app role assignments (Report.Viewer) are made on it.
resource callerApiServicePrincipal 'Microsoft.Graph/servicePrincipals@v1.0' = if (!isOnBehalfOf) {
  appId: callerApiApp.appId
  owners: {
    relationships: owners
  }
}

// Power BI admins enable "Service principals can call Fabric public APIs" for this group.
resource powerbiSecurityGroup 'Microsoft.Graph/groups@v1.0' = {
  uniqueName: securityGroupUniqueName
  displayName: 'Power BI token broker service principals (${environmentName})'
  description: 'Service principals allowed to call the Power BI REST API (Power BI admin portal > Tenant settings > Developer settings).'
  mailEnabled: false
  mailNickname: securityGroupUniqueName
  securityEnabled: true
  owners: {
    relationships: owners
  }
  members: {
    relationships: [
      powerbiServicePrincipal.id
    ]
  }
}

var callerClientId = isOnBehalfOf ? powerbiApp.appId : callerApiApp.appId
var callerIdentifierUri = isOnBehalfOf ? powerbiAppIdentifierUri : callerApiIdentifierUri

output powerbiClientId string = powerbiApp.appId
output powerbiApplicationObjectId string = powerbiApp.id
output powerbiServicePrincipalId string = powerbiServicePrincipal.id
output securityGroupId string = powerbiSecurityGroup.id
output securityGroupName string = powerbiSecurityGroup.displayName
output callerApiClientId string = callerClientId
output callerApiIdentifierUri string = callerIdentifierUri
output callerApiScope string = '${callerIdentifierUri}/access_as_user'
// Version 2 tokens carry the client ID in aud; the identifier URI is accepted too.
output callerJwtAudience string = '${callerClientId},${callerIdentifierUri}'
