// The report, embedded with powerbi-client and an embed token from the broker, kept signed in.
//
// An embed token expires (never later than the Azure AD token that created it). The embedder asks the
// broker for a new one refreshMarginSeconds before expiresOn and hands it to report.setAccessToken():
//  - on a timer;
//  - when the tab becomes visible again, if the timer is overdue (a sleeping laptop or a background
//    tab does not run timers on time);
//  - when Power BI reports the "TokenExpired" error.
const pbi = window["powerbi-client"]; // the UMD bundle, which also creates window.powerbi

// A token that already expires within the margin is not refreshed again sooner than this.
const MIN_REFRESH_DELAY_MS = 5000;

export function createEmbedder({ container, broker, refreshMarginSeconds, onEvent, onProblem }) {
  let report = null;
  let expiresOn = 0;
  let refreshAt = 0;
  let timer = 0;
  let inFlight = null;

  function schedule(expiresOnIso) {
    expiresOn = Date.parse(expiresOnIso);
    refreshAt = expiresOn - refreshMarginSeconds * 1000;
    clearTimeout(timer);
    const delay = Math.max(refreshAt - Date.now(), MIN_REFRESH_DELAY_MS);
    timer = setTimeout(() => refresh("timer"), delay);
    onEvent({ kind: "scheduled", expiresOn: new Date(expiresOn), refreshAt: new Date(Date.now() + delay) });
  }

  /** Get a new embed token and give it to the report; concurrent triggers share one refresh. */
  function refresh(reason) {
    if (!report) return Promise.resolve();
    if (!inFlight) {
      inFlight = (async () => {
        try {
          const answer = await broker.embed();
          await report.setAccessToken(answer.token);
          onEvent({ kind: "refreshed", reason, token: answer.token, expiresOn: new Date(answer.expiresOn) });
          schedule(answer.expiresOn);
        } catch (error) {
          onProblem(error);
          // Try again later, while the current token may still be valid.
          clearTimeout(timer);
          timer = setTimeout(() => refresh("retry"), Math.max(MIN_REFRESH_DELAY_MS, (expiresOn - Date.now()) / 2));
        } finally {
          inFlight = null;
        }
      })();
    }
    return inFlight;
  }

  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState !== "visible" || !report) return;
    if (Date.now() >= refreshAt) refresh("visible");
    else schedule(new Date(expiresOn).toISOString()); // timers may have been throttled while hidden
  });

  return {
    refresh,
    /** Embed the report, replacing any earlier one; resolves with the broker's answer. */
    async embed() {
      const answer = await broker.embed();
      const info = answer.reports[0];
      clearTimeout(timer);
      window.powerbi.reset(container);
      report = window.powerbi.embed(container, {
        type: "report",
        id: info.id,
        embedUrl: info.embedUrl,
        accessToken: answer.token,
        tokenType: pbi.models.TokenType.Embed,
        settings: { panes: { filters: { visible: false } } },
      });
      report.on("loaded", () => onEvent({ kind: "loaded" }));
      report.on("rendered", () => onEvent({ kind: "rendered" }));
      report.on("error", (event) => {
        onEvent({ kind: "error", detail: event.detail });
        if (event.detail?.message === "TokenExpired") refresh("TokenExpired");
      });
      onEvent({ kind: "embedded", token: answer.token, report: info, expiresOn: new Date(answer.expiresOn) });
      schedule(answer.expiresOn);
      return answer;
    },
  };
}
