"""The process the memory figure measures: many distinct callers, then its resident set size.

Run by :mod:`benchmarks.memory` as ``python -m benchmarks.memory_child '<json>'`` in a fresh process
with the app settings in its environment (``CALLER_AUTH=easyauth`` with local principals allowed,
rate limiting on, the cache bounds under test). It calls the registered functions directly, as the
Functions worker does, so nothing but the app and its dependencies is resident. Every caller is a
distinct ``X-MS-CLIENT-PRINCIPAL`` identity (its own rate-limit bucket and RLS username): in the
first round each asks for an embed token (a cache miss, one GenerateToken call to the parent's
emulator), in every later round for ``/api/token``. Prints one JSON line: RSS at each stage (KiB),
the entries the caches hold and the request count.
"""

from __future__ import annotations

import base64
import gc
import json
import sys
from collections.abc import Callable
from typing import Any

_OID = "http://schemas.microsoft.com/identity/claims/objectidentifier"
_TID = "http://schemas.microsoft.com/identity/claims/tenantid"


def _status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` field in KiB (``VmRSS``, ``VmHWM``), or None where there is no ``/proc``."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_kib() -> int:
    """The current resident set size (``VmRSS``), in KiB; without ``/proc``, the peak stands in for it."""
    current = _status_kib("VmRSS")
    return current if current is not None else peak_rss_kib()


def peak_rss_kib() -> int:
    """The peak resident set size of this process (``VmHWM``), in KiB.

    ``getrusage``'s ``ru_maxrss`` is the fallback only: on Linux it keeps the high-water mark of the
    parent process this one was forked from, which is larger than anything measured here.
    """
    peak = _status_kib("VmHWM")
    if peak is not None:
        return peak
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def client_principal(index: int, tenant_id: str) -> str:
    """An App Service Authentication principal for caller ``index`` (its own object id and username)."""
    document = {
        "auth_typ": "aad",
        "name_typ": "preferred_username",
        "role_typ": "roles",
        "claims": [
            {"typ": _OID, "val": f"00000000-0000-4000-8000-{index:012d}"},
            {"typ": _TID, "val": tenant_id},
            {"typ": "preferred_username", "val": f"caller-{index}@contoso.com"},
            {"typ": "roles", "val": "Report.Viewer"},
        ],
    }
    return base64.b64encode(json.dumps(document).encode()).decode()


def _settled_rss() -> int:
    gc.collect()  # only garbage cycles; what the caches hold stays
    return rss_kib()


def main(argv: list[str]) -> int:
    """Run the workload described by the JSON argument and print the measurements."""
    job: dict[str, Any] = json.loads(argv[0])
    started = _settled_rss()
    import azure.functions as func

    import function_app

    functions = {f.get_function_name(): f.get_user_function() for f in function_app.app.get_functions()}
    imported = _settled_rss()
    body = json.dumps({"reports": [{"id": job["report_id"]}], "workspaceId": job["workspace_id"]}).encode()

    def invoke(name: str, method: str, path: str, principal: str, payload: bytes = b"") -> None:
        function: Callable[[func.HttpRequest], func.HttpResponse] = functions[name]
        headers = {"x-ms-client-principal": principal}
        if payload:
            headers["content-type"] = "application/json"
        response = function(func.HttpRequest(method, f"http://localhost:7071{path}", headers=headers, params={},
                                             route_params={}, body=payload))
        if response.status_code != 200:
            raise RuntimeError(f"{path} answered {response.status_code}: {response.get_body()[:300]!r}")

    tenant_id = job["tenant_id"]
    warm = client_principal(job["callers"], tenant_id)  # one more caller: MSAL loaded, token and metadata cached
    invoke("token", "GET", "/api/token", warm)
    invoke("embed_token", "POST", "/api/embed-token", warm, body)
    before = _settled_rss()
    requests = 0
    for round_number in range(job["requests_per_caller"]):
        for index in range(job["callers"]):
            principal = client_principal(index, tenant_id)
            if round_number == 0:
                invoke("embed_token", "POST", "/api/embed-token", principal, body)
            else:
                invoke("token", "GET", "/api/token", principal)
            requests += 1
    after = _settled_rss()

    from token_broker import runtime

    current = runtime.current_broker()
    print(json.dumps({
        "rss_start_kib": started, "rss_imported_kib": imported, "rss_before_kib": before, "rss_after_kib": after,
        "peak_rss_kib": peak_rss_kib(), "requests": requests, "embed_cached": current.embed.cached_tokens,
        "rate_limit_callers": len(current.rate_limiter) if current.rate_limiter is not None else 0,
    }), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
