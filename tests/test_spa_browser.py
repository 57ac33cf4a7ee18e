"""The sample SPA (``samples/spa``) in real headless Chromium against the offline stack.

MSAL.js signs users in at the Entra ID emulator (authorization code + PKCE), the page calls the broker with
the user's token, uses the Power BI token as a WireBootstrap data source, embeds the report with
powerbi-client and renews the embed token before it expires. Chromium trusts exactly the emulators'
certificate keys (``--ignore-certificate-errors-spki-list``). Two hosts are routed by the test:
``app.powerbi.com`` (unreachable offline) to :data:`devtools.powerbi_embed_page.REPORT_EMBED_PAGE`, and the
Power BI emulator's API, forwarded as is with the CORS header Power BI sends (the emulator answers no CORS
preflight). ``powerbi.embed`` and ``report.setAccessToken`` are spied on by an init script.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from playwright.sync_api import Browser, BrowserContext, Page, Route, sync_playwright

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
from devtools.powerbi_embed_page import EMBED_HOST, REPORT_EMBED_PAGE
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
                      extra_settings={"CALLER_RATE_LIMIT_PER_MINUTE": str(RATE_LIMIT)}) as offline:
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
    trusted = ",".join(stack.browser_spki_hashes())
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=executable, args=[*CHROMIUM_FLAGS, f"--ignore-certificate-errors-spki-list={trusted}"])
        yield chromium
        chromium.close()


class PowerBIGateway:
    """Forwards the page's Power BI REST calls to the emulator, adding the CORS header; remembers the bearers."""

    def __init__(self, stack: OfflineStack) -> None:
        self.stack = stack
        self.bearers: list[str] = []

    def __call__(self, route: Route) -> None:
        bearer = route.request.headers.get("authorization", "")
        self.bearers.append(bearer)
        answer = requests.request(route.request.method, route.request.url, headers={"Authorization": bearer},
                                  verify=self.stack.ca.ca_bundle_path, timeout=10)
        route.fulfill(status=answer.status_code, body=answer.content, headers={
            "Content-Type": answer.headers.get("Content-Type", ""), "Access-Control-Allow-Origin": self.stack.url})


@pytest.fixture
def context(browser: Browser, stack: OfflineStack) -> Iterator[tuple[BrowserContext, PowerBIGateway]]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    ctx.add_init_script(SPY)
    ctx.route(f"{EMBED_HOST}/**", lambda route: route.fulfill(status=200, content_type="text/html; charset=utf-8",
                                                              body=REPORT_EMBED_PAGE))
    gateway = PowerBIGateway(stack)
    ctx.route(f"{stack.powerbi.api_url}/**", gateway)
    ctx.set_default_timeout(15_000)
    yield ctx, gateway
    ctx.close()


def open_spa(ctx: BrowserContext, stack: OfflineStack, *, username: str | None, clock: bool = False,
             data_mode: str = "token") -> Page:
    """Open the SPA and, with a ``username``, sign in on the emulator's page; returns once the page settled.

    ``data_mode``: the sample's data call; "token" (the page gets a Power BI token first) unless a test says.
    """
    page = ctx.new_page()
    if clock:
        page.clock.install()  # time flows as usual until the test moves it
    page.goto(stack.spa_url(refreshMarginSeconds=str(REFRESH_MARGIN), dataMode=data_mode))
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


def claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def problem_shown(page: Page, status: int) -> dict[str, str]:
    box = page.wait_for_selector(f"#problem[data-status='{status}']")
    assert box is not None and box.is_visible()
    return {"text": box.inner_text(), "code": box.get_attribute("data-code") or ""}


# -- the happy path -------------------------------------------------------------------------------------------


def test_sign_in_token_data_source_and_embed(context: tuple[BrowserContext, PowerBIGateway],
                                             stack: OfflineStack) -> None:
    ctx, gateway = context
    page = ctx.new_page()
    page.goto(stack.spa_url(refreshMarginSeconds=str(REFRESH_MARGIN), dataMode="token"))  # the alternative
    page.click("#sign-in")
    page.wait_for_url("**/oauth2/v2.0/authorize?**")
    authorize = parse_qs(urlsplit(page.url).query)
    assert authorize["code_challenge_method"] == ["S256"] and authorize["response_type"] == ["code"]
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

    # The WireBootstrap-style data source sent the broker's Power BI token, and Power BI accepted it.
    power_bi_token = token_answer.value.json()["accessToken"]
    assert gateway.bearers == [f"Bearer {power_bi_token}"]
    assert claims(power_bi_token)["aud"] == "https://analysis.windows.net/powerbi/api"
    page.wait_for_selector(f"#data-source-result li[data-report-id='{REPORT_ID}']")

    # powerbi.embed got the report, its embed URL and the broker's embed token, as an embed token.
    page.wait_for_selector("#events li[data-kind='loaded']")
    [embedded] = spy(page)["embeds"]
    assert embedded["type"] == "report" and embedded["id"] == REPORT_ID
    assert embedded["tokenType"] == EMBED_TOKEN_TYPE
    assert embedded["embedUrl"].startswith(f"{EMBED_HOST}/reportEmbed?reportId={REPORT_ID}&groupId={WORKSPACE_ID}")
    grant = stack.powerbi.embed_token_info(embedded["accessToken"])
    assert grant["reports"] == [REPORT_ID]
    report_frame = page.frame_locator("#report iframe")
    assert report_frame.locator("#title").inner_text() == f"Report {REPORT_ID}"
    assert page.inner_text("#report-name") == f"Sales overview ({REPORT_ID})"
    assert page.is_hidden("#problem")
    (ROOT / "artifacts").mkdir(exist_ok=True)
    page.screenshot(path=str(ROOT / "artifacts" / "spa.png"), full_page=True)


def test_the_data_call_goes_through_the_proxy_by_default(context: tuple[BrowserContext, PowerBIGateway],
                                                         stack: OfflineStack) -> None:
    """The default data mode: the page never asks for a Power BI token and never calls Power BI itself."""
    ctx, gateway = context
    seen: list[str] = []
    ctx.on("request", lambda request: seen.append(request.url))
    stack.powerbi.reset_counters()
    page = ctx.new_page()
    page.goto(stack.spa_url(refreshMarginSeconds=str(REFRESH_MARGIN)))  # no dataMode: the sample's default
    page.click("#sign-in")
    page.click(f"button[value='{USERS['alice']}']")
    page.wait_for_selector(f"#data-source-result li[data-report-id='{REPORT_ID}'][data-mode='proxy']")
    page.wait_for_selector("#events li[data-kind='loaded']")  # the report is embedded as before
    assert page.inner_text("#data-mode").startswith("proxy")
    assert "/api/powerbi/v1.0/myorg/groups/" in page.inner_text("#data-source")
    assert gateway.bearers == [], "the page never called Power BI"
    assert not [url for url in seen if urlsplit(url).path.endswith("/api/token")], "no Power BI token was fetched"
    assert not page.inner_text("#token-info")
    upstream = next(r for r in stack.powerbi.requests if r.path.lower().endswith(f"/reports/{REPORT_ID}"))
    bearer = {k.lower(): v for k, v in upstream.headers.items()}["authorization"].split(" ", 1)[1]
    assert claims(bearer)["idtyp"] == "app", "the broker called Power BI with its own token"


def test_the_embed_token_is_renewed_before_it_expires(context: tuple[BrowserContext, PowerBIGateway],
                                                      stack: OfflineStack) -> None:
    ctx, _ = context
    page = open_spa(ctx, stack, username=USERS["carol"], clock=True)
    page.wait_for_selector("#events li[data-kind='loaded']")
    first = spy(page)["embeds"][0]["accessToken"]
    first_expires = expiration(stack, first)

    # On the timer, refreshMarginSeconds before expiresOn: a new token, handed over while the old one is valid.
    page.wait_for_selector("#events li[data-reason='timer']", timeout=(TOKEN_LIFETIME + 10) * 1000)
    [renewal] = spy(page)["tokens"]
    assert renewal["token"] != first
    assert renewal["at"] / 1000 < first_expires
    assert expiration(stack, renewal["token"]) > first_expires
    report_frame = next(f for f in page.frames if f.url.startswith(EMBED_HOST))
    assert report_frame.evaluate("window.powerbiEmbedEmulator.tokens") == [renewal["token"]]

    # When Power BI says the token expired, the page asks the broker again and sets what it answers.
    report_frame.evaluate("window.raiseTokenExpired()")
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


# -- problems: each status shows its message, provoked for real ---------------------------------------------------


def test_without_sign_in_the_page_shows_the_401(context: tuple[BrowserContext, PowerBIGateway],
                                                stack: OfflineStack) -> None:
    page = open_spa(context[0], stack, username=None)
    shown = problem_shown(page, 401)
    assert "Sign in to continue" in shown["text"] and shown["code"] == "caller_token_missing"
    assert "Authorization: Bearer" in shown["text"]  # the problem's detail


def test_a_user_without_the_role_sees_the_403(context: tuple[BrowserContext, PowerBIGateway],
                                              stack: OfflineStack) -> None:
    page = open_spa(context[0], stack, username=NO_ROLE_USER)
    shown = problem_shown(page, 403)
    assert "Access denied" in shown["text"] and shown["code"] == "caller_missing_role"
    assert spy(page)["embeds"] == []


def test_too_many_requests_show_the_429(context: tuple[BrowserContext, PowerBIGateway], stack: OfflineStack) -> None:
    page = open_spa(context[0], stack, username=USERS["dave"])
    for _ in range(RATE_LIMIT + 2):
        page.click("#get-token")
        if page.is_visible("#problem[data-status='429']"):
            break
    shown = problem_shown(page, 429)
    assert "Too many requests" in shown["text"] and shown["code"] == "rate_limited"
    assert "Try again in" in shown["text"]  # from Retry-After


def test_power_bi_refusing_embed_tokens_shows_the_503(context: tuple[BrowserContext, PowerBIGateway],
                                                      stack: OfflineStack) -> None:
    stack.powerbi.shared_capacity_embed_token_limit = 0  # the demo workspace is on shared capacity
    try:
        page = open_spa(context[0], stack, username=USERS["erin"])
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


def test_the_banner_names_the_sample_spa(stack: OfflineStack) -> None:
    banner = stack.banner()
    assert f"Sample SPA: {stack.url}{SPA_PATH}?" in banner
    assert stack.browser_spki_hashes()[0] in banner
