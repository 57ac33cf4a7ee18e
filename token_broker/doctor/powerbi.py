"""Stage 4 of ``python -m token_broker doctor``: Power BI content as the principal sees it.

Every allowed workspace is visible (and on a dedicated capacity, else a warning), every allowed report
resolves in one of them, and a dataset with row-level security can get the effective identity embed
tokens need (see :mod:`.checks` for why a missing one is a failure).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from ..support.errors import BrokerError, PowerBINotAuthorizedError, PowerBINotFoundError
from . import proxy
from .check import FAIL, OK, SKIP, WARN, Check, failed, unverified_claims

if TYPE_CHECKING:
    from ..aad.tokens import AccessToken
    from ..config.contract import Settings
    from ..powerbi.access import PowerBIAccess
    from ..powerbi.client import PowerBIClient, ReportInfo


class PowerBIChecks:
    """Adds the Power BI checks to a checklist; ``effective`` are the settings as read (for their order)."""

    def __init__(self, add: Callable[[Check], None], effective: Mapping[str, str]) -> None:
        self._add = add
        self._effective = effective

    def run(self, settings: Settings, token: AccessToken) -> None:
        """Check every allowed workspace, report and dataset with ``token``."""
        embed = settings.embed
        if settings.profiles.enabled:  # multitenancy: the content belongs to the customers' profiles
            from .profiles import check_profiles

            check_profiles(self._add, settings, token)
            return
        if not embed.enabled:
            self._add(Check("powerbi", SKIP, "EMBED_ALLOWED_WORKSPACES is not set, so embed tokens are off and no "
                           "Power BI content is checked."))
            return
        from ..powerbi.access import PowerBIAccess
        from ..powerbi.client import PowerBIClient

        client = PowerBIClient(settings.api_url, timeout=settings.http_timeout_seconds)
        access = PowerBIAccess(token.value)  # the service principal (or master user) itself
        claims = unverified_claims(token.value)
        who = (f" The principal is object id {claims.get('oid')} (app id {claims.get('appid') or claims.get('azp')})."
               if claims.get("oid") else "")
        visible: dict[str, str] = {}
        for workspace_id in self._in_configured_order("EMBED_ALLOWED_WORKSPACES", embed.allowed_workspaces):
            check = f"workspace:{workspace_id}"
            try:
                workspace = client.get_workspace(access, workspace_id)
            except BrokerError as err:
                self._add(failed(check, err, hint=who if isinstance(err, PowerBINotAuthorizedError) else ""))
                continue
            visible[workspace_id] = workspace.name
            if workspace.on_dedicated_capacity:
                self._add(Check(check, OK, f"'{workspace.name}' is visible to the principal, on a dedicated capacity"))
            else:
                self._add(Check(check, WARN, f"'{workspace.name}' is on shared capacity", "Power BI issues only a "
                               "limited number of embed tokens for development on shared capacity. Assign the "
                               "workspace to an Embedded (A/EM) or Fabric (F) capacity.",
                               "powerbi_embed_quota_exceeded"))
        if embed.allowed_reports is None:
            self._add(Check("reports", SKIP, "EMBED_ALLOWED_REPORTS is not set, so any report in the allowed "
                           "workspaces may be embedded; list report ids there to have each one checked."))
            return
        hidden = sorted(embed.allowed_workspaces - set(visible))
        checked_datasets: set[tuple[str, str]] = set()
        for report_id in self._in_configured_order("EMBED_ALLOWED_REPORTS", embed.allowed_reports):
            report = self._report(client, access, report_id, visible, hidden)
            if report is not None and (report.dataset_workspace_id, report.dataset_id) not in checked_datasets:
                checked_datasets.add((report.dataset_workspace_id, report.dataset_id))
                self._dataset(client, access, report, settings)

    def _in_configured_order(self, setting: str, ids: frozenset[str]) -> list[str]:
        """The ids as the setting lists them, so the checklist reads like the configuration."""
        listed = (item.strip().lower() for item in (self._effective.get(setting) or "").split(","))
        return [item for item in dict.fromkeys(listed) if item in ids]

    def _report(self, client: PowerBIClient, access: PowerBIAccess, report_id: str, visible: Mapping[str, str],
                hidden: list[str]) -> ReportInfo | None:
        check = f"report:{report_id}"
        not_found: BrokerError | None = None
        for workspace_id, name in visible.items():
            try:
                report = client.get_report(access, workspace_id, report_id)
            except PowerBINotFoundError as err:
                not_found = err
                continue
            except BrokerError as err:
                self._add(failed(check, err))
                return None
            self._add(Check(check, OK, f"'{report.name}' in workspace '{name}', dataset {report.dataset_id}"))
            return report
        if hidden:
            self._add(Check(check, SKIP, "not in the workspaces the principal can see; not checked in "
                           f"{', '.join(hidden)} (see above)"))
        elif not_found is not None:
            searched = ", ".join(f"'{name}'" for name in visible.values())
            self._add(failed(check, not_found, hint=f" It is in none of EMBED_ALLOWED_WORKSPACES ({searched}): correct "
                            "the id in EMBED_ALLOWED_REPORTS, or add the report's workspace to "
                            "EMBED_ALLOWED_WORKSPACES."))
        return None

    def _dataset(self, client: PowerBIClient, access: PowerBIAccess, report: ReportInfo, settings: Settings) -> None:
        check = f"dataset:{report.dataset_id}"
        try:
            dataset = client.get_dataset(access, report.dataset_workspace_id, report.dataset_id)
        except BrokerError as err:
            self._add(failed(check, err))
            return
        for proxy_check in proxy.dataset_checks(settings, dataset, report.name):  # the Power BI proxy
            self._add(proxy_check)
        if not dataset.requires_identity:
            self._add(Check(check, OK, f"no row-level security (report '{report.name}'): no effective identity "
                           "needed"))
            return
        embed, callers = settings.embed, settings.callers
        what = f"Dataset {dataset.id} (report '{report.name}') uses row-level security"
        if callers.mode not in ("jwt", "easyauth"):
            mode = f"CALLER_AUTH={callers.mode}" if callers.mode else "an unset CALLER_AUTH"
            self._add(Check(check, FAIL, f"row-level security (report '{report.name}'), but {mode} gives no "
                           "username", (
                f"{what}: each embed token needs the signed-in caller's username (claim {callers.username_claim}), "
                f"which {mode} does not provide, so every embed request for it is refused. "
                "Use CALLER_AUTH=jwt (or easyauth)."), "embed_identity_required"))
            return
        mapped = "; ".join(f"{role}={','.join(roles)}" for role, roles in embed.role_map)
        if dataset.requires_roles and not (embed.fixed_roles or embed.role_map):
            self._add(Check(check, FAIL, f"row-level security with required roles (report '{report.name}'), but "
                           "EMBED_RLS_ROLES gives none", (
                f"{what} and requires roles; EMBED_RLS_ROLES gives none, so the broker refuses every embed request "
                "for it. Set EMBED_RLS_ROLES to the dataset's roles: 'Role' for every caller, "
                "or 'CallerAppRole=Role1,Role2' entries separated by ';'."), "embed_rls_roles_missing"))
            return
        roles = ", ".join(filter(None, (f"for everyone {','.join(embed.fixed_roles)}" if embed.fixed_roles else "",
                                        f"by app role {mapped}" if mapped else ""))) or "none"
        self._add(Check(check, OK, f"row-level security (report '{report.name}'): effective identity from the "
                       f"caller's {callers.username_claim}, roles {roles}"))
