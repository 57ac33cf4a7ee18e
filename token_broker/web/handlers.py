"""The endpoints' logic, called by the thin routes in ``function_app.py``.

Each handler takes the ``func.HttpRequest`` the worker built and always returns a response: every
:class:`BrokerError` becomes a problem document, and anything else is logged with its traceback and
answered with a generic ``500`` problem that reveals nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import azure.functions as func

from .. import runtime
from ..broker import Broker
from ..powerbi.embed import EmbedResult
from ..powerbi.embed_request import BODY_FIELDS, guid, parse_embed_request, single_report_request
from ..support import telemetry
from ..support.errors import BrokerError, ConfigurationError, InternalError, MethodNotAllowedError
from ..support.redaction import request_id_var
from .http import json_response, problem_response, read_json_object, request_id_for
from .openapi import document as openapi_description

log = logging.getLogger(__name__)

#: Methods every route is registered with, so that the handler (not the host) answers 405 with Allow.
ALL_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")

Handler = Callable[[func.HttpRequest, str], func.HttpResponse]


def _guarded(allow: tuple[str, ...], handler: Handler, req: func.HttpRequest, route: str) -> func.HttpResponse:
    request_id = request_id_for(req)
    context_token = request_id_var.set(request_id)
    try:
        with telemetry.request(req.method.upper(), route, req.headers) as record:
            response = _answer(allow, handler, req, request_id, record)
            record.status = response.status_code
            return response
    finally:
        request_id_var.reset(context_token)


def _answer(allow: tuple[str, ...], handler: Handler, req: func.HttpRequest, request_id: str,
            record: telemetry.RequestRecord) -> func.HttpResponse:
    try:
        if req.method.upper() not in allow:
            raise MethodNotAllowedError(req.method.upper(), allow)
        return handler(req, request_id)
    except BrokerError as err:
        record.code = err.code
        level = logging.WARNING if err.status < 500 else logging.ERROR
        log.log(level, "%s %s -> %d %s", req.method, _path(req), err.status, err.code)
        if isinstance(err, ConfigurationError) and not runtime.current().bootstrap.health_details:
            err = _not_ok(err)  # which settings are wrong is for the operator (the log has it), not the caller
        return problem_response(err, request_id=request_id)
    except Exception:
        record.code = InternalError.code
        log.exception("Unhandled error in %s %s", req.method, _path(req))
        return problem_response(
            InternalError("The broker failed unexpectedly; the request id identifies the log entry."),
            request_id=request_id,
        )


def _path(req: func.HttpRequest) -> str:
    # Never log the query string: it may carry a function key.
    url = str(req.url)
    start = url.find("/", url.find("//") + 2) if "//" in url else 0
    return url[start:].split("?", 1)[0]


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _token(req: func.HttpRequest, request_id: str) -> func.HttpResponse:
    broker = runtime.current_broker()
    caller = broker.authenticate(req.headers)  # before the body is parsed: strangers learn nothing from parse errors
    if req.method.upper() == "POST":
        read_json_object(req, allowed_fields=())
    token = broker.access_token(caller)  # refused in profile mode
    now = time.time()
    return json_response(
        {
            "accessToken": token.value,
            "tokenType": "Bearer",
            "expiresOn": _iso(token.expires_on),
            "expiresIn": token.expires_in(now),
            "scope": token.scope,
        },
        request_id=request_id,
    )


def _embed_response(result: EmbedResult, request_id: str) -> func.HttpResponse:
    return json_response(
        {
            "token": result.token.token,
            "tokenId": result.token.token_id,
            "expiresOn": _iso(result.expires_on),
            "reports": [
                {"id": r.id, "name": r.name, "embedUrl": r.embed_url, "datasetId": r.dataset_id,
                 "workspaceId": r.workspace_id}
                for r in result.reports
            ],
        },
        request_id=request_id,
    )


def _embed_token(req: func.HttpRequest, request_id: str) -> func.HttpResponse:
    broker = runtime.current_broker()
    caller = broker.authenticate(req.headers)
    body = read_json_object(req, allowed_fields=BODY_FIELDS)
    request = parse_embed_request(body, default_workspace_id=broker.settings.embed.default_workspace_id)
    return _embed_response(broker.embed.embed(caller, request), request_id)


def _report_embed(req: func.HttpRequest, request_id: str) -> func.HttpResponse:
    broker = runtime.current_broker()
    caller = broker.authenticate(req.headers)
    report_id = guid(req.route_params.get("reportId"), "The report id in the path")
    request = single_report_request(report_id, dict(req.params),
                                    default_workspace_id=broker.settings.embed.default_workspace_id)
    return _embed_response(broker.embed.embed(caller, request), request_id)


def _powerbi_proxy(req: func.HttpRequest, request_id: str) -> func.HttpResponse:
    broker = runtime.current_broker()
    caller = broker.authenticate(req.headers)  # before the path and the body are looked at
    answer = broker.proxy.respond(
        caller, method=req.method, route_path=req.route_params.get("path") or "", url=str(req.url),
        params=dict(req.params), read_body=lambda fields: read_json_object(req, allowed_fields=fields))
    result = answer.result
    headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "X-Request-Id": request_id}
    if result.request_id:
        headers["RequestId"] = result.request_id
    if answer.cache is not None:
        headers["X-Proxy-Cache"] = answer.cache
    return func.HttpResponse(result.body, status_code=result.status, headers=headers, mimetype=result.content_type)


def _health(req: func.HttpRequest, request_id: str) -> func.HttpResponse:
    details = runtime.current().bootstrap.health_details
    try:
        broker = runtime.current_broker()
    except BrokerError as err:  # invalid settings, an unreadable store
        return problem_response(err if details else _not_ok(err), request_id=request_id)
    details = details or _may_see_details(broker, req)
    problems = broker.problems(probe=True)
    if problems:
        invalid = ConfigurationError([*problems, *broker.settings.warnings])
        return problem_response(invalid if details else _not_ok(invalid), request_id=request_id)
    return json_response(broker.health() if details else {"status": "ok"}, request_id=request_id)


def _may_see_details(broker: Broker, req: func.HttpRequest) -> bool:
    """Configuration details are for callers that pass CALLER_AUTH (the health route takes no function key)."""
    mode = broker.settings.caller_auth
    if mode == "anonymous":
        return True
    if mode not in ("jwt", "easyauth"):
        return False
    try:
        broker.authenticate(req.headers, rate_limited=False)
    except BrokerError:
        return False
    return True


def _not_ok(err: BrokerError) -> BrokerError:
    """The same status and code without details: what is misconfigured is for the operator, not the world."""
    return BrokerError("The token broker is not ready. Its log, and GET /api/health for an authenticated caller (or "
                       "with HEALTH_DETAILS=true), name each problem.", code=err.code, status=err.status,
                       title=err.title, retry_after=err.retry_after)


def _openapi(req: func.HttpRequest, request_id: str) -> func.HttpResponse:  # noqa: ARG001 - handler signature
    return json_response(openapi_description(), request_id=request_id)


def token_auth_level() -> func.AuthLevel:
    """FUNCTION when ``CALLER_AUTH=function_key`` (the host checks the key), else ANONYMOUS.

    Called once, while the worker indexes the app (the auth level is part of the function's binding
    metadata). ``CALLER_AUTH`` is a bootstrap setting, so this is the same value the broker later uses;
    the runtime remembers the answer, and the token routes answer 503 should the two ever disagree.
    """
    return func.AuthLevel.FUNCTION if runtime.current().index_token_routes() else func.AuthLevel.ANONYMOUS


def check_settings_at_start() -> None:
    """Validate the settings when the worker loads the app, so problems and warnings are logged at start.

    Never raises, so the worker always indexes the app: an invalid configuration (or an App
    Configuration store that cannot be read yet) is reported by every endpoint and by /api/health.
    """
    if runtime.current().bootstrap.appconfig_endpoint:
        return  # the store is read on the first request, not while the worker indexes the app
    try:
        runtime.current_broker()
    except BrokerError:
        pass  # already logged, setting by setting
    except Exception:
        log.exception("Checking the settings at start failed")


def token(req: func.HttpRequest) -> func.HttpResponse:
    """``GET|POST /api/token``: a Power BI access token for the caller."""
    return _guarded(("GET", "POST"), _token, req, "/api/token")


def embed_token(req: func.HttpRequest) -> func.HttpResponse:
    """``POST /api/embed-token``: an embed token for reports (and datasets) the caller may see."""
    return _guarded(("POST",), _embed_token, req, "/api/embed-token")


def report_embed(req: func.HttpRequest) -> func.HttpResponse:
    """``GET /api/reports/{reportId}/embed``: the one-report case of ``/api/embed-token``."""
    return _guarded(("GET",), _report_embed, req, "/api/reports/{reportId}/embed")


def powerbi_proxy(req: func.HttpRequest) -> func.HttpResponse:
    """``GET|POST /api/powerbi/v1.0/myorg/...``: allow-listed Power BI REST operations, forwarded (issue 16)."""
    return _guarded(("GET", "POST"), _powerbi_proxy, req, "/api/powerbi/{*path}")


def health(req: func.HttpRequest) -> func.HttpResponse:
    """``GET /api/health``: 200 when the configuration is valid, else 503 listing every problem."""
    return _guarded(("GET",), _health, req, "/api/health")


def openapi(req: func.HttpRequest) -> func.HttpResponse:
    """``GET /api/openapi.json``: the OpenAPI 3.1 description of these endpoints (always anonymous)."""
    return _guarded(("GET",), _openapi, req, "/api/openapi.json")
