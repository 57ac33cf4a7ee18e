"""Settings of embed tokens (the ``EMBED_*`` part of the contract, and the default workspace).

Embed tokens are served only for workspaces listed in ``EMBED_ALLOWED_WORKSPACES`` (and, when set,
only for the reports in ``EMBED_ALLOWED_REPORTS``). Once reports or datasets are listed, a dataset named
in a request must be listed in ``EMBED_ALLOWED_DATASETS`` or back one of the requested reports.
Row-level-security roles come from ``EMBED_RLS_ROLES``: ``;``-separated entries, each either a dataset
role given to every caller (``Viewer``) or a mapping from a caller's app role to dataset roles
(``Report.Admin=Admin,Auditor``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .profiles import Profile
from .reader import SettingReader, SettingSpec, is_guid

EMBED_SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec("POWERBI_WORKSPACE_ID", "Default workspace (group) ID for embed requests that name none."),
    SettingSpec("EMBED_ALLOWED_WORKSPACES", "Workspace IDs embed tokens may be issued for, comma separated."),
    SettingSpec("EMBED_ALLOWED_REPORTS", "If set, only these report IDs may be embedded, comma separated."),
    SettingSpec("EMBED_ALLOWED_DATASETS", "Dataset IDs a request may name besides those backing its reports "
                "(checked once reports or datasets are listed), comma separated."),
    SettingSpec("EMBED_ALLOW_EDIT", "Allow allowEdit embed tokens (for callers with EMBED_EDIT_ROLE).", "false"),
    SettingSpec("EMBED_EDIT_ROLE", "The caller app role that may request allowEdit."),
    SettingSpec("EMBED_RLS_ROLES", "Dataset roles for row-level security: 'Role' or 'CallerRole=Role1,Role2', ';'."),
    SettingSpec("EMBED_RLS_CUSTOM_DATA_CLAIM", "Caller claim passed as customData of the effective identity."),
    SettingSpec("EMBED_TOKEN_LIFETIME_MINUTES", "Default embed token lifetime, minutes.", "60"),
    SettingSpec("EMBED_CACHE_MAX_ENTRIES", "Most embed tokens kept in memory.", "10000"),
)

MAX_ROLE_LENGTH = 50


@dataclass(frozen=True)
class EmbedSettings:
    """Validated embed settings. Ids are lower-cased so that comparisons are exact."""

    default_workspace_id: str | None = None
    allowed_workspaces: frozenset[str] = frozenset()
    allowed_reports: frozenset[str] | None = None
    allowed_datasets: frozenset[str] | None = None
    allow_edit: bool = False
    edit_role: str | None = None
    fixed_roles: tuple[str, ...] = ()
    role_map: tuple[tuple[str, tuple[str, ...]], ...] = field(default=())
    custom_data_claim: str | None = None
    lifetime_minutes: int = 60
    cache_max_entries: int = 10000

    @property
    def enabled(self) -> bool:
        """Embed tokens are served only when at least one workspace is allowed."""
        return bool(self.allowed_workspaces)

    def workspaces_for(self, profile: Profile | None) -> frozenset[str] | None:
        """The workspaces a caller of ``profile`` may name; None when no allow-list is set (nothing is served).

        Every list that is set applies: ``EMBED_ALLOWED_WORKSPACES`` and, in profile mode, the customer's own
        ``workspaces`` (so with both set, a workspace must be in both). Power BI's profile isolation is the
        second wall behind them: a profile sees only the workspaces it belongs to.
        """
        own = profile.workspaces if profile is not None else None
        if own is None:
            return self.allowed_workspaces or None
        return own & self.allowed_workspaces if self.allowed_workspaces else own

    def dataset_roles(self, caller_roles: frozenset[str]) -> tuple[str, ...]:
        """The dataset roles for a caller with these app roles (fixed roles first, no duplicates)."""
        roles = list(self.fixed_roles)
        for caller_role, dataset_roles in self.role_map:
            if caller_role in caller_roles:
                roles.extend(dataset_roles)
        return tuple(dict.fromkeys(roles))


def _guids(read: SettingReader, name: str) -> frozenset[str]:
    values = read.csv(name)
    bad = [v for v in values if not is_guid(v)]
    if bad:
        position = values.index(bad[0]) + 1
        read.problem(name, f"{name} must list GUIDs (copy them from the workspace or report URL); item {position} "
                     "is not one.")
    return frozenset(v.lower() for v in values if is_guid(v))


def _role(read: SettingReader, role: str) -> str | None:
    if not role or len(role) > MAX_ROLE_LENGTH or "," in role or "=" in role:
        read.problem("EMBED_RLS_ROLES", f"A role name is empty, too long or has a comma (1-{MAX_ROLE_LENGTH} "
                     "characters, no commas). Format: 'Role' or 'CallerRole=Role1,Role2', entries separated by ';'.")
        return None
    return role


def read_embed_settings(read: SettingReader) -> EmbedSettings:
    """Read and validate the embed settings, adding problems to ``read``."""
    default_workspace = read.raw("POWERBI_WORKSPACE_ID")
    if default_workspace is not None and not is_guid(default_workspace):
        read.problem("POWERBI_WORKSPACE_ID", "POWERBI_WORKSPACE_ID must be the workspace's GUID (the part after "
                     "/groups/ in its URL).")
        default_workspace = None
    allowed_workspaces = _guids(read, "EMBED_ALLOWED_WORKSPACES")
    allowed_reports = _guids(read, "EMBED_ALLOWED_REPORTS") if read.is_set("EMBED_ALLOWED_REPORTS") else None
    allowed_datasets = _guids(read, "EMBED_ALLOWED_DATASETS") if read.is_set("EMBED_ALLOWED_DATASETS") else None
    if default_workspace and allowed_workspaces and default_workspace.lower() not in allowed_workspaces:
        read.problem("POWERBI_WORKSPACE_ID", "POWERBI_WORKSPACE_ID is not in EMBED_ALLOWED_WORKSPACES, so requests "
                     "that rely on it are always refused; add it or change it.", severity="warning")
    allow_edit = read.flag("EMBED_ALLOW_EDIT")
    edit_role = read.raw("EMBED_EDIT_ROLE")
    if allow_edit and not edit_role:
        read.problem("EMBED_EDIT_ROLE", "EMBED_ALLOW_EDIT=true needs EMBED_EDIT_ROLE: the caller app role that may "
                     "edit reports.")
    fixed: list[str] = []
    mapping: list[tuple[str, tuple[str, ...]]] = []
    for entry in (e.strip() for e in (read.raw("EMBED_RLS_ROLES") or "").split(";")):
        if not entry:
            continue
        caller_role, equals, dataset_roles = entry.partition("=")
        if equals:
            roles = tuple(r for r in (_role(read, x.strip()) for x in dataset_roles.split(",")) if r)
            if caller_role.strip() and roles:
                mapping.append((caller_role.strip(), roles))
            else:
                read.problem("EMBED_RLS_ROLES", "An entry maps no caller role to dataset roles.")
        elif (role := _role(read, entry)) is not None:
            fixed.append(role)
    return EmbedSettings(
        default_workspace_id=default_workspace.lower() if default_workspace else None,
        allowed_workspaces=allowed_workspaces,
        allowed_reports=allowed_reports,
        allowed_datasets=allowed_datasets,
        allow_edit=allow_edit,
        edit_role=edit_role,
        fixed_roles=tuple(fixed),
        role_map=tuple(mapping),
        custom_data_claim=read.raw("EMBED_RLS_CUSTOM_DATA_CLAIM"),
        lifetime_minutes=read.integer("EMBED_TOKEN_LIFETIME_MINUTES", minimum=1, maximum=1440),
        cache_max_entries=read.integer("EMBED_CACHE_MAX_ENTRIES", minimum=1, maximum=1_000_000),
    )
