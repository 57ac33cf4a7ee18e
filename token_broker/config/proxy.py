"""Settings of the Power BI REST proxy (``/api/powerbi/v1.0/myorg/...``): the ``POWERBI_PROXY_*`` part of the contract.

The proxy is off until ``POWERBI_PROXY_ENABLED=true``. It forwards only the operations named by
``POWERBI_PROXY_OPERATIONS`` (default: the read-only set of
:data:`DEFAULT_OPERATIONS`), only inside ``EMBED_ALLOWED_WORKSPACES`` (and
the report and dataset allow-lists), and never to anonymous callers unless
``POWERBI_PROXY_ALLOW_ANONYMOUS=true``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .reader import SettingReader, SettingSpec

#: Every Power BI REST operation the proxy can check (the table is token_broker.powerbi.proxy_request's).
OPERATIONS = frozenset({"GetReportsInGroup", "GetReportInGroup", "GetPagesInGroup", "GetDatasetsInGroup",
                        "GetDatasetInGroup", "GetRefreshHistoryInGroup", "ExecuteQueriesInGroup",
                        "GetDatasourcesInGroup", "GetParametersInGroup"})
#: What the proxy forwards unless POWERBI_PROXY_OPERATIONS says otherwise: read-only, no connection details.
DEFAULT_OPERATIONS = frozenset({"GetReportsInGroup", "GetReportInGroup", "GetPagesInGroup", "GetDatasetsInGroup",
                                "GetDatasetInGroup", "GetRefreshHistoryInGroup", "ExecuteQueriesInGroup"})

PROXY_SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec("POWERBI_PROXY_ENABLED", "Serve the Power BI REST proxy at /api/powerbi/v1.0/myorg/...", "false"),
    SettingSpec("POWERBI_PROXY_OPERATIONS", "Power BI REST operations the proxy forwards, comma separated; "
                "default: the read-only set (reports, pages, datasets, refresh history, executeQueries)."),
    SettingSpec("POWERBI_PROXY_ALLOW_ANONYMOUS", "Let the proxy serve callers when CALLER_AUTH=anonymous.", "false"),
    SettingSpec("POWERBI_PROXY_QUERY_CACHE_SECONDS", "Seconds an executeQueries result is reused (0: off).", "30"),
    SettingSpec("POWERBI_PROXY_QUERY_CACHE_MAX_ENTRIES", "Most executeQueries results kept in memory.", "1000"),
    SettingSpec("POWERBI_PROXY_QUERIES_PER_MINUTE", "executeQueries calls per minute per Power BI identity "
                "(Power BI allows 120 per user).", "100"),
    SettingSpec("POWERBI_PROXY_MAX_RESPONSE_BYTES", "Largest Power BI response the proxy passes on, bytes.",
                str(4 * 1024 * 1024)),
)

#: Power BI's own limit of query requests per minute per user (Datasets - Execute Queries, Limitations).
POWERBI_QUERIES_PER_MINUTE = 120


@dataclass(frozen=True)
class ProxySettings:
    """Validated proxy settings."""

    enabled: bool = False
    operations: frozenset[str] = DEFAULT_OPERATIONS
    allow_anonymous: bool = False
    query_cache_seconds: int = 30
    query_cache_max_entries: int = 1000
    queries_per_minute: int = 100
    max_response_bytes: int = 4 * 1024 * 1024


def read_proxy_settings(read: SettingReader, *, allowed_workspaces: frozenset[str],
                        caller_auth: str | None) -> ProxySettings:
    """Read and validate the proxy settings, adding problems to ``read``."""
    enabled = read.flag("POWERBI_PROXY_ENABLED")
    names = {name.lower(): name for name in OPERATIONS}
    operations = DEFAULT_OPERATIONS
    if read.is_set("POWERBI_PROXY_OPERATIONS"):
        given = read.csv("POWERBI_PROXY_OPERATIONS")
        unknown = [g for g in given if g.lower() not in names]
        if unknown:
            position = given.index(unknown[0]) + 1
            read.problem("POWERBI_PROXY_OPERATIONS", f"POWERBI_PROXY_OPERATIONS names an operation the proxy does not "
                         f"know (item {position}); known operations: {', '.join(sorted(OPERATIONS))}.")
        operations = frozenset(names[g.lower()] for g in given if g.lower() in names)
    allow_anonymous = read.flag("POWERBI_PROXY_ALLOW_ANONYMOUS")
    settings = ProxySettings(
        enabled=enabled,
        operations=operations,
        allow_anonymous=allow_anonymous,
        query_cache_seconds=read.integer("POWERBI_PROXY_QUERY_CACHE_SECONDS", minimum=0, maximum=3600),
        query_cache_max_entries=read.integer("POWERBI_PROXY_QUERY_CACHE_MAX_ENTRIES", minimum=1, maximum=100_000),
        queries_per_minute=read.integer("POWERBI_PROXY_QUERIES_PER_MINUTE", minimum=1,
                                        maximum=POWERBI_QUERIES_PER_MINUTE),
        max_response_bytes=read.integer("POWERBI_PROXY_MAX_RESPONSE_BYTES", minimum=1024, maximum=64 * 1024 * 1024),
    )
    if not enabled:
        return settings
    if not allowed_workspaces:
        read.problem("EMBED_ALLOWED_WORKSPACES", "POWERBI_PROXY_ENABLED=true needs EMBED_ALLOWED_WORKSPACES: the proxy "
                     "forwards calls only for the workspaces listed there.")
    if not operations:
        read.problem("POWERBI_PROXY_OPERATIONS", "POWERBI_PROXY_OPERATIONS lists no operation, so the proxy refuses "
                     "every call; list operations or set POWERBI_PROXY_ENABLED=false.", severity="warning")
    if caller_auth == "anonymous" and not allow_anonymous:
        read.problem("POWERBI_PROXY_ALLOW_ANONYMOUS", "CALLER_AUTH=anonymous: the proxy refuses every call (anyone "
                     "could read data with the broker's rights). Use CALLER_AUTH=jwt, or set "
                     "POWERBI_PROXY_ALLOW_ANONYMOUS=true deliberately.", severity="warning")
    elif caller_auth == "anonymous":
        read.problem("POWERBI_PROXY_ALLOW_ANONYMOUS", "POWERBI_PROXY_ALLOW_ANONYMOUS=true with CALLER_AUTH=anonymous: "
                     "anyone who can reach the function reads data with the broker's Power BI rights.",
                     severity="warning")
    return settings
