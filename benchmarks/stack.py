"""The environment every suite shares: mode parameters, progress output and the offline stack.

:class:`BenchStack` wraps :class:`devtools.offline_stack.OfflineStack` (Entra ID emulator over real
HTTPS, app settings, ``REQUESTS_CA_BUNDLE``, the function app served through its own index) and adds
what the benchmarks need: switching token lifetime and refresh margin between figures, counting
upstream token requests, and building the plain-MSAL baselines against the same emulator.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from devtools.functions_host import FunctionsHost, HostResponse
from devtools.offline_stack import OfflineStack
from devtools.powerbi import PowerBIEmulator
from token_broker import runtime
from token_broker.config.contract import DEFAULT_SCOPE, SETTING_NAMES

if TYPE_CHECKING:
    import msal

    from devtools.entra import EntraEmulator

    from .embed_world import EmbedWorld

#: Latency the emulator adds to every request: a realistic round trip to Entra ID from Azure.
EMULATOR_LATENCY_SECONDS = 0.02
_MARGIN = "POWERBI_TOKEN_REFRESH_MARGIN_SECONDS"


@dataclass(frozen=True)
class Profile:
    """How much work each suite does: ``quick`` for CI, ``full`` for the published figures."""

    name: str
    runs: int  # every figure is measured this many times; the table shows the median and spread
    warm_iterations: int  # timed requests per run of the warm-latency loop
    warmup_iterations: int  # untimed requests before the first run (caches, branch predictors, allocator)
    baseline_iterations: int  # per run; each costs two emulator round trips plus a TLS handshake
    stampede_sizes: tuple[int, ...]  # concurrent cold requests per stampede figure
    cold_runs: int  # fresh processes per cold-start figure (broker and floor alternate)
    embed_runs: int  # runs of the embed-token loop, each on a new broker
    embed_requests: int  # POST /api/embed-token per run over the 20 (report, user) pairs
    embed_baseline_requests: int  # sample-style requests per baseline run (each ~6 round trips)
    load_runs: int  # wrk runs per endpoint
    load_seconds: int  # duration of each wrk run
    memory_callers: int  # distinct callers (and RLS identities) per memory configuration
    memory_requests_per_caller: int  # one embed token request, the rest token requests
    memory_bound: int  # EMBED_CACHE_MAX_ENTRIES and CALLER_RATE_LIMIT_MAX_CALLERS of the bounded run


QUICK = Profile("quick", runs=5, warm_iterations=2_000, warmup_iterations=500, baseline_iterations=8,
                stampede_sizes=(50,), cold_runs=3, embed_runs=3, embed_requests=1_000, embed_baseline_requests=10,
                load_runs=3, load_seconds=1, memory_callers=1_000, memory_requests_per_caller=10, memory_bound=200)
FULL = Profile("full", runs=7, warm_iterations=20_000, warmup_iterations=3_000, baseline_iterations=40,
               stampede_sizes=(50, 200), cold_runs=7, embed_runs=7, embed_requests=1_000, embed_baseline_requests=20,
               load_runs=5, load_seconds=3, memory_callers=10_000, memory_requests_per_caller=10,
               memory_bound=2_000)


class BenchStack:
    """The offline stack with ``client_credentials``, ``CALLER_AUTH=anonymous`` and emulator latency."""

    def __init__(self, *, latency: float = EMULATOR_LATENCY_SECONDS) -> None:
        self.latency = latency
        self._stack = OfflineStack(port=0, grant_type="client_credentials", caller_auth="anonymous", latency=latency)
        self._saved: dict[str, str] = {}
        self._powerbi: PowerBIEmulator | None = None
        self._owns_powerbi = False
        self._world: EmbedWorld | None = None

    def start(self) -> Self:
        """Start the emulator and the app; settings exported by the shell are set aside meanwhile."""
        # A POWERBI_* value left in the developer's shell would silently change what is measured.
        self._saved = {name: os.environ.pop(name) for name in SETTING_NAMES if name in os.environ}
        self._stack.start()
        return self

    def stop(self) -> None:
        """Stop everything and put the environment back."""
        if self._powerbi is not None and self._owns_powerbi:
            self._powerbi.stop()
        self._powerbi = None
        self._world = None
        self._stack.stop()
        os.environ.pop(_MARGIN, None)
        os.environ.update(self._saved)
        runtime.reset()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def entra(self) -> EntraEmulator:
        """The Entra ID emulator."""
        return self._stack.entra

    @property
    def host(self) -> FunctionsHost:
        """The function app as the worker indexes it (the same host the dev server serves over HTTP)."""
        assert self._stack.server is not None, "start() first"
        return self._stack.server.host

    @property
    def url(self) -> str:
        """Base URL of the function app over HTTP, for HTTP-level load figures."""
        return self._stack.url

    def configure(self, *, token_lifetime: int = 3600, refresh_margin: int = 300) -> None:
        """Set the emulator's token lifetime and the broker's refresh margin; the next request is cold."""
        self.entra.access_token_lifetime = token_lifetime
        self.entra.latency = self.latency
        os.environ[_MARGIN] = str(refresh_margin)
        runtime.reset()  # a new broker: new settings, new MSAL application, empty token cache
        self.entra.reset_counters()

    @property
    def offline(self) -> OfflineStack:
        """The wrapped offline stack (its CA, user tokens and ids)."""
        return self._stack

    def powerbi(self) -> PowerBIEmulator:
        """The Power BI emulator, on the stack's CA and Entra ID emulator, with the stack's latency.

        The offline stack's own emulator is used when it has one; otherwise one is started here.
        """
        if self._powerbi is None:
            existing = getattr(self._stack, "powerbi", None)
            if isinstance(existing, PowerBIEmulator):
                self._powerbi = existing
            else:
                self._powerbi = PowerBIEmulator(ca=self._stack.ca, entra=self.entra).start()
                self._owns_powerbi = True
            self._powerbi.latency = self.latency
        return self._powerbi

    def embed_world(self) -> EmbedWorld:
        """The reports and users of the embed figures, created in the emulators on first use."""
        if self._world is None:
            from .embed_world import build_embed_world  # it needs this module: imported on first use

            self._world = build_embed_world(self)
        return self._world

    def app_settings(self) -> dict[str, str]:
        """The broker's default app settings (client credentials against the emulator, anonymous callers)."""
        return self._stack.settings()

    def child_environ(self, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of a fresh broker process: this one's, with exactly the default app settings.

        Settings this process changed for a figure (or that a shell exported) are dropped first, so a
        child sees only the defaults plus ``overrides``; the emulator's CA is trusted through
        ``REQUESTS_CA_BUNDLE``.
        """
        environ = {name: value for name, value in os.environ.items() if name not in SETTING_NAMES}
        return {**environ, **self.app_settings(), "REQUESTS_CA_BUNDLE": self._stack.ca.ca_bundle_path,
                **(overrides or {})}

    @contextlib.contextmanager
    def settings_override(self, settings: Mapping[str, str]) -> Iterator[None]:
        """Run the in-process broker with ``settings`` on top of the defaults, then put them back."""
        saved = {name: os.environ.get(name) for name in settings}
        os.environ.update(settings)
        runtime.reset()
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            runtime.reset()

    def get_token(self) -> HostResponse:
        """``GET /api/token`` through the host, the way the worker invokes the function."""
        return self.host.invoke("GET", "/api/token")

    def upstream_token_requests(self) -> int:
        """Client-credentials token requests the emulator received since the last reset."""
        return self.entra.token_requests(grant_type="client_credentials")

    # -- the baseline: plain MSAL, as Microsoft's Power BI embedding sample uses it -----------------------

    def new_msal_app(self) -> msal.ConfidentialClientApplication:
        """A new MSAL application for the broker's app registration (tenant discovery happens here).

        ``instance_discovery=False`` as the brief's baseline asks; the sample itself leaves instance
        discovery on, which against login.microsoftonline.com costs one more round trip, so this
        baseline is, if anything, flattering to the sample.
        """
        import msal

        settings = self._stack.settings()
        return msal.ConfidentialClientApplication(
            settings["POWERBI_CLIENT_ID"],
            client_credential=settings["POWERBI_CLIENT_SECRET"],
            authority=f"{settings['POWERBI_AUTHORITY_HOST']}/{settings['POWERBI_TENANT_ID']}",
            instance_discovery=False,
        )

    @property
    def scopes(self) -> list[str]:
        """The scope the broker requests (its default)."""
        return [DEFAULT_SCOPE]


def msal_token(app: msal.ConfidentialClientApplication, scopes: list[str]) -> dict[str, Any]:
    """``acquire_token_for_client``, failing loudly: a baseline of errors would prove nothing."""
    result: dict[str, Any] = app.acquire_token_for_client(scopes)
    if "access_token" not in result:
        raise RuntimeError(f"MSAL baseline failed: {result.get('error')}: {result.get('error_description')}")
    return result


class RunContext:
    """What a suite gets: the profile, a progress line printer and the shared stack (started on demand)."""

    def __init__(self, profile: Profile, *, verbose: bool = True) -> None:
        self.profile = profile
        self._verbose = verbose
        self._stack: BenchStack | None = None
        #: Findings beside the figures (module lists, skipped figures), printed after the table.
        self.notes: dict[str, list[str]] = {}

    @property
    def quick(self) -> bool:
        """Whether this is the CI-sized run."""
        return self.profile.name == "quick"

    def stack(self) -> BenchStack:
        """The offline stack, started on first use and shared by every suite."""
        if self._stack is None:
            self._stack = BenchStack().start()
        return self._stack

    def progress(self, message: str) -> None:
        """A progress line on stderr, so that stdout holds only the table."""
        if self._verbose:
            print(f"  {message}", file=sys.stderr, flush=True)

    def note(self, title: str, lines: list[str]) -> None:
        """Report ``lines`` under ``title`` after the table (and in the JSON)."""
        self.notes.setdefault(title, []).extend(lines)

    def close(self) -> None:
        """Stop the stack if a suite started it."""
        if self._stack is not None:
            self._stack.stop()
            self._stack = None
