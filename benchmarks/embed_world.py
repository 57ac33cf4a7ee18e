"""The Power BI content and users the embed figures share: 4 reports on one RLS dataset, 5 users.

Every report uses the same row-level-security dataset, so every embed token carries the caller's
effective identity and tokens of different users differ: 4 reports by 5 users are 20 distinct
(report, user) pairs, 20 GenerateToken calls for a broker that caches, however many requests.
The service principal of the offline stack's app registration is a member of the workspace.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from devtools.offline_stack import CLIENT_ID, TENANT_ID
from devtools.powerbi import PowerBIEmulator

if TYPE_CHECKING:
    from .stack import BenchStack

REPORT_COUNT = 4
USER_COUNT = 5
#: The caller app role mapped to the dataset's RLS role by ``EMBED_RLS_ROLES``.
CALLER_ROLE = "Report.Viewer"
DATASET_ROLE = "Region"
_USER_PASSWORD = "bench-user-Passw0rd!value"  # the emulator needs one; nothing signs in with it


@dataclass(frozen=True)
class EmbedWorld:
    """The emulated workspace, its reports and the users who embed them."""

    powerbi: PowerBIEmulator
    workspace_id: str
    dataset_id: str
    report_ids: tuple[str, ...]
    usernames: tuple[str, ...]

    def pairs(self) -> list[tuple[str, str]]:
        """The 20 (report id, username) pairs, users varying fastest."""
        return list(itertools.product(self.report_ids, self.usernames))

    def embed_settings(self) -> dict[str, str]:
        """App settings that turn embed tokens on for this workspace (without choosing CALLER_AUTH)."""
        return {
            "POWERBI_API_URL": self.powerbi.api_url,
            "POWERBI_WORKSPACE_ID": self.workspace_id,
            "EMBED_ALLOWED_WORKSPACES": self.workspace_id,
            "EMBED_RLS_ROLES": f"{CALLER_ROLE}={DATASET_ROLE}",
        }

    def jwt_settings(self, stack: BenchStack) -> dict[str, str]:
        """Embed settings with ``CALLER_AUTH=jwt`` verifying the Entra ID emulator's user tokens."""
        return {
            **self.embed_settings(),
            "CALLER_AUTH": "jwt",
            "CALLER_JWT_ISSUER": stack.entra.issuer(TENANT_ID),
            "CALLER_JWT_AUDIENCE": f"api://{CLIENT_ID}",
        }

    def request_body(self, report_id: str) -> dict[str, object]:
        """The ``POST /api/embed-token`` body for one report."""
        return {"reports": [{"id": report_id}], "workspaceId": self.workspace_id}


def build_embed_world(stack: BenchStack) -> EmbedWorld:
    """Create the workspace, dataset, reports and users in the stack's emulators."""
    powerbi = stack.powerbi()
    service_principal = stack.entra.service_principal_id(TENANT_ID, CLIENT_ID)
    workspace = powerbi.add_workspace(name="Benchmarks", members={service_principal})
    dataset = powerbi.add_dataset(workspace, name="Sales by region", rls_roles=[DATASET_ROLE])
    reports = tuple(powerbi.add_report(workspace, name=f"Report {n}", dataset_id=dataset)
                    for n in range(1, REPORT_COUNT + 1))
    usernames = tuple(f"bench-user-{n}@contoso.com" for n in range(1, USER_COUNT + 1))
    for username in usernames:
        stack.entra.add_user(TENANT_ID, username, _USER_PASSWORD, roles=[CALLER_ROLE])
    return EmbedWorld(powerbi, workspace, dataset, reports, usernames)
