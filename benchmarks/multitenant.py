"""Multitenancy: 1,000 customers x 2 users embedding through Power BI service principal profiles.

Each customer has its own profile (owned by the offline stack's service principal) and a workspace owned by that
profile, with one report on a dataset without row-level security. Each user is its own effective identity (the
broker keys embed tokens by identity), so a customer costs Get Report and Get Dataset once (metadata is cached
per profile) and one GenerateToken per user. The broker runs in profile mode (``POWERBI_PROFILE_CLAIM=customer``,
``POWERBI_PROFILES`` mapping the 1,000 customers) with ``CALLER_AUTH=easyauth`` principals (the cheapest verified
identity to forge locally), in a fresh process (:func:`child`, run as ``python -m benchmarks.multitenant
'<json>'``) that calls the registered functions directly, as :mod:`benchmarks.memory_child` does. Every user asks
for its customer's report ``rounds`` times (1 in quick mode, 2 in full mode).

Reported: the Power BI calls per customer (each with the customer's ``X-PowerBI-Profile-Id``: 2 + users for a
broker that caches per profile, however many rounds), the Entra ID
token requests (one service principal token serves every profile), and the resident set growth per 1,000
customers (their embed tokens and metadata). The emulators run in the parent, without latency.
"""

from __future__ import annotations

import base64
import gc
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from devtools.offline_stack import CLIENT_ID, TENANT_ID

from .report import Figure, Target
from .stack import BenchStack, RunContext

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "the same requests as one identity (profiles off; the service principal a member of every workspace)"
CUSTOMERS = 1_000
USERS_PER_CUSTOMER = 2
KIB_PER_MB = 1024.0
_OID = "http://schemas.microsoft.com/identity/claims/objectidentifier"


def _principal(customer: int, user: int) -> str:
    claims = [{"typ": _OID, "val": f"00000000-0000-4000-{user:04d}-{customer:012d}"},
              {"typ": "preferred_username", "val": f"user-{user}@customer-{customer}.example"},
              {"typ": "customer", "val": f"customer-{customer:05d}"}]
    document = {"auth_typ": "aad", "name_typ": "preferred_username", "role_typ": "roles", "claims": claims}
    return base64.b64encode(json.dumps(document).encode()).decode()


def _world(stack: BenchStack) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """Profiles, workspaces and reports for every customer: the app settings, and customer -> (workspace, report)."""
    powerbi = stack.powerbi()
    owner = stack.entra.service_principal_id(TENANT_ID, CLIENT_ID)
    mapping: dict[str, str] = {}
    content: dict[str, tuple[str, str]] = {}
    for number in range(CUSTOMERS):
        customer = f"customer-{number:05d}"
        profile = powerbi.add_profile(owner, f"Customer {number}")
        workspace = powerbi.add_workspace(name=f"Customer {number}", members={profile})
        dataset = powerbi.add_dataset(workspace, name="Sales")
        content[customer] = (workspace, powerbi.add_report(workspace, name="Overview", dataset_id=dataset))
        mapping[customer] = profile
    settings = {"POWERBI_API_URL": powerbi.api_url, "CALLER_AUTH": "easyauth", "CALLER_EASYAUTH_ALLOW_LOCAL": "true",
                "POWERBI_PROFILE_CLAIM": "customer", "POWERBI_PROFILES": json.dumps(mapping),
                "EMBED_ALLOWED_WORKSPACES": ",".join(w for w, _ in content.values())}
    return settings, content


class _Measured:
    """One child run: its measurements and the calls the emulators received."""

    def __init__(self, result: dict[str, Any], api: list[Any], generate_token_calls: int, entra_requests: int) -> None:
        self.result, self.api = result, api
        self.generate_token_calls, self.entra_requests = generate_token_calls, entra_requests
        self.requests = int(result["requests"])
        self.growth_mb = (result["rss_after_kib"] - result["rss_before_kib"]) / KIB_PER_MB

    @property
    def with_profile(self) -> int:
        return sum(1 for r in self.api if any(k.lower() == "x-powerbi-profile-id" for k in r.headers))


def _measure(stack: BenchStack, settings: dict[str, str], job: dict[str, Any]) -> _Measured:
    powerbi = stack.powerbi()
    stack.entra.latency = powerbi.latency = 0.0
    powerbi.reset_counters()
    stack.entra.reset_counters()
    try:
        completed = subprocess.run([sys.executable, "-m", "benchmarks.multitenant", json.dumps(job)], cwd=ROOT,
                                   env=stack.child_environ(settings), capture_output=True, text=True, timeout=900,
                                   check=False)
        api = [r for r in powerbi.requests if r.path.startswith("/v1.0/")]
        generate_token_calls, entra_requests = powerbi.generate_token_calls(), stack.entra.token_requests()
    finally:
        stack.configure()
        powerbi.latency = stack.latency
    if completed.returncode != 0:
        raise RuntimeError(f"multitenant child failed (exit {completed.returncode}): {completed.stderr[-3000:]}")
    return _Measured(json.loads(completed.stdout.strip().splitlines()[-1]), api, generate_token_calls,
                     entra_requests)


def run(ctx: RunContext) -> list[Figure]:
    """Profile mode, then the same workload as one identity (the baseline), each in a fresh process."""
    stack = ctx.stack()
    rounds = 1 if ctx.profile.name == "quick" else 2
    settings, content = _world(stack)
    job = {"rounds": rounds, "content": content}
    profiles = _measure(stack, settings, job)
    expected = CUSTOMERS * USERS_PER_CUSTOMER * rounds
    if profiles.with_profile != len(profiles.api) or profiles.requests != expected:
        raise RuntimeError(f"multitenant: {len(profiles.api) - profiles.with_profile} Power BI calls without a "
                           f"profile header, {profiles.requests} requests")
    # The baseline: the service principal itself a member of every customer's workspace, no profiles.
    powerbi = stack.powerbi()
    owner = stack.entra.service_principal_id(TENANT_ID, CLIENT_ID)
    for workspace, _ in content.values():
        powerbi.grant(workspace, owner)
    single = {k: v for k, v in settings.items() if k not in ("POWERBI_PROFILE_CLAIM", "POWERBI_PROFILES")}
    one_identity = _measure(stack, single, job)
    if one_identity.with_profile or one_identity.requests != expected:
        raise RuntimeError("multitenant baseline: a profile header without profiles, or requests missing")
    for run_ in (profiles, one_identity):
        ctx.progress(f"multitenant: {run_.requests} embed requests, {len(run_.api)} Power BI calls "
                     f"({run_.with_profile} with a profile), {run_.entra_requests} Entra token requests, "
                     f"RSS +{run_.growth_mb:.1f} MB")
    result = profiles.result
    ctx.note("Multitenancy", [
        f"{CUSTOMERS:,} customers x {USERS_PER_CUSTOMER} users x {rounds} round(s) = {expected:,} POST "
        "/api/embed-token in profile mode (easyauth callers, one profile and workspace per customer); baseline: "
        "the same requests with profiles off, the service principal a member of every workspace",
        f"RSS of the profile-mode child: {result['rss_before_kib'] / KIB_PER_MB:.1f} MB after the first customer, "
        f"{result['rss_after_kib'] / KIB_PER_MB:.1f} MB after all; {result['embed_cached']:,} embed tokens cached",
        "POWERBI_PROFILES here is one JSON app setting of ~50 KB; for more customers use App Configuration "
        "key-values TokenBroker:Profiles:<customer> (one key each; docs/MULTITENANCY.md)",
    ])
    workload = f"{expected:,} embed requests of {CUSTOMERS:,} customers x {USERS_PER_CUSTOMER} users"
    per_customer = 2 + USERS_PER_CUSTOMER  # Get Report + Get Dataset per profile, GenerateToken per user identity
    baseline = BASELINE
    return [
        Figure("multitenant.powerbi_calls_per_customer", f"Power BI calls per customer for {workload} (metadata "
               "once per profile, one embed token per user's identity)", "calls", (len(profiles.api) / CUSTOMERS,),
               (len(one_identity.api) / CUSTOMERS,), baseline, target=Target("==", per_customer, every_run=True)),
        Figure("multitenant.generate_token_calls", f"GenerateToken calls for {workload}", "calls",
               (float(profiles.generate_token_calls),), (float(one_identity.generate_token_calls),), baseline,
               target=Target("==", CUSTOMERS * USERS_PER_CUSTOMER, every_run=True)),
        Figure("multitenant.entra_token_requests", "Entra ID token requests (one service principal token for every "
               "profile)", "calls", (float(profiles.entra_requests),), (float(one_identity.entra_requests),),
               baseline, target=Target("==", 1, every_run=True)),
        Figure("multitenant.mb_per_1000_customers", "RSS growth per 1,000 customers (embed tokens + metadata held)",
               "MB", (profiles.growth_mb / (CUSTOMERS / 1000),), (one_identity.growth_mb / (CUSTOMERS / 1000),),
               baseline),
    ]


def child(job: dict[str, Any]) -> dict[str, Any]:
    """In the fresh process: every user of every customer asks for its report; RSS before and after."""
    import azure.functions as func

    import function_app

    from .memory_child import peak_rss_kib, rss_kib

    functions = {f.get_function_name(): f.get_user_function() for f in function_app.app.get_functions()}
    embed = functions["embed_token"]
    content: dict[str, list[str]] = job["content"]

    def invoke(customer: int, user: int) -> None:
        workspace, report = content[f"customer-{customer:05d}"]
        body = json.dumps({"reports": [{"id": report}], "workspaceId": workspace}).encode()
        response = embed(func.HttpRequest("POST", "http://localhost:7071/api/embed-token", body=body, params={},
                                          route_params={}, headers={"x-ms-client-principal": _principal(customer, user),
                                                                    "content-type": "application/json"}))
        if response.status_code != 200:
            raise RuntimeError(f"embed answered {response.status_code}: {response.get_body()[:300]!r}")

    invoke(0, 0)  # warm-up: MSAL loaded, the service principal's token cached (customer 0's calls made)
    gc.collect()
    before = rss_kib()
    requests = 0
    for _ in range(job["rounds"]):
        for customer in range(CUSTOMERS):
            for user in range(USERS_PER_CUSTOMER):
                invoke(customer, user)
                requests += 1
    gc.collect()
    after = rss_kib()
    from token_broker import runtime

    return {"rss_before_kib": before, "rss_after_kib": after, "peak_rss_kib": peak_rss_kib(),
            "requests": requests, "embed_cached": runtime.current_broker().embed.cached_tokens}


if __name__ == "__main__":
    print(json.dumps(child(json.loads(sys.argv[1]))), flush=True)
