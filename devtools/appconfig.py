"""Offline emulator of the Azure App Configuration data plane, as the Python configuration provider uses it.

It serves exactly what ``azure.appconfiguration.provider.load`` (2.x, on azure-appconfiguration 1.x) sends:
paged key-value listing with ``key``/``label`` filters (``GET /kv``, ``@nextLink`` and ``Link`` headers),
single key-values for watched keys (``GET /kv/{key}``), ``If-None-Match`` answered with 304 (per key and,
for etag-based refresh, per page), ``Sync-Token`` headers, and snapshots (``GET /snapshots/{name}``,
``GET /kv?snapshot=``). Every request needs an ``api-version`` and a bearer token that
:class:`~devtools.entra.EntraEmulator` issued for App Configuration: the SDK asks for
``https://appconfig.azure.com/.default`` whenever the endpoint is not an ``*.azconfig.io`` host. The
token's principal needs App Configuration Data Reader (:meth:`AppConfigurationEmulator.grant_data_reader`);
without it the answer is a bodiless 403, as the real service sends.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import quote, urlencode

from devtools.emulator_server import EmulatorServer, Request, Response, route
from devtools.entra import EntraEmulator, InvalidAccessToken
from devtools.tls import DevCertificateAuthority

__all__ = ["FEATURE_FLAG_CONTENT_TYPE", "KEY_VAULT_REF_CONTENT_TYPE", "AppConfigurationEmulator", "KeyValue"]

KEY_VAULT_REF_CONTENT_TYPE = "application/vnd.microsoft.appconfig.keyvaultref+json;charset=utf-8"
FEATURE_FLAG_CONTENT_TYPE = "application/vnd.microsoft.appconfig.ff+json;charset=utf-8"
FEATURE_FLAG_PREFIX = ".appconfig.featureflag/"
#: Token audiences the service accepts: the current one (what the SDK asks for) and the legacy one.
AUDIENCES = ("https://appconfig.azure.com", "https://appconfig.azure.com/", "https://azconfig.io",
             "https://azconfig.io/")
_KV_TYPE = "application/vnd.microsoft.appconfig.kv+json; charset=utf-8"
_KVSET_TYPE = "application/vnd.microsoft.appconfig.kvset+json; charset=utf-8"
_SNAPSHOT_TYPE = "application/vnd.microsoft.appconfig.snapshot+json; charset=utf-8"
_PROBLEM_TYPE = "application/problem+json; charset=utf-8"
_CHALLENGE = "HMAC-SHA256, Bearer"
_WRONG_TENANT = ("The access token is from the wrong issuer. It must match the AD tenant associated with the "
                 "subscription, to which the configuration store belongs. If you just transferred your "
                 "subscription and see this error message, please try back later.")

Filter = list[tuple[str, bool]]  # (literal, is_prefix) alternatives of a key or label filter


@dataclass(frozen=True)
class KeyValue:
    """One stored key-value; ``label=None`` is the null label (``%00`` on the wire)."""

    key: str
    label: str | None
    value: str | None
    content_type: str | None
    tags: Mapping[str, str]
    etag: str
    last_modified: datetime
    locked: bool = False

    def to_json(self, fields: Iterable[str] | None = None) -> dict[str, Any]:
        """The wire representation, restricted to ``fields`` (``$select``) when given."""
        doc = {"etag": self.etag, "key": self.key, "label": self.label, "content_type": self.content_type,
               "value": self.value, "tags": dict(self.tags), "locked": self.locked,
               "last_modified": self.last_modified.isoformat(timespec="seconds")}
        wanted = set(fields) if fields is not None else None
        return {k: v for k, v in doc.items() if wanted is None or k in wanted}

    @property
    def sort_key(self) -> tuple[str, bool, str]:
        """Listing order: by key, the null label first, then by label."""
        return self.key, self.label is not None, self.label or ""


@dataclass(frozen=True)
class _Snapshot:
    name: str
    filters: list[dict[str, str | None]]
    items: list[KeyValue]
    created: datetime
    etag: str = field(default_factory=lambda: uuid.uuid4().hex)


class _BadFilter(ValueError):
    """A ``key``/``label`` filter the service would reject with 400."""


def _parse_filter(text: str) -> Filter:
    """Split a filter into alternatives: CSV (at most 5), ``\\`` escapes, ``*`` only at an item's end."""
    items: Filter = []
    literal, prefix, escaped = "", False, False
    for char in text:
        if escaped:
            literal, escaped = literal + char, False
        elif char == ",":
            items.append((literal, prefix))
            literal, prefix = "", False
        elif prefix:
            raise _BadFilter("'*' is only allowed at the end of a filter")
        elif char == "\\":
            escaped = True
        elif char == "*":
            prefix = True
        else:
            literal += char
    if escaped or len(items) >= 5:
        raise _BadFilter("unterminated escape" if escaped else "at most 5 comma-separated values are allowed")
    return [*items, (literal, prefix)]


def _matches(value: str | None, alternatives: Filter) -> bool:
    if value is None:  # the null label: "\0" names it, a bare "*" includes it
        return any((lit, pre) in (("\0", False), ("", True)) for lit, pre in alternatives)
    return any(value.startswith(lit) if pre else value == lit for lit, pre in alternatives)


def _label_param(raw: str | None) -> str | None:
    return None if raw in (None, "\0") else raw


def _quoted(etag: str) -> str:
    return f'"{etag}"'


def _etag_matches(header: str | None, etag: str) -> bool:
    return header is not None and any(t.strip() in ("*", _quoted(etag)) for t in header.split(","))


class AppConfigurationEmulator(EmulatorServer):
    """An App Configuration store over HTTPS. Every public method is thread-safe.

    Knobs: :attr:`page_size` (items per ``GET /kv`` page; the service sends 100). With ``tenant_id``, tokens
    of other tenants get the service's "wrong issuer" 401. Counters and faults come from the base class,
    e.g. ``count("/kv")`` or ``inject_fault(503, path_prefix="/kv")``.
    """

    page_size = 100

    def __init__(self, *, ca: DevCertificateAuthority, entra: EntraEmulator, host: str | None = None,
                 port: int | None = None, tenant_id: str | None = None) -> None:
        super().__init__(ca=ca, host=host, port=port)
        self.entra = entra
        self.tenant_id = tenant_id.lower() if tenant_id else None
        self._store_lock = threading.Lock()
        self._items: dict[tuple[str, str | None], KeyValue] = {}
        self._snapshots: dict[str, _Snapshot] = {}
        self._readers: set[str] = set()
        self.sync_token_id = uuid.uuid4().hex[:8]  # the store's Sync-Token id; its sequence number grows on writes
        self._sequence = 0

    @property
    def endpoint(self) -> str:
        """The store endpoint to pass to ``load(endpoint=...)``."""
        return self.base_url

    # ---------------------------------------------------------------------- model
    def set(self, key: str, value: str | None, *, label: str | None = None, content_type: str | None = None,
            tags: Mapping[str, str] | None = None) -> KeyValue:
        """Create or replace a key-value; a new etag and ``last_modified`` every time, like a PUT."""
        item = KeyValue(key, _label_param(label), value, content_type, dict(tags or {}), uuid.uuid4().hex,
                        datetime.now(UTC))
        with self._store_lock:
            self._items[(key, item.label)] = item
            self._sequence += 1
        return item

    def delete(self, key: str, label: str | None = None) -> bool:
        """Remove a key-value; returns whether it existed."""
        with self._store_lock:
            gone = self._items.pop((key, _label_param(label)), None)
            self._sequence += gone is not None
        return gone is not None

    def get(self, key: str, label: str | None = None) -> KeyValue | None:
        """The stored key-value, if any."""
        with self._store_lock:
            return self._items.get((key, _label_param(label)))

    def set_key_vault_reference(self, key: str, secret_uri: str, *, label: str | None = None) -> KeyValue:
        """Store a Key Vault reference, which the provider resolves with its ``keyvault_credential``."""
        return self.set(key, json.dumps({"uri": secret_uri}), label=label, content_type=KEY_VAULT_REF_CONTENT_TYPE)

    def set_feature_flag(self, name: str, *, enabled: bool, label: str | None = None) -> KeyValue:
        """Store a feature flag without filters (loaded when ``feature_flag_enabled=True``)."""
        flag = {"id": name, "description": "", "enabled": enabled, "conditions": {"client_filters": []}}
        return self.set(FEATURE_FLAG_PREFIX + name, json.dumps(flag), label=label,
                        content_type=FEATURE_FLAG_CONTENT_TYPE)

    def create_snapshot(self, name: str, *, key_filter: str = "*", label_filter: str | None = None) -> int:
        """Freeze the matching key-values (composition ``key``: one per key) as snapshot ``name``; returns the count."""
        keys, labels = _parse_filter(key_filter), _parse_filter(label_filter or "\0")
        with self._store_lock:
            chosen = {kv.key: kv for kv in sorted(self._items.values(), key=lambda kv: kv.sort_key)
                      if _matches(kv.key, keys) and _matches(kv.label, labels)}
            self._snapshots[name] = _Snapshot(name, [{"key": key_filter, "label": label_filter or "\0"}],
                                              list(chosen.values()), datetime.now(UTC))
        return len(chosen)

    def grant_data_reader(self, object_id: str) -> None:
        """Assign App Configuration Data Reader to a principal (the ``oid`` of its tokens)."""
        with self._store_lock:
            self._readers.add(object_id.lower())

    def revoke_access(self, object_id: str) -> None:
        """Remove the principal's role assignment: its next request gets a 403."""
        with self._store_lock:
            self._readers.discard(object_id.lower())

    # ---------------------------------------------------------- request pipeline
    def handle(self, request: Request) -> Response:
        """Authenticate, authorize and check ``api-version`` before routing, in the service's order."""
        denied = self._check_access(request)
        if denied is not None:
            return self._with_ids(request, denied)
        # Parameter names are case-insensitive (the SDK lower-cases them; its builders write "After", "$Select").
        request = dataclasses.replace(request, query={k.lower(): v for k, v in request.query.items()})
        if not request.query.get("api-version"):
            return self._with_ids(request, self._problem(400, "api-version", "API version is not specified",
                                                         "An API version is required, but was not specified."))
        return self._with_ids(request, super().handle(request))

    def _check_access(self, request: Request) -> Response | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return Response(401, headers={"WWW-Authenticate": _CHALLENGE})
        try:
            claims = self.entra.verify_access_token(token.strip(), audience=AUDIENCES)
        except InvalidAccessToken:
            return self._unauthorized("Authorization token failed validation")
        if self.tenant_id is not None and str(claims["tid"]).lower() != self.tenant_id:
            return self._unauthorized(_WRONG_TENANT)
        with self._store_lock:
            allowed = str(claims.get("oid", "")).lower() in self._readers
        return None if allowed else Response(403)  # the service's RBAC denial carries no body

    @staticmethod
    def _unauthorized(description: str) -> Response:
        return Response(401, headers={
            "WWW-Authenticate": f'{_CHALLENGE} error="invalid_token", error_description="{description}"'})

    @staticmethod
    def _problem(status: int, name: str, title: str, detail: str) -> Response:
        doc = {"type": "https://azconfig.io/errors/invalid-argument", "title": title, "name": name,
               "detail": detail, "status": status}
        return Response(status, json.dumps(doc).encode(), content_type=_PROBLEM_TYPE)

    def _with_ids(self, request: Request, response: Response) -> Response:
        request_id = str(uuid.uuid4())
        ids = {"x-ms-request-id": request_id, "x-ms-correlation-request-id": request_id}
        if "x-ms-client-request-id" in request.headers:
            ids["x-ms-client-request-id"] = request.headers["x-ms-client-request-id"]
        if response.status in (200, 304):
            with self._store_lock:
                sequence = self._sequence
            value = base64.b64encode(f"0:{sequence}".encode()).decode()
            ids["Sync-Token"] = f"{self.sync_token_id}={value};sn={sequence}"
        return dataclasses.replace(response, headers={**ids, **response.headers})

    # --------------------------------------------------------------------- routes
    @route("GET", r"/kv")
    def _list(self, request: Request) -> Response:
        if "tags" in request.query:  # repeated tag filters do not survive the base's query parsing
            return self._problem(400, "tags", "Invalid request parameter 'tags'", "Not emulated.")
        snapshot_name = request.query.get("snapshot")
        if snapshot_name is not None:
            with self._store_lock:
                snapshot = self._snapshots.get(snapshot_name)
            if snapshot is None:
                return Response(404)
            return self._page(request, snapshot.items)
        filters: dict[str, Filter] = {}
        for name in ("key", "label"):  # omitted means any key, any label
            try:
                filters[name] = _parse_filter(request.query.get(name, "*"))
            except _BadFilter as exc:
                return self._problem(400, name, f"Invalid request parameter '{name}'", f"{name}: {exc}")
        with self._store_lock:
            items = sorted((kv for kv in self._items.values()
                            if _matches(kv.key, filters["key"]) and _matches(kv.label, filters["label"])),
                           key=lambda kv: kv.sort_key)
        return self._page(request, items)

    def _page(self, request: Request, items: list[KeyValue]) -> Response:
        after = request.query.get("after")
        start = 0
        if after:
            try:
                position = list(json.loads(base64.urlsafe_b64decode(after + "=" * (-len(after) % 4))))
                start = sum(1 for kv in items if list(kv.sort_key) <= position)
            except (ValueError, TypeError):
                return self._problem(400, "after", "Invalid request parameter 'after'", "after: Invalid token")
        page = items[start:start + self.page_size]
        fields = request.query["$select"].split(",") if request.query.get("$select") else None
        body: dict[str, Any] = {"items": [kv.to_json(fields) for kv in page]}
        headers: dict[str, str] = {}
        if start + self.page_size < len(items):
            token = base64.urlsafe_b64encode(json.dumps(page[-1].sort_key).encode()).decode().rstrip("=")
            query = {k: v for k, v in request.query.items() if k != "after"}
            body["@nextLink"] = "/kv?" + urlencode({**query, "after": token}, quote_via=quote)
            headers["Link"] = f'<{body["@nextLink"]}>; rel="next"'
        # A page's etag covers its items and whether a next page exists, so any change in it shows up.
        etag = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]
        headers["ETag"] = _quoted(etag)
        if _etag_matches(request.headers.get("If-None-Match"), etag):
            return Response(304, headers=headers)  # Link included: the client pages on through 304s
        return Response(200, json.dumps(body).encode(), headers, content_type=_KVSET_TYPE)

    @route("GET", r"/kv/(?P<key>.+)")
    def _get(self, request: Request) -> Response:
        item = self.get(request.path_params["key"], request.query.get("label"))
        if item is None:
            return Response(404)
        headers = {"ETag": _quoted(item.etag), "Last-Modified": format_datetime(item.last_modified, usegmt=True)}
        if _etag_matches(request.headers.get("If-None-Match"), item.etag):
            return Response(304, headers=headers)
        if "If-Match" in request.headers and not _etag_matches(request.headers["If-Match"], item.etag):
            return Response(412)
        fields = request.query["$select"].split(",") if request.query.get("$select") else None
        return Response(200, json.dumps(item.to_json(fields)).encode(), headers, content_type=_KV_TYPE)

    @route("GET", r"/snapshots/(?P<name>[^/]+)")
    def _get_snapshot(self, request: Request) -> Response:
        with self._store_lock:
            snap = self._snapshots.get(request.path_params["name"])
        if snap is None:
            return Response(404)
        doc: dict[str, Any] = {
            "name": snap.name, "status": "ready", "filters": snap.filters, "composition_type": "key",
            "created": snap.created.isoformat(timespec="seconds"), "expires": None, "retention_period": 2592000,
            "size": sum(len(json.dumps(kv.to_json())) for kv in snap.items), "items_count": len(snap.items),
            "tags": {}, "etag": snap.etag}
        return Response(200, json.dumps(doc).encode(), {"ETag": _quoted(snap.etag)}, content_type=_SNAPSHOT_TYPE)

