"""The Power BI REST proxy: ``/api/powerbi/v1.0/myorg/<operation>`` forwarded with the broker's own token.

A browser that reads data through the proxy never holds a Power BI access token. For each request of a
verified caller (``_guarded`` authenticated it and applied the per-caller rate limit): the proxy must be
enabled and, with ``CALLER_AUTH=anonymous``, deliberately opened; the path is normalised and matched to an
enabled operation (:mod:`token_broker.powerbi.proxy_request`); the workspace, report and dataset it names are
checked against ``EMBED_ALLOWED_*``; query parameters are the operation's own. All of this happens before
any upstream call. Then the call is made with :meth:`TokenService.token_for` (the service principal's, the
master user's, or the caller's own on-behalf-of token) to a URL rebuilt from the operation's template.

``executeQueries`` follows Power BI's rules (Datasets - Execute Queries In Group, "Limitations",
https://learn.microsoft.com/rest/api/power-bi/datasets/execute-queries-in-group): one query per call;
service principals are not supported on datasets with row-level security (or SSO), so under
``client_credentials`` such a dataset is refused here; ``impersonatedUserName`` never comes from a request
(under ``password`` it is set from the verified caller for RLS datasets); 120 query requests per minute per
user, kept by :mod:`token_broker.powerbi.query_budget`. Answers are read in chunks up to
``POWERBI_PROXY_MAX_RESPONSE_BYTES`` and passed on whole (the Python worker buffers HTTP responses).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import requests

from ..aad.tokens import TokenService
from ..callers.caller import Caller
from ..config.contract import Settings
from ..support import telemetry
from ..support.cache import RefreshingCache
from ..support.errors import (
    BrokerError,
    CallerForbiddenError,
    PowerBIError,
    ProxyNotEnabledError,
    RequestError,
    ResponseTooLargeError,
)
from ..support.shared import SharedCache, SharedCounters
from . import cache_codec
from .access import PowerBIAccess, access_for
from .client import DatasetInfo, PowerBIClient, ReportInfo, power_bi_error
from .proxy_request import OPERATIONS, Match, match, query_parameters, segments
from .query_budget import QueryBudget, QueryResult, QueryResults

log = logging.getLogger(__name__)

EXECUTE_QUERIES = OPERATIONS["ExecuteQueriesInGroup"]
QUERY_FIELDS = ("queries", "serializerSettings", "impersonatedUserName")
METADATA_SECONDS = 300.0
MAX_USERNAME_LENGTH = 256
#: Query parameters that belong to the Functions host, never passed on (the function key).
HOST_PARAMETERS = frozenset({"code"})
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class _Timed:
    value: Any
    expires_on: float


@dataclass(frozen=True)
class ProxyAnswer:
    """What Power BI answered (or the cache), and ``cache``: "hit"/"miss" for executeQueries, else None."""

    result: QueryResult
    cache: str | None


class PowerBIProxy:
    """Forwards allow-listed Power BI REST operations for verified callers."""

    def __init__(self, settings: Settings, tokens: TokenService, *, clock: Callable[[], float] = time.time,
                 shared_counters: SharedCounters | None = None, shared_cache: SharedCache | None = None) -> None:
        self._settings = settings
        self._proxy = settings.proxy
        self._embed = settings.embed
        self._tokens = tokens
        self._clock = clock
        self._api_url = settings.api_url.rstrip("/")
        timeout = settings.http_timeout_seconds
        self._timeout = (min(timeout, 5.0), timeout)
        self._deadline = timeout * 3  # the whole answer, however slowly it trickles in
        self._client = PowerBIClient(settings.api_url, timeout=timeout)
        self._session = requests.Session()
        self._session.mount("https://", requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=64))
        wait = timeout * 4 + 5
        self._budget = QueryBudget(self._proxy.queries_per_minute, shared=shared_counters)
        self._shared = shared_cache
        self._results = QueryResults(seconds=self._proxy.query_cache_seconds,
                                     max_entries=self._proxy.query_cache_max_entries, wait_timeout=wait, clock=clock)
        self._metadata: RefreshingCache[_Timed] = RefreshingCache(
            refresh_margin=0, max_entries=4096, wait_timeout=wait, clock=clock, name="Power BI metadata")

    @property
    def cached_results(self) -> int:
        """How many executeQueries results are in memory (bounded by POWERBI_PROXY_QUERY_CACHE_MAX_ENTRIES)."""
        return len(self._results)

    # -- the request ------------------------------------------------------------------------------------

    def respond(self, caller: Caller, *, method: str, route_path: str, url: str, params: Mapping[str, str],
                read_body: Callable[[Collection[str]], dict[str, Any]]) -> ProxyAnswer:
        """Check and forward one request of ``caller``; every refusal is a :class:`BrokerError` raised before
        upstream. ``read_body`` parses the JSON body with the allowed fields (called only for executeQueries)."""
        if not self._proxy.enabled:
            raise ProxyNotEnabledError("The Power BI REST proxy is off; set POWERBI_PROXY_ENABLED=true (with "
                                       "EMBED_ALLOWED_WORKSPACES) to serve it.", setting="POWERBI_PROXY_ENABLED")
        if caller.mode == "anonymous" and not self._proxy.allow_anonymous:
            raise CallerForbiddenError(
                "The Power BI proxy does not serve anonymous callers: with CALLER_AUTH=anonymous anyone could read "
                "data with the broker's rights. Use CALLER_AUTH=jwt (or set POWERBI_PROXY_ALLOW_ANONYMOUS=true "
                "deliberately).", code="powerbi_proxy_anonymous_refused", setting="CALLER_AUTH")
        found = match(method.upper(), segments(route_path, url), self._proxy.operations)
        minted_for = self._tokens.minted_for(caller)  # 401 first for on-behalf-of without a user token
        self._authorize(caller, minted_for, found)
        passed = query_parameters(found.operation, dict(params), ignore=HOST_PARAMETERS)
        if found.operation is EXECUTE_QUERIES:
            body = read_body(QUERY_FIELDS)
            result, cache = self._execute_queries(caller, minted_for, found, body)
        else:
            result, cache = self._get(caller, minted_for, found, passed), None
        return ProxyAnswer(result, cache)

    # -- allow-lists -----------------------------------------------------------------------------------

    def _authorize(self, caller: Caller, minted_for: tuple[str, ...], found: Match) -> None:
        workspace = found.workspace_id
        if workspace not in (self._embed.workspaces_for(caller.profile) or ()):  # per customer in profile mode
            raise CallerForbiddenError(f"Workspace {workspace} is not in EMBED_ALLOWED_WORKSPACES (or your customer's "
                                       "workspaces), so the proxy does not forward calls for it.",
                                       code="powerbi_proxy_workspace_not_allowed")
        report = found.ids.get("reportId")
        if report is not None and self._embed.allowed_reports is not None and report not in self._embed.allowed_reports:
            raise CallerForbiddenError(f"Report {report} is not in EMBED_ALLOWED_REPORTS.",
                                       code="powerbi_proxy_report_not_allowed")
        dataset = found.ids.get("datasetId")
        if dataset is not None and not self._dataset_allowed(caller, minted_for, workspace, dataset):
            raise CallerForbiddenError(
                f"Dataset {dataset} is not in EMBED_ALLOWED_DATASETS and backs none of the EMBED_ALLOWED_REPORTS in "
                "its workspace.", code="powerbi_proxy_dataset_not_allowed")

    def _dataset_allowed(self, caller: Caller, minted_for: tuple[str, ...], workspace: str, dataset: str) -> bool:
        allowed, reports = self._embed.allowed_datasets, self._embed.allowed_reports
        if allowed is None and reports is None:
            return True  # neither is listed: the workspace allow-list covers both
        if allowed is not None and dataset in allowed:
            return True
        return dataset in self._backing_datasets(caller, minted_for, workspace)

    def _backing_datasets(self, caller: Caller, minted_for: tuple[str, ...], workspace: str) -> frozenset[str]:
        """Datasets (in ``workspace``) of the allowed reports that live in ``workspace``, cached per principal."""
        found: set[str] = set()
        for report_id in sorted(self._embed.allowed_reports or ()):
            info = self._report_info(caller, minted_for, workspace, report_id)
            if info is not None and info.dataset_workspace_id == workspace:
                found.add(info.dataset_id)
        return frozenset(found)

    def _cached(self, key: tuple[str, ...], load: Callable[[], Any]) -> Any:
        shared = self._shared  # with CACHE_REDIS_HOST, one instance's lookup serves every instance
        if shared is not None:
            get = load
            load = lambda: shared.get_or_fetch(  # noqa: E731
                "proxy metadata", key, get, encode=cache_codec.encode_metadata, decode=cache_codec.decode_metadata,
                ttl=lambda _value: METADATA_SECONDS)
        return self._metadata.get(key, lambda: _Timed(load(), self._clock() + METADATA_SECONDS)).value

    def _report_info(self, caller: Caller, minted_for: tuple[str, ...], workspace: str,
                     report_id: str) -> ReportInfo | None:
        def load() -> ReportInfo | None:
            try:
                return self._client.get_report(access_for(self._tokens, caller), workspace, report_id)
            except PowerBIError as err:
                if err.code == "powerbi_not_found":
                    return None  # the allowed report lives in another workspace
                raise
        info: ReportInfo | None = self._cached((*minted_for, "report", workspace, report_id), load)
        return info

    def _dataset_info(self, caller: Caller, minted_for: tuple[str, ...], workspace: str, dataset: str) -> DatasetInfo:
        info: DatasetInfo = self._cached(
            (*minted_for, "dataset", workspace, dataset),
            lambda: self._client.get_dataset(access_for(self._tokens, caller), workspace, dataset))
        return info

    # -- operations ------------------------------------------------------------------------------------

    def _get(self, caller: Caller, minted_for: tuple[str, ...], found: Match, params: dict[str, str]) -> QueryResult:
        result = self._call(caller, "GET", found.upstream_path, params=params, what=found.operation.name,
                            operation=found.operation.name)
        if found.operation.lists is None:
            return result
        return self._filtered(caller, minted_for, found, result)

    def _filtered(self, caller: Caller, minted_for: tuple[str, ...], found: Match, result: QueryResult) -> QueryResult:
        """A list of reports or datasets reduced to the allowed ones (when reports or datasets are listed)."""
        if found.operation.lists == "reports":
            if self._embed.allowed_reports is None:
                return result
            keep: Callable[[str], bool] = lambda item: item in (self._embed.allowed_reports or ())  # noqa: E731
        else:
            if self._embed.allowed_reports is None and self._embed.allowed_datasets is None:
                return result
            keep = lambda item: self._dataset_allowed(caller, minted_for, found.workspace_id, item)  # noqa: E731
        try:
            document = json.loads(result.body)
            items = document["value"]
            document["value"] = [i for i in items if isinstance(i, dict) and keep(str(i.get("id", "")).lower())]
        except (ValueError, KeyError, TypeError) as err:
            raise PowerBIError("Power BI's list answer is not the JSON the proxy expects.",
                               code="powerbi_bad_response") from err
        body = json.dumps(document, separators=(",", ":")).encode()
        return QueryResult(result.status, result.content_type, body, result.request_id, result.expires_on)

    def _execute_queries(self, caller: Caller, minted_for: tuple[str, ...], found: Match,
                         body: dict[str, Any]) -> tuple[QueryResult, str]:
        upstream = _query_body(body, grant_type=self._settings.grant_type)
        workspace, dataset = found.workspace_id, found.ids["datasetId"]
        info = self._dataset_info(caller, minted_for, workspace, dataset)
        identity = self._rls_identity(caller, info)
        if identity is not None:
            upstream["impersonatedUserName"] = identity
        key = (*minted_for, "executeQueries", workspace, dataset, json.dumps(upstream, sort_keys=True), identity)
        fetched: list[bool] = []

        def fetch(expires_on: float) -> QueryResult:
            fetched.append(True)
            self._budget.take(minted_for)  # counted only when Power BI is called
            return self._call(caller, "POST", found.upstream_path, json_body=upstream, what="the query",
                              operation=found.operation.name, expires_on=expires_on)

        result = self._results.get(key, fetch)
        outcome = "miss" if fetched else "hit"
        telemetry.cache_lookup(_QUERY_CACHE, outcome)
        return result, outcome

    def _rls_identity(self, caller: Caller, info: DatasetInfo) -> str | None:
        """``impersonatedUserName`` for the dataset under the configured grant (None: the token's own identity)."""
        if not info.requires_identity:
            return None
        grant_type = self._settings.grant_type
        if grant_type == "client_credentials":
            raise CallerForbiddenError(
                f"Dataset {info.id} uses row-level security, and Power BI does not support service principals on "
                "such datasets in executeQueries (Datasets - Execute Queries In Group, Limitations). Use "
                "POWERBI_GRANT_TYPE=on_behalf_of (each user queries as themselves), or an embed token with an "
                "effective identity.", code="powerbi_proxy_rls_not_supported", setting="POWERBI_GRANT_TYPE")
        if grant_type == "on_behalf_of":
            return None  # the caller's own token carries their identity
        username = caller.username
        if username is None:
            raise CallerForbiddenError(
                "This dataset uses row-level security, which needs a signed-in caller with a username claim "
                f"({self._settings.callers.username_claim}); CALLER_AUTH={caller.mode} provides none.",
                code="powerbi_proxy_identity_required")
        if len(username) > MAX_USERNAME_LENGTH or " " in username:
            raise RequestError("The caller's username cannot be impersonated: Power BI allows a UPN of at most "
                               f"{MAX_USERNAME_LENGTH} characters and no spaces.",
                               code="powerbi_proxy_identity_invalid")
        return username

    # -- the upstream call -----------------------------------------------------------------------------

    def _call(self, caller: Caller, method: str, path: str, *, what: str, operation: str,
              params: dict[str, str] | None = None, json_body: dict[str, Any] | None = None,
              expires_on: float | None = None) -> QueryResult:
        try:
            return self._call_once(caller, method, path, what=what, operation=operation, params=params,
                                   json_body=json_body, expires_on=expires_on)
        except PowerBIError as err:
            if err.code != "powerbi_token_expired":
                raise
            self._tokens.forget(caller)  # expired by Power BI's clock, not ours: once more with a fresh token
            log.warning("Power BI rejected the Azure AD token as expired; retrying once with a fresh token")
            return self._call_once(caller, method, path, what=what, operation=operation, params=params,
                                   json_body=json_body, expires_on=expires_on)

    def _call_once(self, caller: Caller, method: str, path: str, *, what: str, operation: str,
                   params: dict[str, str] | None, json_body: dict[str, Any] | None,
                   expires_on: float | None) -> QueryResult:
        access = access_for(self._tokens, caller)  # the token, and the caller's profile in profile mode
        with telemetry.upstream_call("powerbi", operation) as upstream:
            return self._forward(method, path, access, upstream, what=what, params=params, json_body=json_body,
                                 expires_on=expires_on)

    def _forward(self, method: str, path: str, access: PowerBIAccess, upstream: telemetry.UpstreamCall, *, what: str,
                 params: dict[str, str] | None, json_body: dict[str, Any] | None,
                 expires_on: float | None) -> QueryResult:
        headers = access.headers()
        limit = self._proxy.max_response_bytes
        started = time.monotonic()
        try:
            with self._session.request(method, self._api_url + path, params=params or None, json=json_body,
                                       headers=headers, timeout=self._timeout, stream=True,
                                       allow_redirects=False) as response:
                upstream.status(response.status_code)
                upstream.support_id("powerBiRequestId", response.headers.get("RequestId"))
                if not response.ok:
                    raise _proxied_error(response, what=what)
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise _too_large(limit, response)
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_content(_CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise _too_large(limit, response)
                    if time.monotonic() - started > self._deadline:
                        raise PowerBIError("Power BI's answer did not arrive within three times "
                                           "POWERBI_HTTP_TIMEOUT_SECONDS.", code="powerbi_timeout", status=504,
                                           title="Power BI did not answer in time")
                    chunks.append(chunk)
                content_type = (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()
                if content_type != "application/json":
                    raise PowerBIError("Power BI sent an answer that is not JSON.", code="powerbi_bad_response")
                request_id = response.headers.get("RequestId")
                return QueryResult(response.status_code, "application/json", b"".join(chunks),
                                   request_id[:64] if request_id else None,
                                   expires_on if expires_on is not None else self._clock())
        except requests.Timeout as err:
            raise PowerBIError("Power BI did not answer within POWERBI_HTTP_TIMEOUT_SECONDS; try again.",
                               code="powerbi_timeout", status=504, title="Power BI did not answer in time") from err
        except requests.RequestException as err:
            raise PowerBIError("Power BI could not be reached; check POWERBI_API_URL and the app's outbound network.",
                               code="powerbi_unreachable", status=503, setting="POWERBI_API_URL",
                               title="Power BI is unavailable") from err


_QUERY_CACHE = telemetry.cache_attributes("proxy query")


def _too_large(limit: int, response: requests.Response) -> ResponseTooLargeError:
    request_id = response.headers.get("RequestId")
    return ResponseTooLargeError(
        f"Power BI's answer is larger than POWERBI_PROXY_MAX_RESPONSE_BYTES ({limit} bytes), so nothing of it is "
        "passed on. Ask for less (TOPN in the query, $top) or raise the setting.",
        setting="POWERBI_PROXY_MAX_RESPONSE_BYTES",
        extensions={"powerBiRequestId": request_id[:64]} if request_id else None)


def _proxied_error(response: requests.Response, *, what: str) -> BrokerError:
    """Power BI's error as a problem; a 400 (a DAX error, a bad parameter) is the caller's to fix, so it stays 400."""
    err = power_bi_error(response, what=what)
    if response.status_code == 400 and err.code == "powerbi_bad_request":
        err.status = 400
    return err


def _query_body(body: dict[str, Any], *, grant_type: str) -> dict[str, Any]:
    """The executeQueries body to send: one query, optional serializer settings, never a caller's identity."""
    if "impersonatedUserName" in body:
        who = {"client_credentials": "the service principal cannot impersonate users",
               "password": "the broker sets it from the verified caller for row-level-security datasets",
               "on_behalf_of": "your own token already carries your identity"}[grant_type]
        raise CallerForbiddenError(f"impersonatedUserName is not accepted from a request: {who}.",
                                   code="powerbi_proxy_impersonation_refused")
    queries = body.get("queries")
    if not (isinstance(queries, list) and len(queries) == 1 and isinstance(queries[0], dict)
            and set(queries[0]) == {"query"} and isinstance(queries[0]["query"], str) and queries[0]["query"].strip()):
        raise RequestError('executeQueries takes exactly one query per call, as Power BI allows: '
                           '{"queries": [{"query": "EVALUATE ..."}]}.', code="powerbi_proxy_query_invalid")
    upstream: dict[str, Any] = {"queries": [{"query": queries[0]["query"]}]}
    serializer = body.get("serializerSettings")
    if serializer is not None:
        if not (isinstance(serializer, dict) and set(serializer) <= {"includeNulls"}
                and isinstance(serializer.get("includeNulls", False), bool)):
            raise RequestError('serializerSettings may only be {"includeNulls": true|false}.',
                               code="powerbi_proxy_query_invalid")
        upstream["serializerSettings"] = dict(serializer)
    return upstream
