"""HTTP plumbing shared by every endpoint: responses, problem documents, request ids, bodies.

Every response carries ``Cache-Control: no-store``, ``X-Content-Type-Options: nosniff`` and the
request id. Errors are RFC 9457 ``application/problem+json`` documents built from
:class:`~token_broker.support.errors.BrokerError`.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Collection
from typing import Any

import azure.functions as func

from ..support.errors import BrokerError, CallerAuthenticationError, CallerTokenMissingError, RequestError

MAX_BODY_BYTES = 64 * 1024
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
_BASE_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def request_id_for(req: func.HttpRequest) -> str:
    """The caller's ``x-request-id`` if well formed, else the trace id of ``traceparent``, else a new id."""
    given = req.headers.get("x-request-id")
    if given and _REQUEST_ID.match(given):
        return str(given)
    traceparent = req.headers.get("traceparent")
    match = _TRACEPARENT.match(traceparent.strip().lower()) if traceparent else None
    if match and match.group(1) != "0" * 32:
        return str(match.group(1))
    return uuid.uuid4().hex


def json_response(body: dict[str, Any], *, request_id: str, status: int = 200) -> func.HttpResponse:
    """A JSON response with the standard headers."""
    headers = dict(_BASE_HEADERS)
    headers["X-Request-Id"] = request_id
    return func.HttpResponse(
        json.dumps(body, separators=(",", ":")), status_code=status, headers=headers, mimetype="application/json"
    )


def problem_response(err: BrokerError, *, request_id: str) -> func.HttpResponse:
    """The RFC 9457 problem response for ``err``."""
    headers = dict(_BASE_HEADERS)
    headers["X-Request-Id"] = request_id
    if err.retry_after is not None:
        headers["Retry-After"] = str(err.retry_after)
    allow = err.extensions.get("allow")
    if allow:
        headers["Allow"] = ", ".join(allow)
    if isinstance(err, CallerAuthenticationError):
        missing = isinstance(err, CallerTokenMissingError)
        headers["WWW-Authenticate"] = "Bearer" if missing else 'Bearer error="invalid_token"'
    body = err.problem()
    body["requestId"] = request_id
    return func.HttpResponse(
        json.dumps(body, separators=(",", ":")),
        status_code=err.status,
        headers=headers,
        mimetype="application/problem+json",
    )


def read_json_object(req: func.HttpRequest, *, allowed_fields: Collection[str]) -> dict[str, Any]:
    """The request body as a JSON object (``{}`` for an empty body), strictly validated."""
    body = req.get_body() or b""
    if len(body) > MAX_BODY_BYTES:
        raise RequestError(
            f"The request body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}.",
            code="body_too_large", status=413, title="Request body too large",
        )
    if not body:
        return {}  # only a truly empty body means "no fields"; whitespace is malformed JSON
    content_type = (req.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise RequestError(
            "Send the body as JSON with 'Content-Type: application/json'.",
            code="unsupported_media_type", status=415, title="Unsupported media type",
        )
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise RequestError("The request body is not valid UTF-8.", code="malformed_json") from err
    except json.JSONDecodeError as err:
        raise RequestError(
            f"The request body is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}.",
            code="malformed_json",
        ) from err
    except RecursionError as err:  # the decoder recurses per nesting level: 64 KiB of "[" is enough
        raise RequestError("The request body is nested too deeply to be a valid request.",
                           code="malformed_json") from err
    except ValueError as err:  # e.g. an integer of more digits than Python converts (sys.int_info)
        raise RequestError("The request body has a number too large to be a valid request.",
                           code="malformed_json") from err
    if not isinstance(data, dict):
        raise RequestError("The request body must be a JSON object.", code="malformed_json")
    unknown = sorted(set(data) - set(allowed_fields))
    if unknown:
        allowed = ", ".join(sorted(allowed_fields)) or "none"
        raise RequestError(
            f"Unknown field(s): {', '.join(unknown)[:200]}. Allowed fields: {allowed}.", code="unknown_field"
        )
    return data
