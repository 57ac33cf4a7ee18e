"""Load and soak over real HTTP: 32 clients against the dev server, a fault phase, memory, a secret rotation.

The function app is served by :class:`devtools.devserver.DevServer` (threaded HTTP/1.1 keep-alive) on an
ephemeral port, in this process, with the Entra ID, Key Vault and Power BI emulators behind it. Each client
thread holds one keep-alive connection and mixes ``GET /api/token``, ``POST /api/embed-token`` (with and
without row-level security) and ``GET /api/reports/{id}/embed``, as two signed-in users (``CALLER_AUTH=jwt``,
so every request is verified).

* ``test_soak_with_a_fault_phase``: ``BROKER_SOAK_SECONDS`` (default 60, at least 20) of load. Tokens are
  short-lived so that the cached Azure AD and embed tokens fall due *inside* the fault phase (Azure AD
  answers 503 and Power BI 429 for a sixth of the run): the broker serves the still-valid cached tokens and
  refreshes after the outage, so **no status other than 200 is expected at any time**. RSS (``VmRSS`` of
  ``/proc/self/status``) is sampled twice a second; after the warm-up (the first sixth) it must not grow by
  more than 20 MB. Latency percentiles are printed (``pytest -s`` or ``-rP``), never asserted.
* ``test_secret_rotation_under_load``: tokens living 4 s, so refreshes happen every 2 s; mid-run Azure AD
  starts rejecting the old secret and Key Vault gets the new one, twice: no caller request fails.

The dev server's access log (one INFO record per request) is silenced during the runs: the session's leak
audit keeps every record in memory, which would otherwise be measured as growth.
"""

from __future__ import annotations

import bisect
import http.client
import json
import logging
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest

from devtools.devserver import DevServer
from devtools.emulator_server import Fault
from devtools.entra import EntraEmulator
from devtools.functions_host import FunctionsHost
from devtools.keyvault import KeyVaultEmulator
from devtools.managed_identity import ManagedIdentity
from devtools.powerbi import PowerBIEmulator
from tests.conftest import ALICE, BOB, CLIENT_ID, CLIENT_SECRET, TENANT, Env, World, embed_settings, leaks_in
from token_broker.support import redaction

#: test_embed.py's Power BI fixtures, imported so that pytest finds them here (candidates for conftest.py).

CLIENTS = 32
SOAK_SECONDS = max(20.0, float(os.environ.get("BROKER_SOAK_SECONDS", "60")))
ROTATION_SECONDS = 7.0
MEMORY_GROWTH_LIMIT_MB = 20.0
TOKEN_PATH = f"/{TENANT}/oauth2"
# Latency histogram: bucket i holds latencies in [1.02**i, 1.02**(i+1)) microseconds (2 % resolution, fixed
# memory however long the run).
_GROWTH = 1.02
_BUCKETS = 1200


# -- the load generator -----------------------------------------------------------------------------------------


@dataclass
class Request:
    """One kind of request the clients send."""

    name: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class Tally:
    """What one client thread saw. Fixed-size: a soak must not measure its own bookkeeping as growth."""

    histogram: list[int] = field(default_factory=lambda: [0] * _BUCKETS)
    statuses: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def record(self, phase: str, request: Request, status: int, seconds: float, body: bytes) -> None:
        self.statuses[f"{phase} {request.name} {status}"] += 1
        index = int(math.log(max(seconds * 1e6, 1.0), _GROWTH))
        self.histogram[min(index, _BUCKETS - 1)] += 1
        if status != 200 and len(self.failures) < 10:
            self.failures.append(f"{phase} {request.name} {status} {body[:300]!r}")
        if status >= 400:  # recorded, not raised: this runs on a client thread
            text = body.decode("utf-8", "replace")
            leaks = leaks_in(text) + [f"secret {s[:4]}…" for s in redaction.registered_secrets() if s in text]
            if leaks:
                self.failures.append(f"LEAK in {phase} {request.name} {status}: {leaks}")


def percentile(histogram: list[int], fraction: float) -> float:
    """The ``fraction`` quantile (nearest rank) of a histogram, in milliseconds (upper edge of its bucket)."""
    total = sum(histogram)
    cumulative = list(_accumulate(histogram))
    index = bisect.bisect_left(cumulative, math.ceil(fraction * total))
    return _GROWTH ** (index + 1) / 1000


def _accumulate(values: list[int]) -> Iterator[int]:
    running = 0
    for value in values:
        running += value
        yield running


class Load:
    """``CLIENTS`` threads, each with a keep-alive connection, cycling through ``requests`` until stopped."""

    def __init__(self, url: str, requests: list[Request]) -> None:
        parts = urlsplit(url)
        self._address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._requests = requests
        self._stop = threading.Event()
        self.phase = "steady"
        self.tallies = [Tally() for _ in range(CLIENTS)]
        self._connections: list[http.client.HTTPConnection] = []
        self._threads = [threading.Thread(target=self._client, args=(n,), name=f"soak-client-{n}", daemon=True)
                         for n in range(CLIENTS)]

    def start(self) -> None:
        # The connections are opened one after the other, each answered once, before the clients start: the
        # dev server listens with socketserver's default backlog of 5, so 32 simultaneous connects would be
        # refused or reset by the kernel (a dev server limit, not the broker's).
        for number, thread in enumerate(self._threads):
            connection = http.client.HTTPConnection(*self._address, timeout=30)
            request = self._requests[number % len(self._requests)]
            connection.request(request.method, request.path, body=request.body or None, headers=request.headers)
            connection.getresponse().read()
            self._connections.append(connection)
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in self._threads), "a client hung"

    def _client(self, number: int) -> None:
        tally = self.tallies[number]
        connection = self._connections[number]
        turn = number + 1
        while not self._stop.is_set():
            request = self._requests[turn % len(self._requests)]
            turn += 1
            phase = self.phase
            started = time.perf_counter()
            try:
                connection.request(request.method, request.path, body=request.body or None, headers=request.headers)
                response = connection.getresponse()
                body = response.read()
                status = response.status
            except (OSError, http.client.HTTPException) as err:
                connection.close()
                connection = http.client.HTTPConnection(*self._address, timeout=30)
                status, body = 0, repr(err).encode()
            tally.record(phase, request, status, time.perf_counter() - started, body)
        connection.close()

    def summary(self) -> tuple[Counter[str], list[int], list[str]]:
        statuses: Counter[str] = Counter()
        histogram = [0] * _BUCKETS
        failures: list[str] = []
        for tally in self.tallies:
            statuses.update(tally.statuses)
            histogram = [a + b for a, b in zip(histogram, tally.histogram, strict=True)]
            failures += tally.failures
        return statuses, histogram, failures


def rss_mb() -> float:
    """This process's resident set size, from /proc/self/status."""
    with open("/proc/self/status", encoding="ascii") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


class MemorySampler:
    """Samples RSS twice a second on a thread, with the time of each sample."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.samples.append((time.monotonic(), rss_mb()))

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


# -- fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture
def server(host: FunctionsHost) -> Iterator[DevServer]:
    """The function app over HTTP on an ephemeral port, its per-request access log silenced."""
    access_log = logging.getLogger("devtools.devserver")
    level = access_log.level
    access_log.setLevel(logging.WARNING)
    with DevServer(host, port=0) as running:
        yield running
    access_log.setLevel(level)


def client_requests(entra: EntraEmulator, world: World) -> list[Request]:
    """The request mix: token and embed endpoints, two users, with and without row-level security."""

    def bearer(username: str) -> dict[str, str]:
        token = entra.issue_access_token(tenant_id=TENANT, audience=f"api://{CLIENT_ID}", subject_username=username,
                                         scopes="access_as_user", lifetime=3600)
        return {"Authorization": f"Bearer {token}"}

    alice, bob = bearer(ALICE), bearer(BOB)
    json_alice = {**alice, "Content-Type": "application/json"}

    def embed_body(report: str) -> bytes:
        return json.dumps({"reports": [{"id": report}], "workspaceId": world.sales}).encode()

    return [
        Request("token", "GET", "/api/token", alice),
        Request("embed", "POST", "/api/embed-token", json_alice, embed_body(world.plain_report)),
        Request("token", "GET", "/api/token", bob),
        Request("embed-rls", "POST", "/api/embed-token", json_alice, embed_body(world.rls_report)),
        Request("report-embed", "GET", f"/api/reports/{world.second_report}/embed?workspaceId={world.sales}", bob),
    ]


def warm_up(server: DevServer, requests: list[Request]) -> None:
    """One request of each kind, so every cache entry exists before the clients start."""
    parts = urlsplit(server.url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=30)
    for request in requests:
        connection.request(request.method, request.path, body=request.body or None, headers=request.headers)
        response = connection.getresponse()
        assert response.status == 200, response.read()
        response.read()
    connection.close()


def report(title: str, load: Load, seconds: float, extra: str = "") -> tuple[Counter[str], list[str]]:
    statuses, histogram, failures = load.summary()
    total = sum(histogram)
    print(f"\n{title}: {total} requests in {seconds:.0f} s ({total / seconds:.0f}/s) by {CLIENTS} clients; "
          f"p50 {percentile(histogram, 0.5):.1f} ms, p99 {percentile(histogram, 0.99):.1f} ms, "
          f"p99.9 {percentile(histogram, 0.999):.1f} ms, max bucket {percentile(histogram, 1.0):.0f} ms{extra}")
    for name, count in sorted(statuses.items()):
        print(f"  {name}: {count}")
    return statuses, failures


def run_phases(load: Load, phases: list[tuple[float, Callable[[], None]]]) -> float:
    """Run the load, calling each phase's action at its offset (seconds after the start); returns the duration."""
    started = time.monotonic()
    load.start()
    try:
        for offset, action in phases:
            time.sleep(max(0.0, started + offset - time.monotonic()))
            action()
    finally:
        load.stop()
    return time.monotonic() - started


# -- the soak ---------------------------------------------------------------------------------------------------


def test_soak_with_a_fault_phase(env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator,
                                 world: World, server: DevServer) -> None:
    """32 clients for BROKER_SOAK_SECONDS with Azure AD 503s and Power BI 429s mid-run: every response 200,
    cached tokens served through the outage, memory flat after the warm-up."""
    scale = SOAK_SECONDS / 60
    # With the margin at half the lifetime, a token is refreshed at half-life and served while refreshes fail
    # until a quarter of its lifetime is left; a failed refresh is retried after an eighth of it.
    lifetime = round(80 * scale)
    refresh_due = lifetime / 2
    fault_seconds = 10 * scale
    fault_start = refresh_due - fault_seconds / 4  # the refreshes fall due 2.5 s (scaled) into the fault
    entra.access_token_lifetime = lifetime
    env.set(**embed_settings(entra, powerbi, world), POWERBI_TOKEN_REFRESH_MARGIN_SECONDS=str(lifetime // 2),
            POWERBI_HTTP_TIMEOUT_SECONDS="2")
    requests = client_requests(entra, world)
    load = Load(server.url, requests)

    def fault_begins() -> None:
        load.phase = "fault"
        entra.inject_fault(Fault.http(503, None, {"Retry-After": "1"}), count=None, path_prefix=TOKEN_PATH)
        powerbi.inject_fault(Fault.http(429, {"message": "throttled"}, {"Retry-After": "1"}), count=None)

    def fault_ends() -> None:
        entra.clear_faults()
        powerbi.clear_faults()
        load.phase = "after"

    warm_up(server, requests)  # the cached tokens' clock starts now
    entra.reset_counters()
    powerbi.reset_counters()
    with MemorySampler() as memory:
        started = time.monotonic()
        seconds = run_phases(load, [(fault_start, fault_begins), (fault_start + fault_seconds, fault_ends),
                                    (SOAK_SECONDS, lambda: None)])
    after_warm_up = [mb for at, mb in memory.samples if at - started >= SOAK_SECONDS / 6]
    growth = max(after_warm_up) - after_warm_up[0]
    statuses, failures = report(
        "Soak", load, seconds,
        f"; RSS {after_warm_up[0]:.0f} MB after warm-up, max {max(after_warm_up):.0f} MB (+{growth:.1f} MB); "
        f"Azure AD token requests {entra.token_requests()}, Power BI GenerateToken calls "
        f"{powerbi.generate_token_calls()}")
    assert failures == [], failures
    assert all(name.endswith(" 200") for name in statuses)
    assert sum(count for name, count in statuses.items() if name.startswith("fault ")) > 0
    # The outage was really exercised: refreshes were attempted and failed during it, then succeeded.
    assert entra.token_requests() >= 2 and powerbi.generate_token_calls() >= 2
    assert growth < MEMORY_GROWTH_LIMIT_MB, f"RSS grew by {growth:.1f} MB after the warm-up"


def test_secret_rotation_under_load(env: Env, entra: EntraEmulator, vault: KeyVaultEmulator,
                                    app_identity: ManagedIdentity, powerbi: PowerBIEmulator,
                                    world: World, server: DevServer) -> None:
    """Tokens living 4 s (a refresh every 2 s) while 32 clients keep requesting; twice, Azure AD starts
    rejecting the old secret and Key Vault gets the new one: not one caller request fails."""
    entra.access_token_lifetime = 4
    env.set(**embed_settings(entra, powerbi, world), POWERBI_TOKEN_REFRESH_MARGIN_SECONDS="2",
            POWERBI_CLIENT_SECRET=None, POWERBI_CLIENT_SECRET_URI=f"{vault.vault_url}/secrets/powerbi-client-secret",
            AZURE_CLIENT_ID=app_identity.client_id, POWERBI_HTTP_TIMEOUT_SECONDS="2")
    requests = client_requests(entra, world)
    load = Load(server.url, requests)

    def rotate(new_secret: str) -> Callable[[], None]:
        def action() -> None:
            entra.rotate_secret(TENANT, CLIENT_ID, new_secret)  # Azure AD now rejects the old secret...
            vault.set_secret("powerbi-client-secret", new_secret)  # ...and the vault has the new one
            load.phase = "rotated"
        return action

    warm_up(server, requests)
    entra.reset_counters()
    try:
        seconds = run_phases(load, [(2.5, rotate("first-rotation~Value.111111")),
                                    (5.0, rotate("second-rotation~Value.222222")), (ROTATION_SECONDS, lambda: None)])
    finally:
        entra.rotate_secret(TENANT, CLIENT_ID, CLIENT_SECRET)
    statuses, failures = report("Rotation", load, seconds, f"; Azure AD token requests {entra.token_requests()}, "
                                f"Key Vault reads {vault.secret_reads('powerbi-client-secret')}")
    assert failures == [], failures
    assert all(name.endswith(" 200") for name in statuses)
    assert vault.secret_reads("powerbi-client-secret") >= 3, "both rotations were picked up from the vault"
