// Settings of the sample. For a real tenant, edit DEFAULTS. Every value can also come from the query string
// (the offline stack prints such a URL); query values are kept in sessionStorage, because the sign-in redirect
// comes back to the bare redirect URI without them.

export const DEFAULTS = Object.freeze({
  // Entra ID: https://login.microsoftonline.com/<tenant id>. Any other host must be trusted by MSAL.js
  // through knownAuthorities, which the app derives from this URL.
  authority: "https://login.microsoftonline.com/<tenant id>",
  clientId: "<client id of the SPA app registration (Single-page application platform)>",
  // The broker's API scope (README: "Recommended setup for a single-page app").
  scope: "api://<broker API client id>/access_as_user",
  // The function app's base URL; empty when the page is served by the same origin.
  broker: "",
  reportId: "<report id>",
  workspaceId: "", // empty: the broker's POWERBI_WORKSPACE_ID
  powerbiApiUrl: "https://api.powerbi.com/v1.0/myorg",
  // How the page reads Power BI data: "proxy" (default) through the broker's /api/powerbi, so the browser never
  // holds a Power BI token; "token" gets one from /api/token and calls powerbiApiUrl with it (README: "Reading
  // data without a Power BI token" says when to use which).
  dataMode: "proxy",
  // The embed token is renewed this long before it expires.
  refreshMarginSeconds: 300,
});

const STORAGE_KEY = "powerbi-token-broker-sample-config";

/** The settings: query string, else what an earlier query string left in sessionStorage, else DEFAULTS. */
export function loadConfig(location = window.location, storage = window.sessionStorage) {
  const query = new URLSearchParams(location.search);
  const fromQuery = {};
  for (const name of Object.keys(DEFAULTS)) {
    if (query.has(name)) fromQuery[name] = query.get(name);
  }
  let saved = {};
  if (Object.keys(fromQuery).length) {
    storage.setItem(STORAGE_KEY, JSON.stringify(fromQuery));
    saved = fromQuery;
  } else {
    try {
      saved = JSON.parse(storage.getItem(STORAGE_KEY) || "{}");
    } catch {
      saved = {};
    }
  }
  const config = { ...DEFAULTS, ...saved };
  config.refreshMarginSeconds = Number(config.refreshMarginSeconds) || DEFAULTS.refreshMarginSeconds;
  config.broker = String(config.broker).replace(/\/+$/, "");
  return Object.freeze(config);
}
