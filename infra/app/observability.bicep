// The broker's workbook and alert rules over the OpenTelemetry metrics and spans the Python worker exports to
// Application Insights (docs/OPERATIONS.md: what each one means and what to do). Counters arrive in customMetrics
// with delta temporality (sum(value) is a count), upstream spans in dependencies (duration in milliseconds).
// Each rule's query totals its window into one number; the breakdown queries are in docs/OPERATIONS.md.
param applicationInsightsName string
param location string
param tags object

@description('Name of the action group to create for alertEmailAddress (used only when it is set).')
param actionGroupName string

@description('Resource id of an existing action group every alert notifies. Empty: none.')
param alertActionGroupId string = ''

@description('E-mail address for a new action group every alert notifies. Empty: no action group is created.')
param alertEmailAddress string = ''

@minValue(0)
@maxValue(4)
@description('Severity of the alerts (0 critical ... 4 verbose).')
param alertSeverity int = 2

@description('Share of requests answered 5xx (percent) over 15 minutes that raises the 5xx alert.')
param serverErrorPercentThreshold int = 5

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(alertEmailAddress)) {
  name: actionGroupName
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'tokenbroker'
    enabled: true
    emailReceivers: [
      {
        name: 'operator'
        emailAddress: alertEmailAddress
        useCommonAlertSchema: true
      }
    ]
  }
}

var actionGroupIds = union(empty(alertActionGroupId) ? [] : [alertActionGroupId],
  empty(alertEmailAddress) ? [] : [actionGroup.id])

// ---- KQL over the Application Insights schema (the rules and the workbook are scoped to the component) ----

var requestsByStatus = '''
customMetrics
| where name == "token_broker.requests"
| extend status = toint(customDimensions["http.response.status_code"])
| summarize requests = sum(value), serverErrors = sumif(value, status >= 500)
| where requests >= 20
| extend serverErrorPercent = 100.0 * serverErrors / requests
'''

var azureAdErrors = '''
customMetrics
| where name == "token_broker.requests"
| extend code = tostring(customDimensions["token_broker.problem.code"])
| where code startswith "aad_"
| summarize errors = sum(value)
'''

var powerBiThrottled = '''
customMetrics
| where name == "token_broker.upstream.calls"
| where tostring(customDimensions["token_broker.upstream"]) == "powerbi"
| where toint(customDimensions["http.response.status_code"]) == 429
| summarize throttled = sum(value)
'''

var keyVaultFailures = '''
customMetrics
| where name == "token_broker.upstream.calls"
| where tostring(customDimensions["token_broker.upstream"]) == "keyvault"
| where tostring(customDimensions["token_broker.upstream.outcome"]) == "error"
| summarize failures = sum(value)
'''

var alerts = [
  {
    name: 'server-errors'
    displayName: 'Token broker: 5xx responses'
    description: 'More than ${serverErrorPercentThreshold}% of requests answered 5xx in 15 minutes (at least 20 requests). docs/OPERATIONS.md#alert-5xx-rate'
    query: requestsByStatus
    measure: 'serverErrorPercent'
    threshold: serverErrorPercentThreshold
  }
  {
    name: 'azure-ad-errors'
    displayName: 'Token broker: Azure AD errors (aad_*)'
    description: 'Requests failed with an aad_* problem code: the credential, consent or tenant needs attention. docs/OPERATIONS.md#alert-aad-errors'
    query: azureAdErrors
    measure: 'errors'
    threshold: 0
  }
  {
    name: 'powerbi-throttled'
    displayName: 'Token broker: Power BI 429 (throttled)'
    description: 'Power BI answered 429 Too Many Requests. docs/OPERATIONS.md#alert-power-bi-429'
    query: powerBiThrottled
    measure: 'throttled'
    threshold: 0
  }
  {
    name: 'keyvault-failures'
    displayName: 'Token broker: Key Vault failures'
    description: 'Reading a secret from Key Vault failed. docs/OPERATIONS.md#alert-key-vault-failures'
    query: keyVaultFailures
    measure: 'failures'
    threshold: 0
  }
]

resource alertRules 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [for alert in alerts: {
  name: '${applicationInsightsName}-${alert.name}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: alert.displayName
    description: alert.description
    severity: alertSeverity
    enabled: true
    scopes: [
      applicationInsights.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    autoMitigate: true
    criteria: {
      allOf: [
        {
          query: alert.query
          timeAggregation: 'Maximum'
          metricMeasureColumn: alert.measure
          operator: 'GreaterThan'
          threshold: alert.threshold
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: actionGroupIds
    }
  }
}]

// ---- The workbook ----

var workbookQueries = [
  {
    title: 'Cache hit ratio (%) by cache'
    visualization: 'timechart'
    query: '''
customMetrics
| where name == "token_broker.cache.lookups"
| extend cache = tostring(customDimensions["token_broker.cache"]), result = tostring(customDimensions["token_broker.cache.result"])
| summarize lookups = sum(value), hits = sumif(value, result in ("hit", "stale_served", "coalesced")) by cache, bin(timestamp, 5m)
| project timestamp, cache, hitRatio = round(100.0 * hits / lookups, 1)
'''
  }
  {
    title: 'Upstream latency percentiles (ms)'
    visualization: 'table'
    query: '''
dependencies
| where isnotempty(customDimensions["token_broker.upstream"])
| extend upstream = tostring(customDimensions["token_broker.upstream"]), operation = tostring(customDimensions["token_broker.upstream.operation"])
| summarize calls = count(), failed = countif(success == false), p50 = percentile(duration, 50), p95 = percentile(duration, 95), p99 = percentile(duration, 99) by upstream, operation
| order by p95 desc
'''
  }
  {
    title: 'Upstream p95 latency (ms) over time'
    visualization: 'timechart'
    query: '''
dependencies
| where isnotempty(customDimensions["token_broker.upstream"])
| summarize p95 = percentile(duration, 95) by upstream = tostring(customDimensions["token_broker.upstream"]), bin(timestamp, 5m)
'''
  }
  {
    title: 'Problem codes over time'
    visualization: 'barchart'
    query: '''
customMetrics
| where name == "token_broker.requests"
| extend code = tostring(customDimensions["token_broker.problem.code"])
| where isnotempty(code)
| summarize responses = sum(value) by code, bin(timestamp, 15m)
'''
  }
  {
    title: 'Embed tokens minted per hour'
    visualization: 'barchart'
    query: '''
customMetrics
| where name == "token_broker.embed_tokens.minted"
| summarize tokens = sum(value) by bin(timestamp, 1h)
'''
  }
]

var workbookContent = {
  version: 'Notebook/1.0'
  items: concat([
    {
      type: 1
      name: 'intro'
      content: {
        json: '## Power BI token broker\nOpenTelemetry metrics and spans of the broker. docs/OPERATIONS.md explains each chart.'
      }
    }
  ], map(workbookQueries, q => {
    type: 3
    name: q.title
    content: {
      version: 'KqlItem/1.0'
      title: q.title
      query: q.query
      size: 0
      timeContext: {
        durationMs: 86400000
      }
      queryType: 0
      resourceType: 'microsoft.insights/components'
      visualization: q.visualization
    }
  }))
  fallbackResourceIds: [
    applicationInsights.id
  ]
  '$schema': 'https://github.com/Microsoft/Application-Insights-Workbooks/blob/master/schema/workbook.json'
}

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(applicationInsights.id, 'token-broker-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'Power BI token broker'
    category: 'workbook'
    sourceId: applicationInsights.id
    serializedData: string(workbookContent)
    version: 'Notebook/1.0'
  }
}

output workbookId string = workbook.id
output alertRuleNames array = [for (alert, i) in alerts: alertRules[i].name]
