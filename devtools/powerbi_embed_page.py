"""The Power BI emulator's report embed page (Power BI's ``https://app.powerbi.com/reportEmbed``).

Served by :class:`devtools.powerbi.PowerBIEmulator` at ``/reportEmbed``; powerbi-client frames it like the
real one and talks to it with the same postMessage protocol:

* ``POST /report/load`` (and ``/report/prepare``) is answered 202; the page raises ``loaded``, asks the
  emulator whether the embed token grants the report (``POST /reportEmbed/render``, as Power BI checks a
  token before it renders), then draws the emulated report and raises ``rendered`` -- or raises Power BI's
  ``error`` event (``TokenExpired``, ``InvalidToken``...) and draws nothing;
* ``POST /report/token`` (``report.setAccessToken``) is answered 202 and the new token is checked the same
  way, so a refreshed report shows the new token's expiry;
* ``window.powerbiEmbedEmulator`` records what it received (``loads``: the embed configurations, ``tokens``:
  the tokens set later, ``renders``: the answers of the render check), for tests to read from the frame;
* ``window.raiseTokenExpired()`` raises the ``error`` event Power BI raises when the embed token expired.

powerbi-client refuses embed URLs whose host is not Power BI's, so the offline stack's report ``embedUrl``
is ``https://app.powerbi.com[:port]/reportEmbed?...`` and a browser maps that host to the emulator
(Chromium: ``--host-resolver-rules``, printed by the stack's banner).
"""

from __future__ import annotations

__all__ = ["EMBED_HOST", "REPORT_EMBED_PAGE"]

EMBED_HOST = "app.powerbi.com"

REPORT_EMBED_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Power BI report (emulated)</title>
<style>
  body { font: 14px "Segoe UI", system-ui, sans-serif; margin: 0; padding: 12px 16px; color: #252423; }
  h1 { font-size: 16px; margin: 0 0 4px; } p { margin: 2px 0; color: #605e5c; }
  .failed { color: #a4262c; }
  .bars { display: flex; align-items: flex-end; gap: 10px; height: 120px; margin-top: 12px; }
  .bars div { width: 36px; background: #118dff; }
</style>
</head>
<body>
<h1 id="title">Waiting for powerbi-client</h1>
<p id="status">Emulated Power BI report (Power BI emulator): no real data.</p>
<p id="tokens"></p>
<div class="bars" id="bars" hidden><div style="height:40%"></div><div style="height:75%"></div>
<div style="height:55%"></div><div style="height:90%"></div><div style="height:65%"></div></div>
<script>
"use strict";
const received = { loads: [], tokens: [], renders: [] };
window.powerbiEmbedEmulator = received;
let embedder = null;  // { window, origin, uid } of the page that embedded us
let reportId = "";
const $ = (id) => document.getElementById(id);

function reply(event, statusCode, body) {
  event.source.postMessage({ statusCode, headers: { id: event.data.headers.id }, body }, event.origin);
}

function raise(name, body) {
  if (!embedder) return;
  const id = Math.random().toString(36).slice(2);
  embedder.window.postMessage({ method: "POST", url: `/reports/${embedder.uid}/events/${name}`,
                                headers: { id }, body }, embedder.origin);
}

/** Ask the emulator whether the token grants the report; draw it, or raise Power BI's error event. */
async function render(token, why) {
  const answer = await fetch("/reportEmbed/render", { method: "POST", headers: { "Content-Type": "application/json" },
                                                      body: JSON.stringify({ reportId, accessToken: token }) });
  const body = await answer.json();
  received.renders.push({ why, status: answer.status, ...body });
  if (!answer.ok) {
    $("bars").hidden = true;
    $("status").className = "failed";
    $("status").textContent = `${body.error.code}: ${body.error.message}`;
    raise("error", { message: body.error.code, detailedMessage: body.error.message, errorCode: "403", level: 6 });
    return false;
  }
  $("title").textContent = body.reportName;
  $("status").className = "";
  $("status").textContent = `Report ${reportId}, rendered with an embed token valid until ${body.expiration}.`;
  $("tokens").textContent = `Embed tokens received: ${1 + received.tokens.length} (the first with the load, ` +
    `then setAccessToken); renders: ${received.renders.length}.`;
  $("bars").hidden = false;
  return true;
}

window.addEventListener("message", async (event) => {
  const message = event.data;
  // Requests have a method and url; answers to our own events (statusCode) need nothing.
  if (!message || typeof message !== "object" || !message.method || !message.url || !message.headers) return;
  if (message.method === "POST" && (message.url === "/report/load" || message.url === "/report/prepare")) {
    embedder = { window: event.source, origin: event.origin, uid: message.headers.uid };
    received.loads.push(message.body);
    reportId = message.body.id;
    reply(event, 202, null);
    raise("loaded", undefined);
    if (await render(message.body.accessToken, "load")) raise("rendered", undefined);
  } else if (message.method === "POST" && message.url === "/report/token") {
    received.tokens.push(message.body);
    reply(event, 202, null);
    await render(message.body, "token");  // the body is the new token itself
  } else {
    reply(event, 404, { message: `${message.method} ${message.url} is not emulated` });
  }
});

window.raiseTokenExpired = () => raise("error", {
  message: "TokenExpired", detailedMessage: "Access token has expired, resubmit with a new access token",
  errorCode: "403", level: 6,
});
</script>
</body>
</html>
"""
