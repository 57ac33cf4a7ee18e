// Calls to the token broker with the signed-in user's token; errors are RFC 9457 problem documents.

/** A broker answer other than 2xx, with its problem document (title, detail, code, ...). */
export class BrokerProblem extends Error {
  constructor(status, problem, retryAfter) {
    super(problem?.detail || `HTTP ${status}`);
    this.name = "BrokerProblem";
    this.status = status;
    this.problem = problem || {};
    this.retryAfter = retryAfter;
  }
}

export function createBroker(config, auth) {
  async function call(path) {
    const headers = { Accept: "application/json" };
    const token = await auth.accessToken();
    if (token) headers.Authorization = `Bearer ${token}`;
    const response = await fetch(`${config.broker}${path}`, { headers });
    const body = await response.json().catch(() => null);
    if (!response.ok) throw new BrokerProblem(response.status, body, response.headers.get("Retry-After"));
    return body;
  }
  const workspace = config.workspaceId ? `?workspaceId=${encodeURIComponent(config.workspaceId)}` : "";
  return {
    /** GET /api/token: { accessToken, tokenType, expiresOn, expiresIn, scope } */
    token: () => call("/api/token"),
    /** GET /api/reports/{id}/embed: { token, tokenId, expiresOn, reports: [{ id, name, embedUrl, ... }] } */
    embed: () => call(`/api/reports/${encodeURIComponent(config.reportId)}/embed${workspace}`),
    /** GET /api/powerbi/v1.0/myorg{path}: Power BI's answer, fetched by the broker with its own token */
    powerbi: (path) => call(`/api/powerbi/v1.0/myorg${path}`),
  };
}

const HEADLINES = {
  401: ["Sign in to continue", "The broker needs to know who you are: sign in, then try again."],
  403: ["Access denied", "You are signed in, but your account may not get Power BI tokens here."],
  429: ["Too many requests", "The broker limits how often one user may ask for tokens."],
  503: ["Service unavailable", "The broker cannot issue this token right now."],
};

/** What to tell the user about a failed call: { status, headline, advice, title, detail, code, requestId }. */
export function describeProblem(error) {
  if (!(error instanceof BrokerProblem)) {
    return { status: 0, headline: "Something went wrong", advice: String(error?.message || error), title: "",
             detail: "", code: error?.errorCode || "", requestId: "" };
  }
  const [headline, advice] = HEADLINES[error.status] || [`Request failed (HTTP ${error.status})`, ""];
  const wait = error.status === 429 && error.retryAfter ? ` Try again in ${error.retryAfter} seconds.` : "";
  const { title = "", detail = "", code = "", requestId = "" } = error.problem;
  return { status: error.status, headline, advice: advice + wait, title, detail, code, requestId };
}
