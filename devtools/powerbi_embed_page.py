"""A stand-in for Power BI's report embed page (``https://app.powerbi.com/reportEmbed``), for browser tests.

``powerbi-client`` embeds only URLs on Power BI's own hosts, so the Power BI emulator's ``embedUrl`` stays
``https://app.powerbi.com/reportEmbed?...``; offline that host is unreachable. Browser tests route it to
:data:`REPORT_EMBED_PAGE` (for instance with Playwright's ``context.route(f"{EMBED_HOST}/**", ...)``): a
page that speaks the client's postMessage protocol like the real one does, without rendering anything real:

* it answers ``POST /report/load`` (and ``/report/prepare``) with 202, then raises the ``loaded`` and
  ``rendered`` events, and answers ``POST /report/token`` (``report.setAccessToken``) with 202;
* it records what it received in ``window.powerbiEmbedEmulator`` (``loads``: the embed configurations,
  ``tokens``: the tokens set later), which a test reads from the frame;
* ``window.raiseTokenExpired()`` raises the ``error`` event Power BI raises when the embed token expired.
"""

from __future__ import annotations

__all__ = ["EMBED_HOST", "REPORT_EMBED_PAGE"]

EMBED_HOST = "https://app.powerbi.com"

REPORT_EMBED_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Power BI report (emulated)</title>
<style>
  body { font: 14px "Segoe UI", system-ui, sans-serif; margin: 0; padding: 12px 16px; color: #252423; }
  h1 { font-size: 16px; margin: 0 0 4px; } p { margin: 2px 0; color: #605e5c; }
  .bars { display: flex; align-items: flex-end; gap: 10px; height: 120px; margin-top: 12px; }
  .bars div { width: 36px; background: #118dff; }
</style>
</head>
<body>
<h1 id="title">Waiting for powerbi-client</h1>
<p id="status">Emulated Power BI report: no data is rendered offline.</p>
<p id="tokens"></p>
<div class="bars"><div style="height:40%"></div><div style="height:75%"></div><div style="height:55%"></div>
<div style="height:90%"></div><div style="height:65%"></div></div>
<script>
"use strict";
const received = { loads: [], tokens: [] };
window.powerbiEmbedEmulator = received;
let embedder = null;  // { window, origin, uid } of the page that embedded us

function reply(event, statusCode, body) {
  event.source.postMessage({ statusCode, headers: { id: event.data.headers.id }, body }, event.origin);
}

function raise(name, body) {
  if (!embedder) return;
  const id = Math.random().toString(36).slice(2);
  embedder.window.postMessage({ method: "POST", url: `/reports/${embedder.uid}/events/${name}`,
                                headers: { id }, body }, embedder.origin);
}

function showTokens() {
  document.getElementById("tokens").textContent =
    `Embed tokens received: ${1 + received.tokens.length} (the first with the load, then setAccessToken).`;
}

window.addEventListener("message", (event) => {
  const message = event.data;
  // Requests have a method and url; answers to our own events (statusCode) need nothing.
  if (!message || typeof message !== "object" || !message.method || !message.url || !message.headers) return;
  if (message.method === "POST" && (message.url === "/report/load" || message.url === "/report/prepare")) {
    embedder = { window: event.source, origin: event.origin, uid: message.headers.uid };
    received.loads.push(message.body);
    reply(event, 202, null);
    document.getElementById("title").textContent = `Report ${message.body.id}`;
    showTokens();
    raise("loaded", undefined);
    raise("rendered", undefined);
  } else if (message.method === "POST" && message.url === "/report/token") {
    received.tokens.push(message.body);
    reply(event, 202, null);
    showTokens();
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
