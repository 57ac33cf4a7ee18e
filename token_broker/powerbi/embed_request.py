"""Parsing and validating embed requests (body of ``POST /api/embed-token``, or one report by route).

Everything here comes from the caller and is treated as untrusted: ids must be GUIDs, unknown fields
are rejected, and Power BI's documented limits are enforced before anything is sent anywhere.
Identity (row-level security) never comes from the request: see :mod:`token_broker.powerbi.embed`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config.reader import is_guid
from ..support.errors import RequestError

MAX_ITEMS = 50  # GenerateToken V2: at most 50 reports, datasets and target workspaces
MAX_LIFETIME_MINUTES = 1440
BODY_FIELDS = frozenset({"reports", "datasets", "workspaceId", "lifetimeMinutes"})
_REPORT_FIELDS = frozenset({"id", "workspaceId", "allowEdit"})
_DATASET_FIELDS = frozenset({"id"})


@dataclass(frozen=True, order=True)
class ReportRef:
    """One report to embed, in its workspace."""

    id: str
    workspace_id: str
    allow_edit: bool = False


@dataclass(frozen=True)
class EmbedRequest:
    """A validated embed request. Ids are lower-case; reports and datasets are sorted (cache keys)."""

    reports: tuple[ReportRef, ...]
    datasets: tuple[str, ...]
    dataset_workspace_id: str | None
    lifetime_minutes: int | None


def _bad(message: str, code: str = "invalid_embed_request") -> RequestError:
    return RequestError(message, code=code)


def guid(value: Any, where: str) -> str:
    """``value`` as a lower-case GUID, or a 400 naming ``where``."""
    if not is_guid(value):
        raise _bad(f"{where} must be a GUID (the id in the Power BI URL).")
    return value.lower()


def _object(value: Any, where: str, allowed: frozenset[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(f"{where} must be a JSON object.")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise _bad(f"Unknown field(s) in {where}: {', '.join(unknown)[:200]}. Allowed: {', '.join(sorted(allowed))}.",
                   code="unknown_field")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _bad(f"{where} must be a JSON array.")
    if len(value) > MAX_ITEMS:
        raise _bad(f"{where} has {len(value)} items; Power BI allows at most {MAX_ITEMS} in one embed token.",
                   code="embed_limit_exceeded")
    return value


def parse_embed_request(body: dict[str, Any], *, default_workspace_id: str | None) -> EmbedRequest:
    """Validate a ``POST /api/embed-token`` body (already checked for unknown top-level fields)."""
    workspace = guid(body["workspaceId"], "workspaceId") if body.get("workspaceId") is not None else None
    workspace = workspace or default_workspace_id
    reports: dict[str, ReportRef] = {}
    raw_reports = _list(body.get("reports"), "reports") if "reports" in body else []
    if not raw_reports:
        raise _bad("Name at least one report: {\"reports\": [{\"id\": \"<report id>\"}]}.")
    for index, item in enumerate(raw_reports):
        where = f"reports[{index}]"
        report = _object(item, where, _REPORT_FIELDS)
        report_id = guid(report.get("id"), f"{where}.id")
        report_workspace = guid(report["workspaceId"], f"{where}.workspaceId") if report.get("workspaceId") \
            else workspace
        if report_workspace is None:
            raise _bad(f"{where} names no workspace and POWERBI_WORKSPACE_ID is not set; add workspaceId.",
                       code="workspace_required")
        allow_edit = report.get("allowEdit", False)
        if not isinstance(allow_edit, bool):
            raise _bad(f"{where}.allowEdit must be true or false.")
        if report_id in reports:
            raise _bad(f"{where} lists report {report_id} a second time.")
        reports[report_id] = ReportRef(report_id, report_workspace, allow_edit)
    datasets = sorted({guid(_object(item, f"datasets[{i}]", _DATASET_FIELDS).get("id"), f"datasets[{i}].id")
                       for i, item in enumerate(_list(body.get("datasets", []), "datasets"))})
    if datasets and workspace is None:
        raise _bad("datasets need a workspace: add workspaceId (or set POWERBI_WORKSPACE_ID).",
                   code="workspace_required")
    lifetime = body.get("lifetimeMinutes")
    if isinstance(lifetime, float) and lifetime.is_integer():
        lifetime = int(lifetime)  # JSON has one number type: 30.0 is the integer 30
    if lifetime is not None and (isinstance(lifetime, bool) or not isinstance(lifetime, int)
                                 or not 1 <= lifetime <= MAX_LIFETIME_MINUTES):
        raise _bad(f"lifetimeMinutes must be a whole number from 1 to {MAX_LIFETIME_MINUTES}.")
    return EmbedRequest(tuple(sorted(reports.values())), tuple(datasets), workspace, lifetime)


def single_report_request(report_id: str, query: dict[str, str], *, default_workspace_id: str | None) -> EmbedRequest:
    """The request of ``GET /api/reports/{reportId}/embed?workspaceId=``."""
    unknown = sorted(set(query) - {"workspaceId", "code"})  # `code` is the Functions host's key parameter
    if unknown:
        raise _bad(f"Unknown query parameter(s): {', '.join(unknown)[:200]}. Allowed: workspaceId.",
                   code="unknown_field")
    body: dict[str, Any] = {"reports": [{"id": report_id}]}
    if query.get("workspaceId"):
        body["workspaceId"] = query["workspaceId"]
    return parse_embed_request(body, default_workspace_id=default_workspace_id)
