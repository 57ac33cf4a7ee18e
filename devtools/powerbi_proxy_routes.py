"""The Power BI REST operations the broker's proxy forwards, for :class:`~devtools.powerbi.PowerBIEmulator`.

``GET groups/{id}/reports``, ``.../reports/{id}/pages``, ``groups/{id}/datasets``, ``.../datasets/{id}/refreshes``
(``$top``), ``.../datasources``, ``.../parameters`` and ``POST .../datasets/{id}/executeQueries``, answered
as the service documents them. executeQueries (Datasets - Execute Queries In Group): one query per call;
a DAX query that does not start with ``EVALUATE`` fails with 400 ``DatasetExecuteQueriesError``; a second
``EVALUATE`` gives Power BI's "More than one result table in a query" error with HTTP 200; service
principals are refused on row-level-security datasets; ``impersonatedUserName`` is honoured on RLS
datasets and ignored on others; like the service, each user (token ``oid``) may make
:attr:`PowerBIProxyRoutes.queries_per_minute` (120) query requests in any minute, whatever the dataset,
and gets ``429`` with ``Retry-After`` beyond that (:meth:`reset_query_limits` forgets the counts). The
emulated data: ``EVALUATE GENERATESERIES(1, n)`` returns ``n`` rows
``{"[Value]": i}``; any other query returns one row naming the effective user (``[User]``: the
impersonated user, else the token's user, ``""`` for a service principal) and the dataset.
"""

from __future__ import annotations

import math
import re
import threading
import time
import uuid
from collections import deque
from datetime import UTC, datetime, timedelta
from typing import Any

from devtools.emulator_server import Request, Response, route
from devtools.powerbi_model import Dataset, PowerBIError, Report

_ID = r"[^/]+"
_G = rf"(?i)/v1\.0/myorg/groups/(?P<group>{_ID})"
_EXECUTE = re.compile(rf"{_G}/datasets/{_ID}/executequeries")
_EVALUATE = re.compile(r"(?i)\bEVALUATE\b")
_SERIES = re.compile(r"(?i)^\s*EVALUATE\s+GENERATESERIES\s*\(\s*1\s*,\s*(\d{1,7})\s*\)\s*$")
MAX_ROWS = 100_000  # Power BI's limit per query (or 1,000,000 values)


class PowerBIProxyRoutes:
    """Mixin of :class:`~devtools.powerbi.PowerBIEmulator` (uses its ``_caller`` and the model's lookups)."""

    #: Power BI's limit of query requests per minute per user (Datasets - Execute Queries In Group).
    queries_per_minute: int = 120
    _query_windows: dict[str, deque[float]] | None = None
    _query_lock = threading.Lock()

    def reset_query_limits(self) -> None:
        """Forget every user's recent query requests (and the count of refusals)."""
        with self._query_lock:
            self._query_windows = {}
            self._limit_hits = 0

    def query_limit_hits(self) -> int:
        """executeQueries answered 429 because a user went over :attr:`queries_per_minute`."""
        return self._limit_hits

    _limit_hits = 0

    def _take_query(self, oid: str) -> Response | None:
        now = time.monotonic()
        with self._query_lock:
            windows = self._query_windows if self._query_windows is not None else {}
            self._query_windows = windows
            window = windows.setdefault(oid, deque())
            while window and window[0] <= now - 60:
                window.popleft()
            if len(window) < self.queries_per_minute:
                window.append(now)
                return None
            self._limit_hits += 1
            wait = max(1, math.ceil(window[0] + 60 - now))
        return Response.json({"error": {"code": "TooManyRequests", "message": "You have exceeded the amount of "
                                        "query requests allowed per minute."}}, 429, {"Retry-After": str(wait)})

    # --------------------------------------------------------------- observation
    def execute_queries_calls(self) -> int:
        """POSTs received by executeQueries (faulted and throttled ones included)."""
        recorded: list[Any] = self.requests  # type: ignore[attr-defined]
        return sum(1 for r in recorded if r.method == "POST" and _EXECUTE.fullmatch(r.path))

    # -------------------------------------------------------------------- routes
    @route("GET", rf"{_G}/reports")
    def _list_reports(self, request: Request) -> Response:
        ws = self._accessible_workspace(self._caller(request), request.path_params["group"])  # type: ignore[attr-defined]
        with self._model_lock:  # type: ignore[attr-defined]
            reports = [r for r in self._reports.values() if r.workspace_id == ws.id]  # type: ignore[attr-defined]
        return Response.json({"@odata.context": f"{self.api_url}/groups/{ws.id}/$metadata#reports",  # type: ignore[attr-defined]
                              "value": [self._report_json(r) for r in reports]})  # type: ignore[attr-defined]

    @route("GET", rf"{_G}/datasets")
    def _list_datasets(self, request: Request) -> Response:
        ws = self._accessible_workspace(self._caller(request), request.path_params["group"])  # type: ignore[attr-defined]
        with self._model_lock:  # type: ignore[attr-defined]
            datasets = [d for d in self._datasets.values() if d.workspace_id == ws.id]  # type: ignore[attr-defined]
        return Response.json({"@odata.context": f"{self.api_url}/groups/{ws.id}/$metadata#datasets",  # type: ignore[attr-defined]
                              "value": [self._dataset_json(d) for d in datasets]})  # type: ignore[attr-defined]

    @route("GET", rf"{_G}/reports/(?P<report>{_ID})/pages")
    def _pages(self, request: Request) -> Response:
        self._item(request, "report", "report")
        return Response.json({"value": [{"name": "ReportSection", "displayName": "Overview", "order": 0},
                                        {"name": "ReportSection2", "displayName": "Details", "order": 1}]})

    @route("GET", rf"{_G}/datasets/(?P<dataset>{_ID})/refreshes")
    def _refreshes(self, request: Request) -> Response:
        self._item(request, "dataset", "dataset")
        top = request.query.get("$top", "")
        count = min(int(top), 5) if top.isdigit() else 5
        now = datetime.now(UTC).replace(microsecond=0)
        return Response.json({"value": [
            {"requestId": str(uuid.uuid4()), "id": n, "refreshType": "Scheduled", "status": "Completed",
             "startTime": (now - timedelta(hours=n + 1)).isoformat().replace("+00:00", "Z"),
             "endTime": (now - timedelta(hours=n + 1) + timedelta(minutes=2)).isoformat().replace("+00:00", "Z")}
            for n in range(count)]})

    @route("GET", rf"{_G}/datasets/(?P<dataset>{_ID})/datasources")
    def _datasources(self, request: Request) -> Response:
        dataset: Dataset = self._item(request, "dataset", "dataset")
        source_id = str(uuid.uuid5(uuid.NAMESPACE_URL, dataset.id))
        return Response.json({"value": [{"datasourceType": "Sql", "datasourceId": source_id,
                                         "connectionDetails": {"server": "sql.contoso.com", "database": "Sales"}}]})

    @route("GET", rf"{_G}/datasets/(?P<dataset>{_ID})/parameters")
    def _parameters(self, request: Request) -> Response:
        self._item(request, "dataset", "dataset")
        return Response.json({"value": [{"name": "Region", "type": "Text", "isRequired": True, "currentValue": "EU"}]})

    @route("POST", rf"{_G}/datasets/(?P<dataset>{_ID})/executeQueries")
    def _execute_queries(self, request: Request) -> Response:
        caller = self._caller(request)  # type: ignore[attr-defined]
        dataset: Dataset = self._item(request, "dataset", "dataset", caller=caller)
        limited = self._take_query(caller.oid)
        if limited is not None:
            return limited
        try:
            body = request.json()
        except ValueError:
            raise PowerBIError.bad_request("The request body is not valid JSON.") from None
        queries = body.get("queries") if isinstance(body, dict) else None
        if not isinstance(queries, list) or not queries or not all(isinstance(q, dict) for q in queries):
            raise PowerBIError.bad_request("'queries' must be a non-empty array of objects.", "queries")
        if len(queries) > 1:
            raise PowerBIError.invalid_request("Only one query is supported per request")
        query = queries[0].get("query")
        if not isinstance(query, str):
            raise PowerBIError.bad_request("'query' must be a string.", "queries.query")
        impersonated = body.get("impersonatedUserName")
        if dataset.rls_roles and caller.is_app:
            raise PowerBIError.invalid_request("Service principals are not supported for datasets with RLS or SSO")
        user = (impersonated if dataset.rls_roles and isinstance(impersonated, str) and impersonated
                else caller.username)
        if not query.lstrip().upper().startswith("EVALUATE"):
            message = "Query (1, 1) The syntax for the query is incorrect."
            detail = {"code": "DetailsMessage", "detail": {"type": 1, "value": message}}
            raise PowerBIError(400, {"error": {"code": "DatasetExecuteQueriesError", "pbi.error": {
                "code": "DatasetExecuteQueriesError", "parameters": {}, "details": [detail]}}})
        series = _SERIES.match(query)
        if series:
            rows: list[dict[str, Any]] = [{"[Value]": i} for i in range(1, min(int(series.group(1)), MAX_ROWS) + 1)]
        else:
            rows = [{"[User]": user, "[Dataset]": dataset.name}]
        result: dict[str, Any] = {"tables": [{"rows": rows}]}
        if len(_EVALUATE.findall(query)) > 1:
            result["error"] = {"code": "DatasetExecuteQueriesError", "message": "More than one result table in a query"}
        return Response.json({"results": [result]})

    def _item(self, request: Request, kind: str, param: str, *, caller: Any = None) -> Any:
        caller = caller or self._caller(request)  # type: ignore[attr-defined]
        ws = self._accessible_workspace(caller, request.path_params["group"])  # type: ignore[attr-defined]
        item: Report | Dataset = self._find(caller, kind, request.path_params[param], ws.id)  # type: ignore[attr-defined]
        return item
