// The sample page: sign in, get a Power BI token from the broker, use it as a WireBootstrap data source
// would, and embed a report with an embed token that is refreshed before it expires.
import { loadConfig } from "./config.js";
import { createAuth } from "./auth.js";
import { createBroker, describeProblem } from "./broker.js";
import { createEmbedder } from "./embed.js";

let config; // loadConfig() in main()
const $ = (id) => document.getElementById(id);
const time = (date) => date.toLocaleTimeString([], { hour12: false });

function element(tag, text, attributes = {}) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

/** A short SHA-256 fingerprint, so that the page never shows a token itself. */
async function fingerprint(token) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(token));
  return [...new Uint8Array(digest)].slice(0, 6).map((b) => b.toString(16).padStart(2, "0")).join("");
}

function showProblem(error) {
  const about = describeProblem(error);
  const box = $("problem");
  box.replaceChildren(element("strong", about.headline), element("p", about.advice));
  if (about.title || about.detail) box.append(element("p", [about.title, about.detail].filter(Boolean).join(": ")));
  const facts = [about.status && `HTTP ${about.status}`, about.code && `code ${about.code}`,
                 about.requestId && `request ${about.requestId}`].filter(Boolean).join(" · ");
  if (facts) box.append(element("small", facts));
  box.dataset.status = String(about.status);
  box.dataset.code = about.code;
  box.hidden = false;
}

function clearProblem() {
  $("problem").hidden = true;
  $("hint").hidden = true;
}

function logEvent(text, attributes = {}) {
  const item = element("li", `${time(new Date())} ${text}`, attributes);
  $("events").prepend(item);
}

function renderAccount(auth) {
  const box = $("account");
  if (auth.account) {
    const signOut = element("button", "Sign out", { id: "sign-out", type: "button" });
    signOut.onclick = () => auth.signOut();
    box.replaceChildren(element("span", `Signed in as ${auth.account.name || ""} (${auth.account.username})`,
                                { id: "user" }), signOut);
  } else {
    const signIn = element("button", "Sign in", { id: "sign-in", type: "button" });
    signIn.onclick = () => auth.signIn();
    box.replaceChildren(element("span", "Not signed in", { id: "user" }), signIn);
  }
}

/**
 * Use the Power BI token the way a WireBootstrap for Power BI data source does: a REST URL plus a bearer
 * header. WireBootstrap makes the request itself; here fetch() stands in for it (Get Report In Group).
 */
async function loadDataSource(token) {
  const group = config.workspaceId ? `/groups/${encodeURIComponent(config.workspaceId)}` : "";
  const dataSource = {
    Url: `${config.powerbiApiUrl}${group}/reports/${encodeURIComponent(config.reportId)}`,
    Headers: { Authorization: "Bearer " + token.accessToken },
  };
  $("data-source").textContent =
    `const dataSource = {\n  Url: "${dataSource.Url}",\n  Headers: { Authorization: "Bearer " + token.accessToken },\n};`;
  const result = $("data-source-result");
  try {
    const response = await fetch(dataSource.Url, { headers: dataSource.Headers });
    if (!response.ok) throw new Error(`Power BI answered HTTP ${response.status}`);
    const report = await response.json();
    result.replaceChildren(element("li", `${report.name} (dataset ${report.datasetId})`,
                                   { "data-report-id": report.id, "data-mode": "token" }));
  } catch (error) {
    result.replaceChildren(element("li", `Power BI could not be read from this page: ${error.message}`,
                                   { class: "failed" }));
  }
}

/**
 * The same data call through the broker's Power BI proxy (the default): the URL's base is the broker instead of
 * api.powerbi.com and the bearer is the signed-in user's token for the broker, so no Power BI token reaches the
 * page. The proxy serves only workspace paths (groups/{id}/...) of the operations the broker allows.
 */
async function loadProxyData(broker) {
  const result = $("data-source-result");
  if (!config.workspaceId) {
    result.replaceChildren(element("li", "The proxy needs the workspace id: set workspaceId in config.js.",
                                   { class: "failed" }));
    return true;
  }
  const path = `/groups/${encodeURIComponent(config.workspaceId)}/reports/${encodeURIComponent(config.reportId)}`;
  $("data-source").textContent =
    `const dataSource = {\n  Url: "${config.broker || location.origin}/api/powerbi/v1.0/myorg${path}",\n` +
    `  Headers: { Authorization: "Bearer " + userAccessToken },  // your token for the broker, not Power BI's\n};`;
  try {
    const report = await broker.powerbi(path);
    clearProblem();
    result.replaceChildren(element("li", `${report.name} (dataset ${report.datasetId})`,
                                   { "data-report-id": report.id, "data-mode": "proxy" }));
    return true;
  } catch (error) {
    showProblem(error);
    return false;
  }
}

async function getToken(broker) {
  try {
    const token = await broker.token();
    clearProblem();
    $("token-info").replaceChildren(
      element("dt", "Type"), element("dd", token.tokenType),
      element("dt", "Expires"), element("dd", `${time(new Date(token.expiresOn))} (${token.expiresIn} s)`),
      element("dt", "Scope"), element("dd", token.scope),
      element("dt", "Fingerprint"), element("dd", await fingerprint(token.accessToken)),
    );
    if (config.dataMode === "token") await loadDataSource(token);
    return true;
  } catch (error) {
    showProblem(error);
    return false;
  }
}

async function embedReport(embedder) {
  try {
    await embedder.embed();
    clearProblem();
  } catch (error) {
    showProblem(error);
  }
}

// The embed token's expiry and the next refresh, with a countdown that ticks every second.
const countdown = { expiresOn: null, refreshAt: null, timer: 0 };

function showCountdown() {
  const left = (date) => `${time(date)} (in ${Math.max(0, Math.round((date - Date.now()) / 1000))} s)`;
  if (countdown.expiresOn) $("embed-expires").textContent = left(countdown.expiresOn);
  if (countdown.refreshAt) $("embed-refresh").textContent = left(countdown.refreshAt);
}

function startCountdown(expiresOn, refreshAt) {
  countdown.expiresOn = expiresOn;
  countdown.refreshAt = refreshAt ?? countdown.refreshAt;
  showCountdown();
  if (!countdown.timer) countdown.timer = setInterval(showCountdown, 1000);
}

async function onEmbedEvent(event) {
  if (event.kind === "embedded") {
    $("report-name").textContent = `${event.report.name} (${event.report.id})`;
    startCountdown(event.expiresOn);
    logEvent(`embed token ${await fingerprint(event.token)} handed to powerbi-client`, { "data-kind": "embedded" });
  } else if (event.kind === "scheduled") {
    startCountdown(event.expiresOn, event.refreshAt);
  } else if (event.kind === "rendered") {
    logEvent("report rendered", { "data-kind": "rendered" });
  } else if (event.kind === "refreshed") {
    clearProblem();
    logEvent(`${event.reason}: new embed token ${await fingerprint(event.token)}, valid until ${time(event.expiresOn)}`,
             { "data-kind": "refreshed", "data-reason": event.reason });
  } else if (event.kind === "loaded") {
    logEvent("report loaded", { "data-kind": "loaded" });
  } else if (event.kind === "error") {
    logEvent(`Power BI error: ${event.detail?.message || "unknown"}`, { "data-kind": "error" });
  }
}

async function main() {
  config = await loadConfig();
  let auth;
  try {
    auth = await createAuth(config);
  } catch (error) {
    showProblem(error);
    return;
  }
  renderAccount(auth);
  const broker = createBroker(config, auth);
  const embedder = createEmbedder({
    container: $("report"), broker, refreshMarginSeconds: config.refreshMarginSeconds,
    onEvent: onEmbedEvent, onProblem: showProblem,
  });
  $("get-token").onclick = () => getToken(broker);
  $("embed").onclick = () => embedReport(embedder);
  $("refresh").onclick = () => embedder.refresh("button");
  $("margin").textContent = `${config.refreshMarginSeconds} s`;
  $("data-mode").textContent = config.dataMode === "token" ? "token (the alternative)" : "proxy (the default)";
  // Signed out, the page waits for the user: the broker would only answer 401 (unless CALLER_AUTH lets
  // anonymous callers in, which "Get token" shows).
  if (auth.account) {
    const ready = config.dataMode === "token" ? await getToken(broker) : await loadProxyData(broker);
    if (ready) await embedReport(embedder);
  } else {
    $("hint").hidden = false;
  }
  document.body.dataset.ready = "true";
}

main();
