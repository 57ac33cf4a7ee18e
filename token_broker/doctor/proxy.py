"""The doctor's checks of the Power BI proxy (``POWERBI_PROXY_*``), called by :mod:`token_broker.doctor_checks`.

Settings: whether the proxy is on, what it forwards and how it keeps Power BI's query budget. Power BI:
a dataset with row-level security that the proxy would refuse to query because the service principal
cannot (``powerbi_proxy_rls_not_supported``) is a warning, since its reports still embed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .check import OK, WARN, Check

if TYPE_CHECKING:
    from ..config.contract import Settings
    from ..powerbi.client import DatasetInfo


def settings_checks(settings: Settings) -> list[Check]:
    """One line about the proxy's configuration when it is on (its setting problems are reported with the others)."""
    proxy = settings.proxy
    if not proxy.enabled:
        return []  # off, as by default: nothing to say
    operations = ", ".join(sorted(proxy.operations)) or "none"
    cache = f"{proxy.query_cache_seconds} s" if proxy.query_cache_seconds else "off"
    detail = (f"on for {len(settings.embed.allowed_workspaces)} workspace(s): {operations}; query cache {cache}, "
              f"{proxy.queries_per_minute} queries/minute per Power BI identity, answers up to "
              f"{proxy.max_response_bytes} bytes")
    if settings.caller_auth == "anonymous" and not proxy.allow_anonymous:
        return [Check("powerbi_proxy", WARN, detail, "CALLER_AUTH=anonymous, so the proxy refuses every call. Use "
                      "CALLER_AUTH=jwt (or set POWERBI_PROXY_ALLOW_ANONYMOUS=true deliberately).",
                      "powerbi_proxy_anonymous_refused")]
    return [Check("powerbi_proxy", OK, detail)]


def dataset_checks(settings: Settings, dataset: DatasetInfo, report_name: str) -> list[Check]:
    """A warning when the proxy would refuse queries on ``dataset`` (row-level security under client_credentials)."""
    proxy = settings.proxy
    if not (proxy.enabled and "ExecuteQueriesInGroup" in proxy.operations and dataset.requires_identity
            and settings.grant_type == "client_credentials"):
        return []
    return [Check(f"powerbi_proxy:dataset:{dataset.id}", WARN,
                  f"row-level security (report '{report_name}'): the proxy refuses executeQueries on it",
                  "Power BI does not support service principals in executeQueries on datasets with row-level "
                  "security, so the proxy refuses them. Use POWERBI_GRANT_TYPE=on_behalf_of for data calls, or show "
                  "this data through embed tokens.", "powerbi_proxy_rls_not_supported")]
