"""The in-memory Power BI tenant behind :class:`~devtools.powerbi.PowerBIEmulator`, and Power BI's error shapes.

:class:`PowerBIModel` holds workspaces (members, capacity), datasets, reports and the embed tokens issued,
and validates Generate Token requests as the service does; :class:`PowerBIError` is an error answer with
Power BI's JSON body and diagnostic headers. Nothing here speaks HTTP except :meth:`PowerBIError.response`.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import json
import secrets
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from devtools.emulator_http import Response

__all__ = ["Caller", "Capacity", "Dataset", "EmbedTokenGrant", "PowerBIError", "PowerBIModel", "Report", "Workspace"]

Capacity = Literal["dedicated", "shared"]
MAX_ITEMS = 50  # reports, datasets and target workspaces per Generate Token request
MAX_USERNAME = 256


class PowerBIError(Exception):
    """An error answer: HTTP status, Power BI's JSON body (``None``: empty, as for bad tokens) and headers."""

    def __init__(self, status: int, body: dict[str, Any] | None, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status, self.body, self.headers = status, body, dict(headers or {})

    @classmethod
    def pbi(cls, status: int, code: str, error_info: str | None = None) -> PowerBIError:
        """The ``pbi.error`` family, which carries no message (PowerBINotAuthorizedException, PowerBIEntityNotFound)."""
        details = {"code": code, "parameters": {}, "details": [], "exceptionCulprit": 1}
        return cls(status, {"error": {"code": code, "pbi.error": details}},
                   {"X-PowerBI-Error-Info": error_info} if error_info else None)

    @classmethod
    def not_authorized(cls, error_info: str | None = None) -> PowerBIError:
        return cls.pbi(401, "PowerBINotAuthorizedException", error_info)

    @classmethod
    def not_found(cls) -> PowerBIError:
        return cls.pbi(404, "PowerBIEntityNotFound")

    @classmethod
    def invalid_request(cls, message: str) -> PowerBIError:
        """A semantic rejection of a well-formed request (effective identity rules and the like)."""
        return cls(400, {"error": {"code": "InvalidRequest", "message": message}})

    @classmethod
    def bad_request(cls, message: str, target: str = "request") -> PowerBIError:
        """A body that does not bind to the API's model (wrong JSON types), worded like ASP.NET model binding."""
        return cls(400, {"error": {"code": "BadRequest", "message": "Bad Request",
                                   "details": [{"message": message, "target": target}]}})

    def response(self) -> Response:
        body = b"" if self.body is None else json.dumps(self.body).encode()
        return Response(self.status, body, self.headers)


@dataclass(frozen=True)
class Caller:
    """Who is calling, from the verified Azure AD token."""

    oid: str
    is_app: bool  # idtyp == "app": a service principal rather than a (master) user
    token_exp: int  # the Azure AD token's exp: no embed token may outlive it
    username: str = ""  # the user's UPN (empty for a service principal): whose rows executeQueries returns
    #: Set when the call acts as a service principal profile (X-PowerBI-Profile-Id): the owning principal's oid;
    #: ``oid`` is then the profile's id.
    profile_owner: str | None = None


@dataclass(frozen=True)
class Workspace:  # immutable: changes swap the object, so a handler always sees a consistent snapshot
    id: str
    name: str
    members: frozenset[str]
    capacity: Capacity
    capacity_id: str | None


@dataclass(frozen=True)
class Dataset:
    id: str
    workspace_id: str
    name: str
    rls_roles: tuple[str, ...]
    configured_by: str
    target_storage_mode: str


@dataclass(frozen=True)
class Report:
    id: str
    workspace_id: str
    name: str
    dataset_id: str
    dataset_workspace_id: str


@dataclass(frozen=True)
class EmbedTokenGrant:
    """What an embed token grants, for :meth:`PowerBIModel.embed_token_info`."""

    token_id: str
    reports: list[str]
    editable_reports: list[str]
    datasets: list[str]
    target_workspaces: list[str]
    identities: list[dict[str, Any]]
    issued_at: datetime
    expiration: datetime
    caller_oid: str
    caller_is_app: bool


def _guid(value: str | None) -> str:
    return (value or str(uuid.uuid4())).lower()  # Power BI ids are GUIDs, matched case-insensitively


def _items(body: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    """``body[name]`` as a list of objects each with a string ``id`` (absent or null: empty)."""
    value = body.get(name) or []
    if not isinstance(value, list) or not all(isinstance(v, dict) and isinstance(v.get("id"), str) for v in value):
        raise PowerBIError.bad_request(f"'{name}' must be an array of objects with a string 'id'.", name)
    return [{**v, "id": v["id"].lower()} for v in value]


def _opaque_token() -> str:
    # Real embed tokens are base64 of gzip (hence the "H4sI" prefix) over encrypted content: random bytes will do.
    return base64.urlsafe_b64encode(gzip.compress(secrets.token_bytes(96), mtime=0)).decode()


class PowerBIModel:
    """Workspaces, datasets, reports and issued embed tokens. Every public method is thread-safe.

    Knobs (plain attributes): ``service_principals_enabled`` (the tenant setting "Service principals can use
    Fabric APIs"); ``shared_capacity_embed_token_limit`` (embed tokens touching a shared-capacity workspace
    before 403); ``max_embed_tokens`` (the oldest issued tokens are forgotten beyond this many).
    """

    service_principals_enabled: bool = True
    shared_capacity_embed_token_limit: int = 1_000_000
    max_embed_tokens: int = 100_000

    def __init__(self) -> None:
        super().__init__()  # cooperative: the emulator combines this class with its server base
        self._model_lock = threading.RLock()
        self._workspaces: dict[str, Workspace] = {}
        self._datasets: dict[str, Dataset] = {}
        self._reports: dict[str, Report] = {}
        self._grants: dict[str, EmbedTokenGrant] = {}
        self._shared_tokens = 0

    # ---------------------------------------------------------------------- setup
    def add_workspace(self, workspace_id: str | None = None, *, name: str = "Workspace",
                      members: Iterable[str] = (), capacity: Capacity = "dedicated") -> str:
        """Create (or replace) a workspace; ``members`` are object ids (service principal or user oid)."""
        if capacity not in ("dedicated", "shared"):
            raise ValueError("capacity must be 'dedicated' or 'shared'")
        wid = _guid(workspace_id)
        dedicated = capacity == "dedicated"
        capacity_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"capacity/{wid}")).upper() if dedicated else None
        with self._model_lock:
            self._workspaces[wid] = Workspace(wid, name, frozenset(m.lower() for m in members), capacity, capacity_id)
        return wid

    def add_dataset(self, workspace_id: str, dataset_id: str | None = None, *, name: str = "Dataset",
                    rls_roles: Iterable[str] = (), configured_by: str = "pbi-master@contoso.com",
                    target_storage_mode: str = "Abf") -> str:
        """Add a dataset; non-empty ``rls_roles`` make it require an effective identity (with roles)."""
        did = _guid(dataset_id)
        with self._model_lock:
            self._workspace(workspace_id)
            self._datasets[did] = Dataset(did, workspace_id.lower(), name, tuple(rls_roles), configured_by,
                                          target_storage_mode)
        return did

    def add_report(self, workspace_id: str, report_id: str | None = None, *, name: str = "Report",
                   dataset_id: str) -> str:
        """Add a report bound to ``dataset_id``, which may live in another workspace."""
        rid = _guid(report_id)
        with self._model_lock:
            self._workspace(workspace_id)
            dataset = self._datasets.get(dataset_id.lower())
            if dataset is None:
                raise KeyError(f"unknown dataset {dataset_id!r}")
            self._reports[rid] = Report(rid, workspace_id.lower(), name, dataset.id, dataset.workspace_id)
        return rid

    def grant(self, workspace_id: str, oid: str) -> None:
        """Give ``oid`` access to the workspace."""
        self._set_members(workspace_id, lambda m: m | {oid.lower()})

    def revoke(self, workspace_id: str, oid: str) -> None:
        """Remove ``oid``'s access to the workspace."""
        self._set_members(workspace_id, lambda m: m - {oid.lower()})

    def embed_token_info(self, token: str) -> dict[str, Any]:
        """What an issued embed token grants (reports, datasets, identities, expiration...); KeyError if unknown."""
        with self._model_lock:
            return dataclasses.asdict(self._grants[token])

    def _set_members(self, workspace_id: str, change: Any) -> None:
        with self._model_lock:
            ws = self._workspace(workspace_id)
            self._workspaces[ws.id] = dataclasses.replace(ws, members=frozenset(change(ws.members)))

    def _workspace(self, workspace_id: str) -> Workspace:
        with self._model_lock:
            ws = self._workspaces.get(workspace_id.lower())
        if ws is None:
            raise KeyError(f"unknown workspace {workspace_id!r}")
        return ws

    # ------------------------------------------------------------------ lookups
    def _accessible_workspaces(self, caller: Caller) -> list[Workspace]:
        with self._model_lock:
            return [ws for ws in self._workspaces.values() if caller.oid in ws.members]

    def _accessible_workspace(self, caller: Caller, workspace_id: str) -> Workspace:
        # Power BI answers an unknown workspace exactly like one the caller is not in: existence is not revealed.
        with self._model_lock:
            ws = self._workspaces.get(workspace_id.lower())
        if ws is None or caller.oid not in ws.members:
            raise PowerBIError.not_authorized("GroupNotAccessible")
        return ws

    def _find(self, caller: Caller, kind: Literal["report", "dataset"], item_id: str,
              workspace_id: str | None = None) -> Any:
        """A report or dataset the caller may use: 404 unknown (or not in ``workspace_id``), 401 no access."""
        with self._model_lock:
            table: Mapping[str, Report | Dataset] = self._reports if kind == "report" else self._datasets
            item = table.get(item_id.lower())
        if item is None or (workspace_id is not None and item.workspace_id != workspace_id):
            raise PowerBIError.not_found()
        self._accessible_workspace(caller, item.workspace_id)
        return item

    # ------------------------------------------------------------ generate token
    def _generate_token(self, caller: Caller, body: Any) -> tuple[str, EmbedTokenGrant]:
        """Validate a Generate Token V2 body as the service does and issue the token."""
        if not isinstance(body, dict):
            raise PowerBIError.bad_request("The request body must be a JSON object.")
        reports, datasets = _items(body, "reports"), _items(body, "datasets")
        targets, identities = _items(body, "targetWorkspaces"), body.get("identities") or []
        for name, items in (("reports", reports), ("datasets", datasets), ("targetWorkspaces", targets)):
            if len(items) > MAX_ITEMS:
                raise PowerBIError.invalid_request(
                    f"The number of {name} in the request ({len(items)}) exceeds the maximum of {MAX_ITEMS}")
        if not reports and not datasets:
            raise PowerBIError.invalid_request("Generating an embed token requires at least one report or dataset")
        lifetime = body.get("lifetimeInMinutes")
        if lifetime is not None and (type(lifetime) is not int or lifetime < 0):
            raise PowerBIError.bad_request("'lifetimeInMinutes' must be a non-negative integer.", "lifetimeInMinutes")

        report_objs: list[Report] = [self._find(caller, "report", r["id"]) for r in reports]
        dataset_objs: dict[str, Dataset] = {d["id"]: self._find(caller, "dataset", d["id"]) for d in datasets}
        target_ids = [self._accessible_workspace(caller, t["id"]).id for t in targets]
        for report in report_objs:
            if report.dataset_id not in dataset_objs:
                raise PowerBIError.invalid_request(f"Creating embed token for accessing report {report.id} requires "
                                                   f"its dataset {report.dataset_id} to be included in the request")
        self._check_identities(caller, identities, dataset_objs)

        workspaces = {r.workspace_id for r in report_objs} | {d.workspace_id for d in dataset_objs.values()}
        now = datetime.now(UTC).replace(microsecond=0)
        aad_expiry = datetime.fromtimestamp(caller.token_exp, UTC)
        # Documented: lifetimeInMinutes can shorten a token but never extend it; 0 or absent means the default,
        # which is the Azure AD token's own expiry -- an embed token never outlives the token that created it.
        expiration = min(now + timedelta(minutes=lifetime), aad_expiry) if lifetime else aad_expiry
        grant = EmbedTokenGrant(
            str(uuid.uuid4()), [r.id for r in report_objs], [r["id"] for r in reports if r.get("allowEdit") is True],
            list(dataset_objs), target_ids, [dict(i) for i in identities], now, expiration, caller.oid, caller.is_app)
        token = _opaque_token()
        with self._model_lock:
            if any(self._workspaces[w].capacity == "shared" for w in workspaces):
                if self._shared_tokens >= self.shared_capacity_embed_token_limit:
                    raise PowerBIError(403, {"error": {"code": "EmbedTokenQuotaExceeded", "message": (
                        "The user has exceeded the amount of embed tokens that can be generated on a shared capacity. "
                        "Assign the workspace to a Power BI Embedded or Fabric capacity.")}})
                self._shared_tokens += 1
            self._grants[token] = grant
            while len(self._grants) > self.max_embed_tokens:  # bounded memory in long benchmark runs
                del self._grants[next(iter(self._grants))]
        return token, grant

    def _check_identities(self, caller: Caller, identities: Any, datasets: Mapping[str, Dataset]) -> None:
        """Effective identity (RLS) rules: who needs one, what it must name, which roles exist."""
        if not isinstance(identities, list) or not all(isinstance(i, dict) for i in identities):
            raise PowerBIError.bad_request("'identities' must be an array of objects.", "identities")
        covered: set[str] = set()
        for identity in identities:
            username, roles, ids = identity.get("username"), identity.get("roles") or [], identity.get("datasets")
            if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
                raise PowerBIError.invalid_request("DatasetId is mandatory for any effective identity")
            if not isinstance(username, str) or not username:
                raise PowerBIError.invalid_request("Username is mandatory for any effective identity")
            if len(username) > MAX_USERNAME:
                raise PowerBIError.invalid_request(
                    f"Effective identity username exceeds the maximum length of {MAX_USERNAME} characters")
            if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
                raise PowerBIError.bad_request("'roles' must be an array of strings.", "identities.roles")
            for dataset_id in (i.lower() for i in ids):
                dataset = datasets.get(dataset_id)
                if dataset is None:
                    raise PowerBIError.invalid_request(
                        f"Effective identity dataset {dataset_id} is not included in the request's datasets")
                if not dataset.rls_roles:
                    raise PowerBIError.invalid_request(
                        f"Creating embed token for accessing dataset {dataset_id} shouldn't have effective identity")
                if not roles:
                    raise PowerBIError.invalid_request(f"Creating embed token for accessing dataset {dataset_id} "
                                                       "requires roles to be included in provided effective identity")
                unknown = [r for r in roles if r not in dataset.rls_roles]
                if unknown:
                    raise PowerBIError.invalid_request(
                        f"Role '{unknown[0]}' referenced in effective identity was not found in dataset {dataset_id}")
                covered.add(dataset_id)
        for dataset in datasets.values():
            # Documented for cloud RLS: a master user may omit the identity (it sees everything); a service
            # principal never may.
            if dataset.rls_roles and dataset.id not in covered and caller.is_app:
                raise PowerBIError.invalid_request(f"Creating embed token for accessing dataset {dataset.id} "
                                                   "requires effective identity to be provided")
