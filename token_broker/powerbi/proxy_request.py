"""The Power BI REST operations the proxy knows, and how a request path is matched to one of them.

A path is matched only after normalisation: the proxy never forwards the caller's path, it rebuilds the
upstream URL from the matched operation's template and the validated ids. Refused before any upstream
call: encoded separators (``%2F``, ``%5C``) or any ``%`` left after the host's one decoding (double
encoding), backslashes, ``.`` and ``..`` segments, empty segments (``//``), ids that are not GUIDs, the
"My workspace" forms (no ``groups/{groupId}``: the workspace allow-list must always apply) and every
method + path that is not an operation of the table. Literal segments match case-insensitively, as in
Power BI.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from ..config.proxy import DEFAULT_OPERATIONS
from ..config.reader import is_guid
from ..support.errors import CallerForbiddenError, RequestError


@dataclass(frozen=True)
class Operation:
    """One Power BI REST operation (named as in Microsoft's REST reference) the proxy may forward."""

    name: str
    method: str
    template: tuple[str, ...]  # segments after v1.0/myorg; "{groupId}", "{reportId}", "{datasetId}" are GUIDs
    query: frozenset[str] = frozenset()  # query parameters passed on (everything else is refused)
    lists: str | None = None  # "reports" or "datasets": the result is filtered by the allow-lists

    def path(self, ids: dict[str, str]) -> str:
        """The upstream path (below ``POWERBI_API_URL``), rebuilt from the template and validated ids."""
        return "/" + "/".join(ids[s[1:-1]] if s.startswith("{") else s for s in self.template)


_G, _R, _D = "{groupId}", "{reportId}", "{datasetId}"
_TABLE = (
    Operation("GetReportsInGroup", "GET", ("groups", _G, "reports"), lists="reports"),
    Operation("GetReportInGroup", "GET", ("groups", _G, "reports", _R)),
    Operation("GetPagesInGroup", "GET", ("groups", _G, "reports", _R, "pages")),
    Operation("GetDatasetsInGroup", "GET", ("groups", _G, "datasets"), lists="datasets"),
    Operation("GetDatasetInGroup", "GET", ("groups", _G, "datasets", _D)),
    Operation("GetRefreshHistoryInGroup", "GET", ("groups", _G, "datasets", _D, "refreshes"), frozenset({"$top"})),
    Operation("ExecuteQueriesInGroup", "POST", ("groups", _G, "datasets", _D, "executeQueries")),
    # Known but off by default: they reveal data source connection details and parameter values.
    Operation("GetDatasourcesInGroup", "GET", ("groups", _G, "datasets", _D, "datasources")),
    Operation("GetParametersInGroup", "GET", ("groups", _G, "datasets", _D, "parameters")),
)
#: Every operation the proxy can check, by name.
OPERATIONS: dict[str, Operation] = {op.name: op for op in _TABLE}
__all__ = ["DEFAULT_OPERATIONS", "OPERATIONS", "Match", "Operation", "match", "query_parameters", "segments"]
_PREFIX = ("v1.0", "myorg")
_ENCODED_SEPARATOR = re.compile(r"%(2f|5c)", re.IGNORECASE)
_MAX_PATH = 512


@dataclass(frozen=True)
class Match:
    """A request matched to an operation: the operation and its ids (lower-case GUIDs)."""

    operation: Operation
    ids: dict[str, str]

    @property
    def workspace_id(self) -> str:
        return self.ids["groupId"]

    @property
    def upstream_path(self) -> str:
        return self.operation.path(self.ids)


def _refuse_path(detail: str) -> RequestError:
    return RequestError(detail, code="powerbi_proxy_path_invalid", title="The Power BI path is not valid")


def segments(route_path: str, raw_url: str) -> list[str]:
    """The normalised segments of the proxied path, or :class:`RequestError` for a path trick.

    ``route_path`` is the catch-all route value (the host decoded it once, except ``%2F``); ``raw_url``
    the URL as received, checked for encoded separators too.
    """
    raw_path = urlsplit(raw_url).path
    if len(route_path) > _MAX_PATH or len(raw_path) > _MAX_PATH * 3:
        raise _refuse_path("The Power BI path is too long.")
    once = unquote(raw_path)
    if "%" in route_path or "%" in once or _ENCODED_SEPARATOR.search(raw_path):
        raise _refuse_path("The Power BI path has percent-encoded characters after decoding (an encoded '/', '\\' "
                           "or double encoding); send Power BI's path as is.")
    if "\\" in route_path or "\\" in once or any(ord(c) < 0x21 or ord(c) == 0x7F for c in route_path):
        raise _refuse_path("The Power BI path has a backslash, a space or a control character.")
    parts = route_path.split("/")
    if parts and parts[-1] == "":
        parts = parts[:-1]  # one trailing slash is harmless
    if any(p in ("", ".", "..") for p in parts) or "//" in once:
        raise _refuse_path("The Power BI path has an empty, '.' or '..' segment.")
    return parts


def match(method: str, parts: list[str], enabled: frozenset[str]) -> Match:
    """The enabled operation for ``method`` + ``parts`` (403 when there is none; 400 for a malformed id)."""
    if len(parts) < 2 or tuple(p.lower() for p in parts[:2]) != _PREFIX:
        raise CallerForbiddenError("The proxy serves Power BI REST paths that start with v1.0/myorg/, as in "
                                   "https://api.powerbi.com/v1.0/myorg/groups/{groupId}/...",
                                   code="powerbi_proxy_operation_not_allowed")
    rest = parts[2:]
    if not rest or rest[0].lower() != "groups":
        raise CallerForbiddenError("The proxy serves only the workspace forms of Power BI operations "
                                   "(v1.0/myorg/groups/{groupId}/...), so that EMBED_ALLOWED_WORKSPACES always "
                                   "applies; 'My workspace' paths are refused.",
                                   code="powerbi_proxy_operation_not_allowed")
    for operation in _TABLE:
        if operation.method != method or len(operation.template) != len(rest):
            continue
        if any(not t.startswith("{") and t.lower() != r.lower() for t, r in zip(operation.template, rest, strict=True)):
            continue
        ids: dict[str, str] = {}
        for template, value in zip(operation.template, rest, strict=True):
            if template.startswith("{"):
                if not is_guid(value):
                    raise RequestError(f"{template[1:-1]} in the Power BI path must be a GUID.",
                                       code="powerbi_proxy_id_invalid", title="The Power BI path is not valid")
                ids[template[1:-1]] = value.lower()
        if operation.name not in enabled:
            break
        return Match(operation, ids)
    raise CallerForbiddenError(f"{method} {'/'.join(parts)[:200]} is not an operation this broker forwards to Power "
                               "BI. POWERBI_PROXY_OPERATIONS lists the allowed operations.",
                               code="powerbi_proxy_operation_not_allowed")


def query_parameters(operation: Operation, params: dict[str, str], *, ignore: frozenset[str]) -> dict[str, str]:
    """The query parameters to pass on: only the operation's own, validated (400 for anything else)."""
    passed: dict[str, str] = {}
    for name, value in params.items():
        if name.lower() in ignore:
            continue
        allowed = {q.lower(): q for q in operation.query}
        if name.lower() not in allowed:
            raise RequestError(f"The query parameter {name[:40]} is not accepted by {operation.name} through the "
                               f"proxy; accepted: {', '.join(sorted(operation.query)) or 'none'}.",
                               code="powerbi_proxy_query_parameter_not_allowed")
        if allowed[name.lower()] == "$top" and not (value.isdigit() and 1 <= int(value) <= 1000):
            raise RequestError("$top must be a whole number from 1 to 1000.",
                               code="powerbi_proxy_query_parameter_not_allowed")
        passed[allowed[name.lower()]] = value
    return passed
