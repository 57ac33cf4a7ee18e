"""Offline emulator of the Power BI REST API subset the broker uses, as the service behaves.

Endpoints (under :attr:`PowerBIEmulator.api_url`, i.e. ``{base_url}/v1.0/myorg``; paths are
case-insensitive, as in Power BI): ``GET /groups``, ``GET /groups/{id}``, ``GET /groups/{id}/reports/{id}``,
``GET /groups/{id}/datasets/{id}`` and ``POST /GenerateToken`` (Generate Token V2), plus the operations the
broker's proxy forwards (:mod:`devtools.powerbi_proxy_routes`). Browsers: origins in
:attr:`PowerBIEmulator.cors_origins` get CORS answers (preflights included), as Power BI gives web apps.

The report embed page: ``GET /reportEmbed`` serves :mod:`devtools.powerbi_embed_page`, which speaks
powerbi-client's protocol and renders a report only for an embed token this emulator issued for it
(``POST /reportEmbed/render``). Report ``embedUrl`` values point at :attr:`PowerBIEmulator.embed_origin`
(``https://app.powerbi.com`` by default, as in Power BI; the offline stack sets it to this emulator's port).

Every call needs an Azure AD token from the :class:`~devtools.entra.EntraEmulator` for the Power BI
resource. Like the live service, token problems are 403 with an empty body and an ``X-PowerBI-Error-Info``
header (``TokenExpired`` with Power BI's JSON body for expired tokens), while authorisation problems
(workspace not accessible, service principals disabled) are 401 ``PowerBINotAuthorizedException``.
An unknown workspace is answered like an inaccessible one (401), an unknown report or dataset in an
accessible workspace with 404 ``PowerBIEntityNotFound``. Every response has a fresh ``RequestId`` header.

The model and Generate Token validation live in :mod:`devtools.powerbi_model`.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

from devtools.emulator_server import EmulatorServer, Request, Response, route
from devtools.entra import EntraEmulator, InvalidAccessToken
from devtools.powerbi_embed_page import REPORT_EMBED_PAGE
from devtools.powerbi_model import Caller, Dataset, PowerBIError, PowerBIModel, Report, Workspace
from devtools.powerbi_profiles import PowerBIProfiles
from devtools.powerbi_proxy_routes import PowerBIProxyRoutes
from devtools.tls import DevCertificateAuthority

__all__ = ["POWERBI_RESOURCE", "PowerBIEmulator", "PowerBIError"]

POWERBI_RESOURCE = "https://analysis.windows.net/powerbi/api"
_CLUSTER = "https://WABI-WEST-EUROPE-redirect.analysis.windows.net"
_EMBED_CONFIG = base64.b64encode(json.dumps({"clusterUrl": _CLUSTER, "embedFeatures": {"usageMetricsVNext": True}},
                                            separators=(",", ":")).encode()).decode()
# Headers the live API sends on every answer; clients must not depend on more than RequestId.
_COMMON_HEADERS = {"Cache-Control": "no-store, must-revalidate, no-cache", "Pragma": "no-cache",
                   "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "home-cluster-uri": f"{_CLUSTER}/"}
_GUID = r"[^/]+"
_GENERATE_TOKEN = re.compile(r"(?i)/v1\.0/myorg/generatetoken")
_REPORT = re.compile(rf"(?i)/v1\.0/myorg/groups/{_GUID}/reports/{_GUID}")
_DATASET = re.compile(rf"(?i)/v1\.0/myorg/groups/{_GUID}/datasets/{_GUID}")


# EmulatorServer first: it takes the arguments
class PowerBIEmulator(EmulatorServer, PowerBIModel, PowerBIProxyRoutes, PowerBIProfiles):
    """Power BI REST API emulator over an in-memory tenant. Every public method is thread-safe.

    Model: :meth:`add_workspace`, :meth:`add_dataset`, :meth:`add_report`, :meth:`grant`, :meth:`revoke`,
    :meth:`add_profile` (service principal profiles: :mod:`devtools.powerbi_profiles`).
    Knobs: the base class's latency and faults; :meth:`throttle_next`; ``service_principals_enabled``;
    ``shared_capacity_embed_token_limit``. Observation: :meth:`generate_token_calls`, :meth:`report_lookups`,
    :meth:`dataset_lookups`, :attr:`generate_token_requests`, :meth:`embed_token_info`.
    """

    #: Where report ``embedUrl`` values point: powerbi-client embeds only https URLs on Power BI's hosts.
    embed_origin = "https://app.powerbi.com"

    def __init__(self, *, ca: DevCertificateAuthority, entra: EntraEmulator, host: str | None = None,
                 port: int | None = None) -> None:
        super().__init__(ca=ca, host=host, port=port)
        self.entra = entra
        self.cors_origins: frozenset[str] = frozenset()  # exact origins of web apps that call the API
        self._throttle_lock = threading.Lock()
        self._throttle_remaining = 0
        self._retry_after = 0

    @property
    def api_url(self) -> str:
        """The REST API root, ``{base_url}/v1.0/myorg`` (the broker's ``POWERBI_API_URL``)."""
        return f"{self.base_url}/v1.0/myorg"

    # ---------------------------------------------------------------------- knobs
    def throttle_next(self, count: int = 1, *, retry_after: int = 30) -> None:
        """Answer the next ``count`` API calls with 429, a ``Retry-After`` header and Power BI's body."""
        if count < 0 or retry_after < 0:
            raise ValueError("count and retry_after must not be negative")
        with self._throttle_lock:
            self._throttle_remaining, self._retry_after = count, retry_after

    # ------------------------------------------------------------------ counters
    def generate_token_calls(self) -> int:
        """POSTs received by GenerateToken (faulted, throttled and rejected ones included)."""
        return sum(1 for r in self.requests if r.method == "POST" and _GENERATE_TOKEN.fullmatch(r.path))

    def report_lookups(self) -> int:
        """Get Report In Group calls received."""
        return sum(1 for r in self.requests if r.method == "GET" and _REPORT.fullmatch(r.path))

    def dataset_lookups(self) -> int:
        """Get Dataset In Group calls received."""
        return sum(1 for r in self.requests if r.method == "GET" and _DATASET.fullmatch(r.path))

    @property
    def generate_token_requests(self) -> list[Any]:
        """The JSON bodies POSTed to GenerateToken, oldest first (``None`` for a body that is not JSON)."""
        bodies: list[Any] = []
        for r in self.requests:
            if r.method == "POST" and _GENERATE_TOKEN.fullmatch(r.path):
                try:
                    bodies.append(json.loads(r.raw_body or b"null"))
                except ValueError:
                    bodies.append(None)
        return bodies

    # -------------------------------------------------------------- dispatching
    def handle(self, request: Request) -> Response:
        """Throttling and Power BI errors around the routes, and the headers every answer carries."""
        origin = request.headers.get("origin", "")
        allowed = origin in self.cors_origins
        if request.method == "OPTIONS" and "access-control-request-method" in request.headers:
            headers = {"Access-Control-Allow-Origin": origin, "Vary": "Origin", "Access-Control-Max-Age": "3600",
                       "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                       "Access-Control-Allow-Headers": request.headers.get("access-control-request-headers", "")}
            return Response(204, b"", headers if allowed else {})  # no CORS headers: the browser blocks the call
        try:
            response = self._throttled() or super().handle(request)
        except PowerBIError as err:
            response = err.response()
        headers = {**_COMMON_HEADERS, **response.headers, "RequestId": str(uuid.uuid4())}
        if request.path.lower() == "/reportembed":
            del headers["X-Frame-Options"]  # the embed page exists to be framed
        if allowed:
            headers |= {"Access-Control-Allow-Origin": origin, "Vary": "Origin",
                        "Access-Control-Expose-Headers": "RequestId, Retry-After"}
        return dataclasses.replace(response, headers=headers)

    def _throttled(self) -> Response | None:
        with self._throttle_lock:
            if self._throttle_remaining <= 0:
                return None
            self._throttle_remaining -= 1
            seconds = self._retry_after
        body = {"message": "You have exceeded the amount of requests allowed in the current time frame and further "
                           f"requests will fail. Retry in {seconds} seconds."}
        return Response.json(body, 429, {"Retry-After": str(seconds)})

    def _caller(self, request: Request) -> Caller:
        """The verified caller, or Power BI's answer to a missing, malformed, foreign or expired token."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise PowerBIError(403, None)  # the live API: 403 with an empty body and no error info
        try:
            claims = self.entra.verify_access_token(token.strip(), audience=POWERBI_RESOURCE)
        except InvalidAccessToken as exc:
            if exc.expired:
                raise PowerBIError(403, {"error": {"code": "TokenExpired", "message": "Access token has expired, "
                                                   "resubmit with a new access token"}},
                                   {"X-PowerBI-Error-Info": "TokenExpired"}) from None
            raise PowerBIError(403, None, {"X-PowerBI-Error-Info": "InvalidToken"}) from None
        caller = Caller(str(claims.get("oid", "")).lower(), claims.get("idtyp") == "app", int(claims["exp"]),
                        str(claims.get("upn") or claims.get("preferred_username") or ""))
        if caller.is_app and not self.service_principals_enabled:
            raise PowerBIError.not_authorized()
        return self._as_profile(caller, request)  # X-PowerBI-Profile-Id: the call is made as that profile

    # -------------------------------------------------------------------- routes
    @route("GET", r"(?i)/v1\.0/myorg/groups")
    def _list_groups(self, request: Request) -> Response:
        caller = self._caller(request)
        groups = sorted(self._accessible_workspaces(caller), key=lambda ws: ws.name.lower())
        return Response.json({"@odata.context": f"{self.api_url}/$metadata#groups", "@odata.count": len(groups),
                              "value": [self._group_json(ws) for ws in groups]})

    @route("GET", rf"(?i)/v1\.0/myorg/groups/(?P<group>{_GUID})")
    def _get_group(self, request: Request) -> Response:
        ws = self._accessible_workspace(self._caller(request), request.path_params["group"])
        return Response.json({"@odata.context": f"{self.api_url}/$metadata#groups/$entity", **self._group_json(ws)})

    @route("GET", rf"(?i)/v1\.0/myorg/groups/(?P<group>{_GUID})/reports/(?P<report>{_GUID})")
    def _get_report(self, request: Request) -> Response:
        caller = self._caller(request)
        ws = self._accessible_workspace(caller, request.path_params["group"])
        report: Report = self._find(caller, "report", request.path_params["report"], ws.id)
        return Response.json({"@odata.context": f"{self.api_url}/groups/{ws.id}/$metadata#reports/$entity",
                              **self._report_json(report)})

    @route("GET", rf"(?i)/v1\.0/myorg/groups/(?P<group>{_GUID})/datasets/(?P<dataset>{_GUID})")
    def _get_dataset(self, request: Request) -> Response:
        caller = self._caller(request)
        ws = self._accessible_workspace(caller, request.path_params["group"])
        dataset: Dataset = self._find(caller, "dataset", request.path_params["dataset"], ws.id)
        return Response.json({"@odata.context": f"{self.api_url}/groups/{ws.id}/$metadata#datasets/$entity",
                              **self._dataset_json(dataset)})

    @route("POST", r"(?i)/v1\.0/myorg/generatetoken")
    def _generate(self, request: Request) -> Response:
        caller = self._caller(request)
        try:
            body = request.json()
        except ValueError:
            raise PowerBIError.bad_request("The request body is not valid JSON.") from None
        token, grant = self._generate_token(caller, body)
        return Response.json({"token": token, "tokenId": grant.token_id,
                              "expiration": grant.expiration.strftime("%Y-%m-%dT%H:%M:%SZ")})

    @route("GET", r"(?i)/reportembed")
    def _embed_page(self, _request: Request) -> Response:
        return Response(200, REPORT_EMBED_PAGE.encode(), content_type="text/html; charset=utf-8")

    @route("POST", r"(?i)/reportembed/render")
    def _render(self, request: Request) -> Response:
        """The embed page's check of its embed token, as Power BI's own page does before it renders a report."""
        try:
            body = request.json()
            report_id, token = str(body["reportId"]).lower(), str(body["accessToken"])
        except (ValueError, KeyError, TypeError):
            return Response.json({"error": {"code": "BadRequest", "message": "reportId and accessToken needed"}}, 400)
        try:
            grant = self.embed_token_info(token)
        except KeyError:
            return _embed_error("InvalidToken", "The embed token was not issued by this Power BI emulator")
        if grant["expiration"] <= datetime.now(UTC):
            return _embed_error("TokenExpired", "Access token has expired, resubmit with a new access token")
        if report_id not in grant["reports"]:
            return _embed_error("PowerBINotAuthorizedException", "The embed token does not grant this report")
        with self._model_lock:
            report = self._reports[report_id]
        return Response.json({"reportName": report.name, "expiration": grant["expiration"].strftime(
            "%Y-%m-%dT%H:%M:%SZ")})

    # ------------------------------------------------------------ representations
    @staticmethod
    def _group_json(ws: Workspace) -> dict[str, Any]:
        body: dict[str, Any] = {"id": ws.id, "isReadOnly": False, "isOnDedicatedCapacity": ws.capacity == "dedicated",
                                "type": "Workspace", "name": ws.name, "defaultDatasetStorageFormat": "Small"}
        if ws.capacity_id:
            body["capacityId"] = ws.capacity_id
        return body

    def _report_json(self, report: Report) -> dict[str, Any]:
        with_ids = f"reportId={report.id}&groupId={report.workspace_id}"
        return {
            "id": report.id, "reportType": "PowerBIReport", "name": report.name,
            "webUrl": f"https://app.powerbi.com/groups/{report.workspace_id}/reports/{report.id}",
            "embedUrl": f"{self.embed_origin}/reportEmbed?{with_ids}&w=2&config={_EMBED_CONFIG}",
            "isFromPbix": True, "isOwnedByMe": False, "datasetId": report.dataset_id,
            "datasetWorkspaceId": report.dataset_workspace_id, "users": [], "subscriptions": [],
        }

    @staticmethod
    def _dataset_json(dataset: Dataset) -> dict[str, Any]:
        rls = bool(dataset.rls_roles)
        return {
            "id": dataset.id, "name": dataset.name,
            "webUrl": f"https://app.powerbi.com/groups/{dataset.workspace_id}/datasets/{dataset.id}",
            "addRowsAPIEnabled": False, "configuredBy": dataset.configured_by, "isRefreshable": True,
            "isEffectiveIdentityRequired": rls, "isEffectiveIdentityRolesRequired": rls,
            "isOnPremGatewayRequired": False, "targetStorageMode": dataset.target_storage_mode,
            "createReportEmbedURL": f"https://app.powerbi.com/reportEmbed?config={_EMBED_CONFIG}",
            "qnaEmbedURL": f"https://app.powerbi.com/qnaEmbed?config={_EMBED_CONFIG}",
            "upstreamDatasets": [], "users": [],
        }


def _embed_error(code: str, message: str) -> Response:
    return Response.json({"error": {"code": code, "message": message}}, 403)
