"""A small Power BI REST API client: Get Group, Get Report In Group, Get Dataset In Group, GenerateToken V2.

One ``requests`` session per process (connection reuse), bounded timeouts, a few retries on 429 and
5xx that honour ``Retry-After`` up to a cap, Power BI's error JSON turned into actionable
:class:`~token_broker.support.errors.PowerBIError` values that carry Power BI's ``RequestId``.
"""

from __future__ import annotations

import calendar
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import requests

from ..support import telemetry
from ..support.errors import (
    PowerBIBadRequestError,
    PowerBIBadResponseError,
    PowerBIEffectiveIdentityError,
    PowerBIEmbedQuotaExceededError,
    PowerBIError,
    PowerBIForbiddenError,
    PowerBINotAuthorizedError,
    PowerBINotFoundError,
    PowerBIThrottledError,
    PowerBITimeoutError,
    PowerBITokenExpired,
    PowerBIUnavailableError,
    PowerBIUnreachableError,
)
from .access import PowerBIAccess

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class WorkspaceInfo:
    """A workspace the principal can see, and whether it is on a dedicated (Embedded/Fabric/Premium) capacity."""

    id: str
    name: str
    on_dedicated_capacity: bool


@dataclass(frozen=True)
class ReportInfo:
    """What an embedding page needs to know about a report."""

    id: str
    name: str
    embed_url: str
    dataset_id: str
    workspace_id: str
    dataset_workspace_id: str


@dataclass(frozen=True)
class DatasetInfo:
    """Whether a dataset needs an effective identity (row-level security) in embed tokens."""

    id: str
    workspace_id: str
    requires_identity: bool
    requires_roles: bool


@dataclass(frozen=True)
class EmbedToken:
    """An embed token and its real expiry, as Power BI returned them. ``repr`` never shows the token."""

    token: str = field(repr=False)
    token_id: str
    expires_on: float


def parse_expiration(text: str) -> float:
    """Power BI's ``expiration`` (ISO 8601 UTC, e.g. ``2026-11-28T05:00:00Z``) as epoch seconds."""
    stamp = text.rstrip("Z").split(".")[0].split("+")[0]
    return float(calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S")))


@dataclass(frozen=True)
class ProfileInfo:
    """A service principal profile (Profiles - Get Profiles / Create Profile)."""

    id: str
    display_name: str


class PowerBIClient:
    """Calls the Power BI REST API as a :class:`PowerBIAccess` (a token, and the profile to act as)."""

    def __init__(self, api_url: str, *, timeout: float, max_retries: int = 2, max_retry_wait: float = 10.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._api_url = api_url.rstrip("/")
        self._timeout = (min(timeout, 5.0), timeout)  # connect, read
        self._max_retries = max_retries
        self._max_retry_wait = max_retry_wait
        self._sleep = sleep
        self._session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=32)
        self._session.mount("https://", adapter)

    def get_workspace(self, access: PowerBIAccess, workspace_id: str) -> WorkspaceInfo:
        """Get Group: the workspace, if the principal is a member of it (Power BI answers 401 otherwise)."""
        data = self._request("GET", f"/groups/{workspace_id}", access, what=f"workspace {workspace_id}",
                             operation="get_group")
        return _workspace(data, workspace_id)

    def list_workspaces(self, access: PowerBIAccess) -> list[WorkspaceInfo]:
        """Get Groups: the workspaces the principal (or profile) is a member of."""
        data = self._request("GET", "/groups", access, what="the workspace list", operation="get_groups")
        return [_workspace(item, "") for item in data.get("value", []) if isinstance(item, dict)]

    def create_workspace(self, access: PowerBIAccess, name: str) -> WorkspaceInfo:
        """Groups - Create Group (``POST /groups?workspaceV2=True``): a workspace the principal (profile) owns."""
        data = self._request("POST", "/groups?workspaceV2=True", access, json={"name": name},
                             what=f"workspace '{name}'", operation="create_group")
        return _workspace(data, "")

    def assign_to_capacity(self, access: PowerBIAccess, workspace_id: str, capacity_id: str) -> None:
        """Groups - Assign To Capacity: put the workspace on a dedicated (Embedded/Fabric) capacity."""
        self._request("POST", f"/groups/{workspace_id}/AssignToCapacity", access, json={"capacityId": capacity_id},
                      what=f"the capacity assignment of workspace {workspace_id}", operation="assign_to_capacity")

    def list_profiles(self, access: PowerBIAccess, *, display_name: str | None = None, top: int | None = None,
                      skip: int | None = None) -> list[ProfileInfo]:
        """Profiles - Get Profiles: the service principal's own profiles (service principals only), optionally
        only those named ``display_name`` (``$filter=displayName eq '...'``), a page at a time (``$top``, ``$skip``)."""
        query: dict[str, str] = {}
        if display_name is not None:
            query["$filter"] = "displayName eq '{}'".format(display_name.replace("'", "''"))
        if top is not None:
            query["$top"] = str(top)
        if skip is not None:
            query["$skip"] = str(skip)
        path = "/profiles" + ("?" + urlencode(query, quote_via=quote) if query else "")
        data = self._request("GET", path, access, what="the profile list", operation="get_profiles")
        return [ProfileInfo(str(p.get("id", "")).lower(), str(p.get("displayName", "")))
                for p in data.get("value", []) if isinstance(p, dict)]

    def all_profiles(self, access: PowerBIAccess, *, page: int = 1000) -> list[ProfileInfo]:
        """Every profile of the service principal, read ``page`` at a time (``$top``/``$skip``)."""
        found: list[ProfileInfo] = []
        while True:
            batch = self.list_profiles(access, top=page, skip=len(found))
            found.extend(batch)
            if len(batch) < page:
                return found

    def create_profile(self, access: PowerBIAccess, display_name: str) -> ProfileInfo:
        """Profiles - Create Profile: a new profile owned by the calling service principal."""
        data = self._request("POST", "/profiles", access, json={"displayName": display_name},
                             what=f"profile '{display_name}'", operation="create_profile")
        return ProfileInfo(str(data.get("id", "")).lower(), str(data.get("displayName", display_name)))

    def delete_profile(self, access: PowerBIAccess, profile_id: str) -> None:
        """Profiles - Delete Profile."""
        self._request("DELETE", f"/profiles/{profile_id}", access, what=f"profile {profile_id}",
                      operation="delete_profile")

    def get_report(self, access: PowerBIAccess, workspace_id: str, report_id: str) -> ReportInfo:
        """Get Report In Group: the report's name, embed URL and dataset."""
        data = self._request("GET", f"/groups/{workspace_id}/reports/{report_id}", access,
                             what=f"report {report_id} in workspace {workspace_id}", operation="get_report")
        return ReportInfo(
            id=str(data.get("id", report_id)).lower(), name=str(data.get("name", "")),
            embed_url=str(data.get("embedUrl", "")), dataset_id=str(data.get("datasetId", "")).lower(),
            workspace_id=workspace_id,
            dataset_workspace_id=str(data.get("datasetWorkspaceId") or workspace_id).lower(),
        )

    def get_dataset(self, access: PowerBIAccess, workspace_id: str, dataset_id: str) -> DatasetInfo:
        """Get Dataset In Group: does it require an effective identity (and roles)?"""
        data = self._request("GET", f"/groups/{workspace_id}/datasets/{dataset_id}", access,
                             what=f"dataset {dataset_id} in workspace {workspace_id}", operation="get_dataset")
        return DatasetInfo(id=dataset_id, workspace_id=workspace_id,
                           requires_identity=bool(data.get("isEffectiveIdentityRequired")),
                           requires_roles=bool(data.get("isEffectiveIdentityRolesRequired")))

    def generate_token(self, access: PowerBIAccess, body: Mapping[str, Any]) -> EmbedToken:
        """GenerateToken V2 (``POST /GenerateToken``) for reports, datasets and identities."""
        data = self._request("POST", "/GenerateToken", access, json=body, what="the embed token request",
                             operation="generate_token")
        try:
            expires_on = parse_expiration(str(data["expiration"]))
            return EmbedToken(str(data["token"]), str(data.get("tokenId", "")), expires_on)
        except (KeyError, ValueError) as err:
            raise PowerBIBadResponseError("Power BI's GenerateToken answer has no token or expiration.") from err

    def _request(self, method: str, path: str, access: PowerBIAccess, *, what: str, operation: str,
                 json: Mapping[str, Any] | None = None) -> dict[str, Any]:
        headers = access.headers()  # the only way headers are made: the profile travels with the token
        for attempt in range(self._max_retries + 1):
            with telemetry.upstream_call("powerbi", operation) as upstream:  # one span per HTTP attempt
                answer = self._attempt(method, path, headers, what=what, json=json, attempt=attempt,
                                       upstream=upstream)
            if isinstance(answer, dict):
                return answer
            self._sleep(answer)
        raise AssertionError("unreachable")  # the last attempt returns or raises

    def _attempt(self, method: str, path: str, headers: Mapping[str, str], *, what: str,
                 json: Mapping[str, Any] | None, attempt: int,
                 upstream: telemetry.UpstreamCall) -> dict[str, Any] | float:
        """One HTTP attempt: Power BI's answer, the seconds to wait before retrying, or a typed error."""
        try:
            response = self._session.request(method, self._api_url + path, headers=headers, json=json,
                                             timeout=self._timeout)
        except requests.Timeout as err:
            raise PowerBITimeoutError(
                "Power BI did not answer within POWERBI_HTTP_TIMEOUT_SECONDS; try again.") from err
        except requests.RequestException as err:
            raise PowerBIUnreachableError("Power BI could not be reached; check POWERBI_API_URL and the app's "
                                          "outbound network.", setting="POWERBI_API_URL") from err
        upstream.status(response.status_code)
        upstream.support_id("powerBiRequestId", _request_id(response).get("powerBiRequestId"))
        if response.ok and not response.content:
            return {}  # Delete Profile, Assign To Capacity: 200 with no body
        if response.ok:
            try:
                payload = response.json()
            except ValueError as err:
                raise PowerBIBadResponseError("Power BI sent a response that is not JSON.",
                                              extensions=_request_id(response)) from err
            return payload if isinstance(payload, dict) else {}
        wait = _retry_after(response, attempt)
        if response.status_code in RETRY_STATUSES and attempt < self._max_retries and wait <= self._max_retry_wait:
            log.warning("Power BI answered %d for %s; retrying in %.1f s", response.status_code, what, wait)
            upstream.failed(f"http_{response.status_code}")
            return wait
        raise power_bi_error(response, what=what)


def _workspace(data: Mapping[str, Any], workspace_id: str) -> WorkspaceInfo:
    return WorkspaceInfo(id=str(data.get("id", workspace_id)).lower(), name=str(data.get("name", "")),
                         on_dedicated_capacity=bool(data.get("isOnDedicatedCapacity")))


def _retry_after(response: requests.Response, attempt: int) -> float:
    header = response.headers.get("Retry-After")
    if header and header.strip().isdigit():
        return float(header.strip())
    return 0.5 * 2.0**attempt


def _request_id(response: requests.Response) -> dict[str, str]:
    request_id = response.headers.get("RequestId") or response.headers.get("x-ms-request-id")
    return {"powerBiRequestId": request_id[:64]} if request_id else {}


def power_bi_error(response: requests.Response, *, what: str) -> PowerBIError:
    """Map a Power BI error response to the actionable :class:`PowerBIError` subclass for it."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        error = {}
    code = str(error.get("code") or "")
    message = str(error.get("message") or "")[:300]
    ids: dict[str, Any] = {**_request_id(response), "powerBiErrorCode": code} if code else _request_id(response)
    status = response.status_code
    if status == 429:
        retry = response.headers.get("Retry-After", "")
        return PowerBIThrottledError("Power BI is throttling requests; retry later.", extensions=ids,
                                     retry_after=int(retry) if retry.isdigit() else 30)
    if code == "TokenExpired":
        return PowerBITokenExpired("Power BI says the Azure AD token has expired; the next request gets a fresh "
                                   "one.", extensions=ids, retry_after=1)
    if status == 401:
        return PowerBINotAuthorizedError(
            f"Power BI did not authorize access to {what}. For a service principal: the tenant setting 'Service "
            "principals can call Fabric public APIs' (Developer settings in the Power BI admin portal) is off or "
            "excludes the principal's security group, or the principal is not a member of the workspace (add it "
            "as Viewer or higher). For a user (password or on_behalf_of grant): the user has no access to the "
            "workspace. Also check the workspace id.", extensions=ids)
    if status == 403 and ("quota" in message.lower() or "capacity" in message.lower() or "limit" in message.lower()):
        return PowerBIEmbedQuotaExceededError(
            "Power BI refused another embed token: the workspace is on shared capacity, which allows only a "
            "limited number of embed tokens for development. Assign the workspace to an Embedded (A/EM) or "
            "Fabric (F) capacity.", extensions=ids)
    if status == 403:
        return PowerBIForbiddenError(
            f"Power BI refused access to {what}: the principal's workspace role does not allow it.", extensions=ids)
    if status == 404:
        return PowerBINotFoundError(
            f"Power BI has no {what}, or the principal cannot see it. Check the id and the workspace.", extensions=ids)
    if status == 400 and "effective identity" in message.lower():
        return PowerBIEffectiveIdentityError(
            f"Power BI's row-level security check failed: {message} Check EMBED_RLS_ROLES (the dataset's roles) "
            "and that CALLER_USERNAME_CLAIM yields a username.", extensions=ids)
    if status >= 500:
        return PowerBIUnavailableError(f"Power BI answered HTTP {status}; try again shortly.", extensions=ids)
    return PowerBIBadRequestError(f"Power BI refused {what} (HTTP {status} {code}): {message}", extensions=ids)
