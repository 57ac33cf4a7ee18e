"""In-process emulation of the Azure Functions host + Python worker for HTTP triggers.

Reproduces the observable parts of host routing (ASP.NET route templates, compiled by
:mod:`devtools.route_templates`, and method constraints), key authorization and the worker's
request/response conversion for a v2-model ``func.FunctionApp``, so tests, benchmarks and
the dev server see the app the way Azure serves it, without Core Tools.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import json as jsonlib
import logging
import re
import threading
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

import azure.functions as func

from devtools.route_templates import RouteTemplate, compile_template, template_precedence

__all__ = ["FunctionsHost", "HostResponse", "HttpFunctionInfo", "route_prefix_from_host_json"]

log = logging.getLogger(__name__)

_SLASH_ESCAPE = re.compile("%2f", re.IGNORECASE)


def route_prefix_from_host_json(path: Path | str) -> str:
    """Return ``extensions.http.routePrefix`` from host.json ("api" if absent or no file)."""
    try:
        data = jsonlib.loads(Path(path).read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        return "api"
    prefix = data.get("extensions", {}).get("http", {}).get("routePrefix", "api")
    if not isinstance(prefix, str):
        raise TypeError(f"{path}: extensions.http.routePrefix must be a string")
    return prefix.strip("/")


@dataclass
class HostResponse:
    """What the host writes back: status, header pairs (repeats kept), body bytes."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """First value of header ``name`` (case-insensitive), or None."""
        return next(iter(self.header_values(name)), None)

    def header_values(self, name: str) -> list[str]:
        """All values of header ``name`` (case-insensitive), e.g. every Set-Cookie."""
        return [v for k, v in self.headers if k.lower() == name.lower()]

    @property
    def text(self) -> str:
        """Body decoded as UTF-8."""
        return self.body.decode("utf-8")

    def json(self) -> Any:
        """Body parsed as JSON."""
        return jsonlib.loads(self.body)


@dataclass(frozen=True)
class HttpFunctionInfo:
    """Public description of one indexed HTTP function (for tests and banners)."""

    name: str
    route: str  # template relative to the route prefix, as declared
    methods: tuple[str, ...] | None  # None: every method
    auth_level: str  # "anonymous" | "function" | "admin"


@dataclass
class _Route:
    info: HttpFunctionInfo
    template: RouteTemplate
    methods: frozenset[str] | None
    call: Callable[[func.HttpRequest], Any]


class _Context(func.Context):
    """The ``context`` argument the Python worker passes when a function asks for it."""

    def __init__(self, function_name: str, directory: str) -> None:
        self._ids = (str(uuid.uuid4()), function_name, directory)

    invocation_id = property(lambda self: self._ids[0])
    function_name = property(lambda self: self._ids[1])
    function_directory = property(lambda self: self._ids[2])
    thread_local_storage = property(lambda _: threading.local)
    trace_context = property(lambda _: None)
    retry_context = property(lambda _: None)


def _to_host_response(result: Any) -> HostResponse:
    """Convert the user function's return value like the worker's http output converter."""
    if isinstance(result, str):
        # The worker accepts a bare str for the http output binding; the host answers 200.
        return HostResponse(200, [("Content-Type", "text/plain; charset=utf-8")], result.encode("utf-8"))
    if not isinstance(result, func.HttpResponse):
        raise TypeError(f"unsupported return type {type(result).__name__} for the http output binding")
    # The worker sends headers as a dict, so a repeated header keeps only its last value;
    # Set-Cookie travels separately as a cookie list and so keeps every value.
    single: dict[str, tuple[str, str]] = {}
    cookies: list[tuple[str, str]] = []
    for name, value in result.headers.items():
        if name.lower() == "set-cookie":
            cookies.append(("Set-Cookie", value))
        else:
            single[name.lower()] = (name, value)
    if "content-type" not in single:
        mimetype = result.mimetype
        charset = f"; charset={result.charset}" if mimetype.startswith("text/") else ""
        single["content-type"] = ("Content-Type", mimetype + charset)
    return HostResponse(int(result.status_code), [*single.values(), *cookies], result.get_body())


class _AsyncRunner:
    """One event loop on a daemon thread for ``async def`` functions (the worker has one loop)."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def run(self, coro: Any) -> Any:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(target=self._loop.run_forever, name="functions-host-loop", daemon=True).start()
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()


_INDEXED: weakref.WeakKeyDictionary[func.FunctionApp, list[Any]] = weakref.WeakKeyDictionary()
_INDEX_LOCK = threading.Lock()


def _indexed(app: func.FunctionApp) -> list[Any]:
    """``app.get_functions()``, called once per app like the worker does once per process.

    The SDK refuses a second call (it sees every name as a duplicate), so hosts with
    different options over the same app share the first result.
    """
    with _INDEX_LOCK:
        if app not in _INDEXED:
            _INDEXED[app] = app.get_functions()
        return _INDEXED[app]


class FunctionsHost:
    """Dispatches HTTP requests through a FunctionApp's HTTP-triggered functions.

    Keyword options: ``route_prefix`` (host.json ``extensions.http.routePrefix``),
    ``function_keys`` (key name -> value; any of them opens FUNCTION-level functions,
    like the host's ``default`` function key), ``master_key`` (opens ADMIN and FUNCTION
    level), ``base_url`` (scheme+authority of ``req.url``), and ``enable_auth`` (False
    skips key checks the way ``func start`` does unless run with ``--enableAuth``).
    """

    def __init__(
        self,
        app: func.FunctionApp,
        *,
        route_prefix: str = "api",
        function_keys: Mapping[str, str] | None = None,
        master_key: str | None = None,
        base_url: str = "http://localhost:7071",
        enable_auth: bool = True,
        function_directory: str = ".",
    ) -> None:
        self.route_prefix = route_prefix.strip("/")
        self.base_url = base_url.rstrip("/")
        self.enable_auth = enable_auth
        self._function_keys = [k.encode() for k in (function_keys or {}).values() if k]
        self._master_key = master_key.encode() if master_key else None
        self._async = _AsyncRunner()
        routes = [r for r in (self._index(f, function_directory) for f in _indexed(app)) if r is not None]
        self._routes = sorted(routes, key=lambda r: template_precedence(r.template))
        self.functions: tuple[HttpFunctionInfo, ...] = tuple(r.info for r in routes)

    def _index(self, function: Any, directory: str) -> _Route | None:
        """Read one function's metadata (as the host sees it) and precompile everything."""
        name = function.get_function_name()
        bindings = jsonlib.loads(function.get_function_json())["bindings"]
        trigger = next((b for b in bindings if b["type"] == "httpTrigger"), None)
        if trigger is None:
            return None  # timers, queues...: not reachable over HTTP
        others = [b for b in bindings if b is not trigger and not (b["type"] == "http" and b["name"] == "$return")]
        if others:
            raise ValueError(f"function {name!r}: bindings {[b['type'] for b in others]} are not emulated")
        route = trigger.get("route") or name
        methods = trigger.get("methods")
        method_set = frozenset(m.upper() for m in methods) if methods else None
        auth = str(trigger.get("authLevel") or "function").lower()
        if auth not in ("anonymous", "function", "admin"):
            raise ValueError(f"function {name!r}: unknown authLevel {auth!r}")
        full = f"{self.route_prefix}/{route.lstrip('/')}" if self.route_prefix else route
        template = compile_template(full)
        call = self._make_call(function.get_user_function(), name, trigger["name"], directory)
        info = HttpFunctionInfo(name, route, tuple(sorted(method_set)) if method_set else None, auth)
        return _Route(info, template, method_set, call)

    def _make_call(self, user: Callable[..., Any], name: str, arg: str, directory: str) -> Callable[..., Any]:
        """Bind the request by the trigger's parameter name, plus ``context`` when declared."""
        declared = set(inspect.signature(user).parameters)
        unknown = declared - {arg, "context"}
        if arg not in declared or unknown:
            raise ValueError(f"function {name!r}: parameters {sorted(declared)} do not match trigger {arg!r}")
        wants_context = "context" in declared
        is_async = inspect.iscoroutinefunction(user)

        def call(req: func.HttpRequest) -> Any:
            kwargs: dict[str, Any] = {arg: req}
            if wants_context:
                kwargs["context"] = _Context(name, directory)
            return self._async.run(user(**kwargs)) if is_async else user(**kwargs)

        return call

    def _authorized(self, level: str, headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
        if level == "anonymous" or not self.enable_auth:
            return True
        # The host takes the header first and only then the ?code= query parameter.
        supplied = next((v for k, v in headers.items() if k.lower() == "x-functions-key"), None)
        if supplied is None:
            supplied = next((v for k, v in query.items() if k.lower() == "code"), None)
        if not supplied:
            return False
        given = supplied.encode()
        if self._master_key is not None and hmac.compare_digest(given, self._master_key):
            return True
        return level == "function" and any(hmac.compare_digest(given, k) for k in self._function_keys)

    def _match(self, method: str, path: str) -> tuple[_Route, dict[str, str]] | None:
        for route in self._routes:
            values = route.template.match(path)
            # The method list is a route constraint in the host (HttpMethodRouteConstraint),
            # so a method the trigger does not list just fails this route: the router tries
            # the next one and, if none fits, answers 404 -- not 405.
            if values is not None and (route.methods is None or method in route.methods):
                return route, values
        return None

    def handle(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes, *, base_url: str | None = None
    ) -> HostResponse:
        """Serve one request; ``url`` is a path with optional query, e.g. ``/api/token?x=1``."""
        method = method.upper()
        raw_path, _, query_string = url.partition("#")[0].partition("?")
        # Kestrel decodes the path before routing, except %2F which must not create segments.
        path = raw_path.lstrip("/")
        if "%" in path:
            path = "%2F".join(unquote(piece) for piece in _SLASH_ESCAPE.split(path))
        found = self._match(method, path)
        if found is None:
            return HostResponse(404)
        route, route_params = found
        params: dict[str, str] = {}
        if query_string:
            # ASP.NET's query collection is case-insensitive and joins repeats with ","; the
            # host then drops empty values before handing the dict to the worker.
            spelled: dict[str, str] = {}
            for key, value in parse_qsl(query_string, keep_blank_values=True):
                canonical = spelled.setdefault(key.lower(), key)
                params[canonical] = f"{params[canonical]},{value}" if canonical in params else value
            params = {k: v for k, v in params.items() if v}
        if not self._authorized(route.info.auth_level, headers, params):
            return HostResponse(401)
        full_url = f"{base_url or self.base_url}/{raw_path.lstrip('/')}" + (f"?{query_string}" if query_string else "")
        request = func.HttpRequest(
            method, full_url, headers=headers, params=params, route_params=route_params, body=bytes(body)
        )
        try:
            return _to_host_response(route.call(request))
        except Exception:
            # The host hides failures behind a bare 500; the details go to the log only.
            log.exception("Executed 'Functions.%s' (Failed)", route.info.name)
            return HostResponse(500)

    def invoke(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        json: Any = None,
    ) -> HostResponse:
        """Test convenience over :meth:`handle`; ``json`` serialises a body and sets Content-Type."""
        merged = dict(headers or {})
        if json is not None:
            body = jsonlib.dumps(json).encode("utf-8")
            if not any(k.lower() == "content-type" for k in merged):
                merged["Content-Type"] = "application/json"
        return self.handle(method, url, merged, body)
