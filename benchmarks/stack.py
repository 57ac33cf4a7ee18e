"""The environment every suite shares: mode parameters, progress output and the offline stack.

:class:`BenchStack` wraps :class:`devtools.offline_stack.OfflineStack` (Entra ID emulator over real
HTTPS, app settings, ``REQUESTS_CA_BUNDLE``, the function app served through its own index) and adds
what the benchmarks need: switching token lifetime and refresh margin between figures, counting
upstream token requests, and building the plain-MSAL baselines against the same emulator.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from devtools.functions_host import FunctionsHost, HostResponse
from devtools.offline_stack import OfflineStack
from token_broker import broker
from token_broker.settings import DEFAULT_SCOPE, SETTING_NAMES

if TYPE_CHECKING:
    import msal

    from devtools.entra import EntraEmulator

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


QUICK = Profile("quick", runs=5, warm_iterations=2_000, warmup_iterations=500, baseline_iterations=8,
                stampede_sizes=(50,))
FULL = Profile("full", runs=7, warm_iterations=20_000, warmup_iterations=3_000, baseline_iterations=40,
               stampede_sizes=(50, 200))


class BenchStack:
    """The offline stack with ``client_credentials``, ``CALLER_AUTH=anonymous`` and emulator latency."""

    def __init__(self, *, latency: float = EMULATOR_LATENCY_SECONDS) -> None:
        self.latency = latency
        self._stack = OfflineStack(port=0, grant_type="client_credentials", caller_auth="anonymous", latency=latency)
        self._saved: dict[str, str] = {}

    def start(self) -> Self:
        """Start the emulator and the app; settings exported by the shell are set aside meanwhile."""
        # A POWERBI_* value left in the developer's shell would silently change what is measured.
        self._saved = {name: os.environ.pop(name) for name in SETTING_NAMES if name in os.environ}
        self._stack.start()
        return self

    def stop(self) -> None:
        """Stop everything and put the environment back."""
        self._stack.stop()
        os.environ.pop(_MARGIN, None)
        os.environ.update(self._saved)
        broker.reset()

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
        broker.reset()  # a new broker: new settings, new MSAL application, empty token cache
        self.entra.reset_counters()

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

    def close(self) -> None:
        """Stop the stack if a suite started it."""
        if self._stack is not None:
            self._stack.stop()
            self._stack = None
