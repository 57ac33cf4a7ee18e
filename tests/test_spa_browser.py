"""The sample SPA (``samples/spa``) in real headless Chromium against the offline stack, as a person uses it.

The browser opens the README's bare ``http://localhost:<port>/samples/spa/`` (the page reads the stack's
``config.json``) with exactly the flags the stack's banner prints (:meth:`OfflineStack.browser_flags`: trust
the emulators' certificate keys, and send Power BI's embed host to the Power BI emulator); no request is
routed or rewritten by the test. MSAL.js signs users in at the Entra ID emulator (authorization code + PKCE),
the page calls the broker with the user's token, calls the Power BI emulator's API directly with the Power BI
token (a WireBootstrap data source; CORS preflight included), embeds the report with powerbi-client in the
emulator's embed page, which renders it only for a valid embed token, and renews the embed token before it
expires. ``powerbi.embed`` and ``report.setAccessToken`` are observed (not changed) by an init script.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shlex
import shutil
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from playwright.sync_api import Browser, BrowserContext, Frame, Page, sync_playwright

from devtools.offline_stack import (
    CLIENT_ID,
    NO_ROLE_USER,
    REPORT_ID,
    SPA_CLIENT_ID,
    SPA_PATH,
    TENANT_ID,
    VIEWER_ROLE,
    WORKSPACE_ID,
    OfflineStack,
)
from devtools.powerbi_embed_page import EMBED_HOST
from tests.conftest import ROOT

TOKEN_LIFETIME = 16  # seconds, of every Azure AD token; embed tokens never outlive the one that made them
REFRESH_MARGIN = 4  # the page renews the embed token this long before expiresOn
RATE_LIMIT = 20  # broker requests per user per minute
USERS = {"alice": "alice@contoso.com", "carol": "carol@contoso.com", "dave": "dave@contoso.com",
         "erin": "erin@contoso.com"}  # all with the role; Bob (the stack's NO_ROLE_USER) has none
BUNDLES = ("node_modules/@azure/msal-browser/lib/msal-browser.min.js",
           "node_modules/powerbi-client/dist/powerbi.min.js")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic", "--disable-default-apps", "--mute-audio"]
EMBED_TOKEN_TYPE = 1  # powerbi-client models.TokenType.Embed

# Records what the page hands to powerbi-client: window.powerbi is created by the bundle, so trap its assignment.
SPY = """(() => {
  const spy = window.__powerbiSpy = { embeds: [], tokens: [] };
  let service;
  Object.defineProperty(window, "powerbi", { configurable: true, get: () => service, set(value) {
    service = value;
    const embed = value.embed.bind(value);
    value.embed = (element, config) => {
      spy.embeds.push(JSON.parse(JSON.stringify(config)));
      const report = embed(element, config);
      const setAccessToken = report.setAccessToken.bind(report);
      report.setAccessToken = (token) => { spy.tokens.push({ token, at: Date.now() }); return setAccessToken(token); };
      return report;
    };
  } });
})();"""


@pytest.fixture(scope="module")
def stack() -> Iterator[OfflineStack]:
    missing = [path for path in BUNDLES if not (ROOT / "samples" / "spa" / path).is_file()]
    if missing:
        pytest.fail(f"samples/spa needs its npm packages ({', '.join(missing)} missing): run `npm ci` in samples/spa")
    with OfflineStack(port=0, caller_auth="jwt", token_lifetime=TOKEN_LIFETIME,
                      extra_settings={"CALLER_RATE_LIMIT_PER_MINUTE": str(RATE_LIMIT)},
                      spa_options={"refreshMarginSeconds": str(REFRESH_MARGIN)}) as offline:
        for username in USERS.values():
            offline.entra.add_user(TENANT_ID, username, "unused-Passw0rd!", roles=[VIEWER_ROLE])
        # The broker reads its settings on first use: build it now, while the stack's settings are exported
        # (each test's fixtures set aside every setting for the test's duration).
        assert requests.get(f"{offline.url}/api/health", timeout=10).json()["status"] == "ok"
        yield offline


@pytest.fixture(scope="module")
def browser(stack: OfflineStack) -> Iterator[Browser]:
    executable = os.environ.get("BROKER_CHROMIUM_PATH", "/usr/bin/chromium")
    if not shutil.which(executable):
        pytest.fail(f"Chromium not found at {executable} (apt-get install -y chromium, or set BROKER_CHROMIUM_PATH)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable,
                                              args=[*CHROMIUM_FLAGS, *stack.browser_flags()])
        yield chromium
        chromium.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 1000})
    ctx.add_init_script(SPY)
    ctx.set_default_timeout(15_000)
    yield ctx
    ctx.close()


def screenshot(page: Page, name: str) -> None:
    """A full-page screenshot in artifacts/ (kept by CI), named in the test's output."""
    path = ROOT / "artifacts" / f"{name}.png"
    path.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


def report_frame(page: Page) -> Frame:
    """The emulated Power BI embed page, framed by powerbi-client."""
    return next(frame for frame in page.frames if "/reportEmbed" in frame.url)


def open_spa(ctx: BrowserContext, stack: OfflineStack, *, username: str | None, clock: bool = False,
             data_mode: str = "token") -> Page:
    """Open the SPA and, with a ``username``, sign in on the emulator's page; returns once it settled.

    ``data_mode``: the sample's data call; "token" (the page gets a Power BI token first) unless a test says.
    """
    page = ctx.new_page()
    if clock:
        page.clock.install()  # time flows as usual until the test moves it
    page.goto(stack.spa_url(dataMode=data_mode))
    page.wait_for_selector("body[data-ready], #problem:not([hidden])")
    if username is not None:
        page.click("#sign-in")
        page.wait_for_url("**/oauth2/v2.0/authorize?**")
        page.click(f"button[value='{username}']")
        page.wait_for_selector("#sign-out")
        page.wait_for_selector("body[data-ready]")
    return page


def spy(page: Page) -> dict[str, list[dict[str, Any]]]:
    return dict(page.evaluate("window.__powerbiSpy"))


def expiration(stack: OfflineStack, embed_token: str) -> float:
    """When Power BI says this embed token expires (epoch seconds)."""
    value = stack.powerbi.embed_token_info(embed_token)["expiration"]
    return float(value.timestamp() if isinstance(value, datetime) else value)


def set_visibility(page: Page, state: str) -> None:
    """Switch ``document.visibilityState`` and fire ``visibilitychange``, as a browser does for a tab."""
    page.evaluate("""(state) => {
      Object.defineProperty(document, "visibilityState", { configurable: true, get: () => state });
      Object.defineProperty(document, "hidden", { configurable: true, get: () => state === "hidden" });
      document.dispatchEvent(new Event("visibilitychange"));
    }""", state)


def header(headers: dict[str, str], name: str) -> str | None:
    return next((value for key, value in headers.items() if key.lower() == name), None)


def page_origin(stack: OfflineStack) -> str:
    return f"http://localhost:{stack.url.rpartition(':')[2]}"


def claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def problem_shown(page: Page, status: int) -> dict[str, str]:
    box = page.wait_for_selector(f"#problem[data-status='{status}']")
    assert box is not None and box.is_visible()
    return {"text": box.inner_text(), "code": box.get_attribute("data-code") or ""}


# -- the happy path -------------------------------------------------------------------------------------------


def test_sign_in_token_data_source_and_embed(context: BrowserContext, stack: OfflineStack) -> None:
    page = context.new_page()
    page.goto(stack.spa_url(dataMode="token"))  # the alternative data mode: the page holds a Power BI token
    page.wait_for_selector("body[data-ready]")
    page.click("#sign-in")
    page.wait_for_url("**/oauth2/v2.0/authorize?**")
    authorize = parse_qs(urlsplit(page.url).query)
    assert authorize["code_challenge_method"] == ["S256"] and authorize["response_type"] == ["code"]
    assert authorize["client_id"] == [SPA_CLIENT_ID]  # from the stack's config.json, not a query string
    with page.expect_request(lambda r: r.url.endswith("/api/token") and "authorization" in r.headers) as token_call, \
            page.expect_response(lambda r: r.url.endswith("/api/token") and r.status == 200) as token_answer:
        page.click(f"button[value='{USERS['alice']}']")
    page.wait_for_selector("body[data-ready]")
    assert page.inner_text("#user") == f"Signed in as Alice ({USERS['alice']})"

    # The broker got the user's own token: issued by the emulator to the SPA, for the broker's API.
    scheme, _, bearer = (token_call.value.headers.get("authorization") or "").partition(" ")
    user = stack.entra.verify_access_token(bearer, audience=f"api://{CLIENT_ID}")
    assert scheme == "Bearer" and user["preferred_username"] == USERS["alice"]
    assert user["azp"] == SPA_CLIENT_ID and user["scp"] == "access_as_user" and user["roles"] == [VIEWER_ROLE]

    # The WireBootstrap-style data source called the Power BI emulator itself, cross-origin (after a CORS
    # preflight), with the broker's Power BI token, and Power BI accepted it.
    page.wait_for_selector(f"#data-source-result li[data-report-id='{REPORT_ID}']")
    power_bi_token = token_answer.value.json()["accessToken"]
    assert claims(power_bi_token)["aud"] == "https://analysis.windows.net/powerbi/api"
    from_page = [r for r in stack.powerbi.requests if header(r.headers, "origin") == page_origin(stack)]
    assert [r.method for r in from_page] == ["OPTIONS", "GET"], [(r.method, r.path) for r in from_page]
    assert header(from_page[1].headers, "authorization") == f"Bearer {power_bi_token}"

    # powerbi.embed got the report, its embed URL (Power BI's host, served by the emulator) and the broker's
    # embed token; the emulated embed page checked that token and rendered the report.
    page.wait_for_selector("#events li[data-kind='rendered']")
    [embedded] = spy(page)["embeds"]
    assert embedded["type"] == "report" and embedded["id"] == REPORT_ID
    assert embedded["tokenType"] == EMBED_TOKEN_TYPE
    embed_url = urlsplit(embedded["embedUrl"])
    assert (embed_url.scheme, embed_url.hostname, embed_url.path) == ("https", EMBED_HOST, "/reportEmbed")
    assert (embed_url.port or 443) == stack.powerbi.port
    assert embed_url.query.startswith(f"reportId={REPORT_ID}&groupId={WORKSPACE_ID}")
    grant = stack.powerbi.embed_token_info(embedded["accessToken"])
    assert grant["reports"] == [REPORT_ID]
    frame = page.frame_locator("#report iframe")
    assert frame.locator("#title").inner_text() == "Sales overview"
    assert "rendered with an embed token valid until" in frame.locator("#status").inner_text()
    assert report_frame(page).evaluate("window.powerbiEmbedEmulator.renders.map(r => r.status)") == [200]
    assert page.inner_text("#report-name") == f"Sales overview ({REPORT_ID})"
    assert page.is_hidden("#problem")
    # The countdown ticks.
    before = page.inner_text("#embed-refresh")
    page.wait_for_function("(before) => document.getElementById('embed-refresh').textContent !== before", arg=before)
    # "Refresh token now": the broker's answer (its cached embed token while that is fresh) is set on the
    # report, and the embed page checks it and renders again.
    page.click("#refresh")
    page.wait_for_selector("#events li[data-reason='button']")
    [renewed] = spy(page)["tokens"]
    assert stack.powerbi.embed_token_info(renewed["token"])["reports"] == [REPORT_ID]
    report_frame(page).wait_for_function("window.powerbiEmbedEmulator.renders.length === 2")
    assert report_frame(page).evaluate("window.powerbiEmbedEmulator.renders.map(r => [r.why, r.status])") == [
        ["load", 200], ["token", 200]]
    assert "Embed tokens received: 2" in frame.locator("#tokens").inner_text()
    screenshot(page, "spa-alice")


def test_the_data_call_goes_through_the_proxy_by_default(context: BrowserContext, stack: OfflineStack) -> None:
    """The README's bare URL: the sample's default data mode never asks for a Power BI token and never calls
    Power BI itself; the broker's proxy calls Power BI with the broker's own token."""
    seen: list[str] = []
    context.on("request", lambda request: seen.append(request.url))
    stack.powerbi.reset_counters()
    page = context.new_page()
    page.goto(stack.spa_url())
    page.wait_for_selector("body[data-ready]")
    assert page.url == f"http://localhost:{stack.url.rpartition(':')[2]}{SPA_PATH}"  # the README's bare URL
    page.click("#sign-in")
    page.wait_for_url("**/oauth2/v2.0/authorize?**")
    page.click(f"button[value='{USERS['alice']}']")
    page.wait_for_selector(f"#data-source-result li[data-report-id='{REPORT_ID}'][data-mode='proxy']")
    page.wait_for_selector("#events li[data-kind='rendered']")  # the report is embedded as before
    assert page.inner_text("#data-mode").startswith("proxy")
    assert "/api/powerbi/v1.0/myorg/groups/" in page.inner_text("#data-source")
    paths = [urlsplit(url).path for url in seen]
    assert not [p for p in paths if p.endswith("/api/token")], "no Power BI token was fetched"
    assert not [p for p in paths if "/v1.0/myorg/" in p and not p.startswith("/api/powerbi/")], \
        "the page never called the Power BI REST API itself"
    assert not page.inner_text("#token-info")
    upstream = next(r for r in stack.powerbi.requests if r.path.lower().endswith(f"/reports/{REPORT_ID}"))
    bearer = {k.lower(): v for k, v in upstream.headers.items()}["authorization"].split(" ", 1)[1]
    assert claims(bearer)["idtyp"] == "app", "the broker called Power BI with its own token"


def test_the_embed_token_is_renewed_before_it_expires(context: BrowserContext, stack: OfflineStack) -> None:
    page = open_spa(context, stack, username=USERS["carol"], clock=True)
    page.wait_for_selector("#events li[data-kind='rendered']")
    first = spy(page)["embeds"][0]["accessToken"]
    first_expires = expiration(stack, first)

    # On the timer, refreshMarginSeconds before expiresOn: a new token, handed over while the old one is valid;
    # the embed page checks it and renders the report with it.
    page.wait_for_selector("#events li[data-reason='timer']", timeout=(TOKEN_LIFETIME + 10) * 1000)
    [renewal] = spy(page)["tokens"]
    assert renewal["token"] != first
    assert renewal["at"] / 1000 < first_expires
    assert expiration(stack, renewal["token"]) > first_expires
    frame = report_frame(page)
    assert frame.evaluate("window.powerbiEmbedEmulator.tokens") == [renewal["token"]]
    frame.wait_for_function("window.powerbiEmbedEmulator.renders.length === 2")
    assert frame.evaluate("window.powerbiEmbedEmulator.renders.map(r => [r.why, r.status])") == [
        ["load", 200], ["token", 200]]
    assert "Embed tokens received: 2" in frame.inner_text("#tokens")

    # When Power BI says the token expired, the page asks the broker again and sets what it answers.
    frame.evaluate("window.raiseTokenExpired()")
    page.wait_for_selector("#events li[data-reason='TokenExpired']")
    assert len(spy(page)["tokens"]) == 2

    # A tab that slept past the refresh time (its clock moved on, its timers did not run) refreshes as it wakes.
    # Headless Chromium keeps every tab visible, so the page's visibility is switched by hand.
    set_visibility(page, "hidden")
    page.clock.set_system_time(expiration(stack, renewal["token"]) - 1)
    set_visibility(page, "visible")
    page.wait_for_selector("#events li[data-reason='visible']")
    assert len(spy(page)["tokens"]) == 3
    assert page.query_selector("#events li[data-reason='timer'] ~ li[data-reason='timer']") is None


def test_the_embed_page_renders_only_for_a_token_that_grants_the_report(stack: OfflineStack) -> None:
    """What the emulated embed page asks before it draws anything: the emulator's own record of the token."""
    answer = requests.get(f"{stack.url}/api/reports/{REPORT_ID}/embed",
                          headers={"Authorization": f"Bearer {stack.user_token()}"}, timeout=10)
    assert answer.status_code == 200, answer.text
    token = answer.json()["token"]
    render = f"{stack.powerbi.base_url}/reportEmbed/render"

    def check(report_id: str, embed_token: str) -> tuple[int, str]:
        response = requests.post(render, json={"reportId": report_id, "accessToken": embed_token},
                                 verify=stack.ca.ca_bundle_path, timeout=10)
        body = response.json()
        return response.status_code, body.get("reportName") or body["error"]["code"]

    assert check(REPORT_ID, token) == (200, "Sales overview")
    assert check(REPORT_ID, token + "x") == (403, "InvalidToken")
    assert check("0ff1ce00-0000-4000-8000-00000000beef", token) == (403, "PowerBINotAuthorizedException")
    page = requests.get(f"{stack.powerbi.base_url}/reportEmbed", verify=stack.ca.ca_bundle_path, timeout=10)
    assert page.status_code == 200 and "X-Frame-Options" not in page.headers  # it must be frameable


# -- problems: each status shows its message, provoked for real ---------------------------------------------------


def test_the_page_starts_signed_out_and_a_call_then_shows_the_401(context: BrowserContext,
                                                                  stack: OfflineStack) -> None:
    page = open_spa(context, stack, username=None)
    assert page.is_hidden("#problem") and page.is_visible("#hint")
    assert page.inner_text("#user") == "Not signed in"
    page.click("#get-token")
    shown = problem_shown(page, 401)
    assert "Sign in to continue" in shown["text"] and shown["code"] == "caller_token_missing"
    assert "Authorization: Bearer" in shown["text"]  # the problem's detail


def test_a_user_without_the_role_sees_the_403(context: BrowserContext, stack: OfflineStack) -> None:
    page = open_spa(context, stack, username=NO_ROLE_USER)
    shown = problem_shown(page, 403)
    assert "Access denied" in shown["text"] and shown["code"] == "caller_missing_role"
    assert spy(page)["embeds"] == []
    screenshot(page, "spa-bob")


def test_too_many_requests_show_the_429(context: BrowserContext, stack: OfflineStack) -> None:
    page = open_spa(context, stack, username=USERS["dave"])
    for _ in range(RATE_LIMIT + 2):
        page.click("#get-token")
        if page.is_visible("#problem[data-status='429']"):
            break
    shown = problem_shown(page, 429)
    assert "Too many requests" in shown["text"] and shown["code"] == "rate_limited"
    assert "Try again in" in shown["text"]  # from Retry-After


def test_power_bi_refusing_embed_tokens_shows_the_503(context: BrowserContext, stack: OfflineStack) -> None:
    stack.powerbi.shared_capacity_embed_token_limit = 0  # the demo workspace is on shared capacity
    try:
        page = open_spa(context, stack, username=USERS["erin"])
        shown = problem_shown(page, 503)
    finally:
        stack.powerbi.shared_capacity_embed_token_limit = type(stack.powerbi).shared_capacity_embed_token_limit
    assert "Service unavailable" in shown["text"] and shown["code"] == "powerbi_embed_quota_exceeded"
    assert page.inner_text("#token-info")  # the Power BI token itself was served


# -- the emulator side of the flow, without a browser ----------------------------------------------------------


def test_codes_are_bound_to_pkce_the_redirect_uri_and_the_browser(stack: OfflineStack) -> None:
    redirect_uri = f"{stack.url}{SPA_PATH}"
    authorize = f"{stack.entra.base_url}/{TENANT_ID}/oauth2/v2.0/authorize"
    token_url = f"{stack.entra.base_url}/{TENANT_ID}/oauth2/v2.0/token"
    verifier = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    request = {"client_id": SPA_CLIENT_ID, "redirect_uri": redirect_uri, "response_type": "code",
               "response_mode": "fragment", "scope": f"api://{CLIENT_ID}/access_as_user openid", "state": "s1",
               "nonce": "n1", "code_challenge": challenge, "code_challenge_method": "S256"}
    session = requests.Session()
    session.verify = stack.ca.ca_bundle_path

    def new_code() -> str:
        answer = session.post(authorize, data={**request, "login": USERS["alice"]}, allow_redirects=False, timeout=10)
        assert answer.status_code == 302 and answer.headers["Location"].startswith(redirect_uri + "#")
        fragment = parse_qs(urlsplit(answer.headers["Location"]).fragment)
        assert fragment["state"] == ["s1"]
        return fragment["code"][0]

    def redeem(code: str, origin: str | None = stack.url, **extra: str) -> requests.Response:
        form = {"client_id": SPA_CLIENT_ID, "grant_type": "authorization_code", "code": code,
                "redirect_uri": redirect_uri, "code_verifier": verifier, **extra}
        return session.post(token_url, data=form, headers={"Origin": origin} if origin else {}, timeout=10)

    def aadsts(answer: requests.Response) -> int:
        assert answer.status_code in (400, 401), answer.text
        return int(answer.json()["error_codes"][0])

    assert aadsts(redeem(new_code(), code_verifier="x" * 43)) == 501481  # wrong verifier
    assert aadsts(redeem(new_code(), origin=None)) == 9002327  # a server may not redeem a SPA's code
    assert aadsts(redeem(new_code(), client_secret="not-for-spas")) == 700025
    assert aadsts(redeem(new_code(), redirect_uri=f"{stack.url}/elsewhere/")) == 500112
    code = new_code()
    answer = redeem(code)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Access-Control-Allow-Origin"] == stack.url
    assert claims(answer.json()["id_token"])["nonce"] == "n1"
    assert aadsts(redeem(code)) == 54005  # once only
    # Not registered: an error page, never a redirect; foreign origins get no CORS header.
    page = session.get(authorize, params={**request, "redirect_uri": "https://evil.example/"}, allow_redirects=False,
                       timeout=10)
    assert page.status_code == 400 and "AADSTS50011" in page.text and "Location" not in page.headers
    foreign = redeem(new_code(), origin="https://evil.example")
    assert foreign.status_code == 200 and "Access-Control-Allow-Origin" not in foreign.headers
    silent = session.get(authorize, params={**request, "prompt": "none"}, allow_redirects=False, timeout=10)
    assert parse_qs(urlsplit(silent.headers["Location"]).fragment)["error"] == ["login_required"]
    logout = session.get(authorize.replace("/authorize", "/logout"), params={"post_logout_redirect_uri": redirect_uri},
                         allow_redirects=False, timeout=10)
    assert logout.status_code == 302 and logout.headers["Location"] == redirect_uri


def test_the_banner_names_the_sample_spa_and_the_browser_the_tests_use(stack: OfflineStack) -> None:
    banner = stack.banner()
    port = stack.url.rpartition(":")[2]
    assert f"Sample SPA: http://localhost:{port}{SPA_PATH}\n" in banner
    command = stack.chromium_command()
    assert command in banner and command.endswith(f" http://localhost:{port}{SPA_PATH}")
    assert all(shlex.quote(flag) in command for flag in stack.browser_flags())  # what the browser fixture uses
    assert f"workspace {WORKSPACE_ID}" in banner and f"report {REPORT_ID}" in banner


def test_the_power_bi_api_answers_cors_only_for_the_sample_origin(stack: OfflineStack) -> None:
    url = f"{stack.powerbi.api_url}/groups/{WORKSPACE_ID}/reports/{REPORT_ID}"
    for origin, allowed in ((page_origin(stack), True), ("https://evil.example", False)):
        preflight = requests.options(url, headers={"Origin": origin, "Access-Control-Request-Method": "GET",
                                                   "Access-Control-Request-Headers": "authorization"},
                                     verify=stack.ca.ca_bundle_path, timeout=10)
        assert preflight.status_code == 204
        assert preflight.headers.get("Access-Control-Allow-Origin") == (origin if allowed else None)
        if allowed:
            assert preflight.headers["Access-Control-Allow-Headers"] == "authorization"
        answer = requests.get(url, headers={"Origin": origin}, verify=stack.ca.ca_bundle_path, timeout=10)
        assert answer.status_code == 403  # no token
        assert answer.headers.get("Access-Control-Allow-Origin") == (origin if allowed else None)
