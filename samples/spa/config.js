// Settings of the sample. For a real tenant, edit DEFAULTS or put the same names in a config.json beside
// index.html (the offline stack serves one for its emulators). Every value can also come from the query string;
// query values are kept in sessionStorage, because the sign-in redirect comes back to the bare redirect URI
// without them. Precedence: query string (or the one kept), then config.json, then DEFAULTS.

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

/** config.json beside the page, or {} when there is none (a 404) or it cannot be read. */
async function fetchConfigFile() {
  try {
    const response = await fetch(new URL("config.json", window.location.href), { cache: "no-store" });
    if (!response.ok) return {};
    const values = await response.json();
    return values && typeof values === "object" ? values : {};
  } catch {
    return {};
  }
}

/** The settings: query string, else what an earlier query string left in sessionStorage, then config.json. */
export async function loadConfig(location = window.location, storage = window.sessionStorage) {
  const file = await fetchConfigFile();
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
  const fromFile = {};
  for (const name of Object.keys(DEFAULTS)) {
    if (name in file) fromFile[name] = String(file[name]);
  }
  const config = { ...DEFAULTS, ...fromFile, ...saved };
  config.refreshMarginSeconds = Number(config.refreshMarginSeconds) || DEFAULTS.refreshMarginSeconds;
  config.broker = String(config.broker).replace(/\/+$/, "");
  return Object.freeze(config);
}
