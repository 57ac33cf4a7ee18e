"""Service principal profiles for :class:`~devtools.powerbi.PowerBIEmulator`: the Profiles API and acting as one.

As Power BI documents it (Profiles - Create / Get / Get Profiles / Delete, https://learn.microsoft.com/rest/api/
power-bi/profiles; "Use the Power BI SDK with service principal profiles"): only a service principal may call
the Profiles API, and it sees and deletes only the profiles it created; Get Profiles takes ``$top``, ``$skip``
and ``$filter=displayName eq '<name>'``. A call carrying ``X-PowerBI-Profile-Id`` is made *as that profile*:
the emulator's caller becomes the profile (its id is the principal id workspace membership is checked against),
so a profile sees only the workspaces it belongs to -- those it created with ``POST /groups?workspaceV2=True``
or was added to -- and the service principal without the header does not see them.

Choices the documentation does not settle (docs/MULTITENANCY.md lists them): a profile id that does not belong
to the calling service principal, or the header on a user's token, is answered like an inaccessible workspace
(401 ``PowerBINotAuthorizedException``), never revealing whether the profile exists; the Profiles API called
*as* a profile is refused the same way; Create Profile does not refuse a display name already in use (so a
client that wants idempotency must look the name up first, as ``python -m token_broker profiles`` does);
Delete Profile of an unknown id is 404 ``PowerBIEntityNotFound``.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import uuid
from dataclasses import dataclass

from devtools.emulator_server import Request, Response, route
from devtools.powerbi_model import Caller, PowerBIError

PROFILE_HEADER = "x-powerbi-profile-id"
_ID = r"[^/]+"
_FILTER = re.compile(r"^\s*displayName\s+eq\s+'((?:[^']|'')*)'\s*$", re.IGNORECASE)
MAX_DISPLAY_NAME = 256  # not documented; generous


@dataclass(frozen=True)
class ServicePrincipalProfile:
    id: str
    display_name: str
    owner_oid: str  # the service principal that created it


class PowerBIProfiles:
    """Mixin of :class:`~devtools.powerbi.PowerBIEmulator`: profiles, and calls made as one."""

    _profiles_lock = threading.Lock()
    _profiles: dict[str, ServicePrincipalProfile] | None = None

    # ------------------------------------------------------------------- setup and observation
    def add_profile(self, owner_oid: str, display_name: str = "Profile", profile_id: str | None = None) -> str:
        """Create a profile owned by the service principal ``owner_oid`` (as Create Profile would)."""
        profile = ServicePrincipalProfile((profile_id or str(uuid.uuid4())).lower(), display_name, owner_oid.lower())
        with self._profiles_lock:
            self._profile_table()[profile.id] = profile
        return profile.id

    def profiles_of(self, owner_oid: str) -> list[dict[str, str]]:
        """The profiles ``owner_oid`` owns, as Get Profiles lists them."""
        with self._profiles_lock:
            return [{"id": p.id, "displayName": p.display_name} for p in self._profile_table().values()
                    if p.owner_oid == owner_oid.lower()]

    def _profile_table(self) -> dict[str, ServicePrincipalProfile]:
        if self._profiles is None:
            self._profiles = {}
        return self._profiles

    # ------------------------------------------------------------------- acting as a profile
    def _as_profile(self, caller: Caller, request: Request) -> Caller:
        """The caller a request acts as: ``caller`` itself, or the profile named by ``X-PowerBI-Profile-Id``."""
        header = request.headers.get(PROFILE_HEADER)
        if header is None:
            return caller
        with self._profiles_lock:
            profile = self._profile_table().get(header.strip().lower())
        if not caller.is_app or profile is None or profile.owner_oid != caller.oid:
            raise PowerBIError.not_authorized()  # whether the profile exists is not revealed
        return dataclasses.replace(caller, oid=profile.id, username="", profile_owner=caller.oid)

    def _service_principal(self, request: Request) -> Caller:
        """The Profiles API's caller: a service principal, calling as itself."""
        caller: Caller = self._caller(request)  # type: ignore[attr-defined]  # the emulator's
        if not caller.is_app or caller.profile_owner is not None:
            raise PowerBIError.not_authorized()
        return caller

    # ------------------------------------------------------------------- the Profiles API
    @route("GET", r"(?i)/v1\.0/myorg/profiles")
    def _get_profiles(self, request: Request) -> Response:
        caller = self._service_principal(request)
        found = self.profiles_of(caller.oid)
        wanted = request.query.get("$filter")
        if wanted is not None:
            match = _FILTER.match(wanted)
            if match is None:
                raise PowerBIError.bad_request("Only $filter=displayName eq '<name>' is supported.", "$filter")
            name = match.group(1).replace("''", "'")
            found = [p for p in found if p["displayName"] == name]
        skip, top = _count(request, "$skip", 0), _count(request, "$top", len(found))
        return Response.json({"@odata.context": f"{self.api_url}/$metadata#profiles",  # type: ignore[attr-defined]
                              "value": found[skip:skip + top]})

    @route("GET", rf"(?i)/v1\.0/myorg/profiles/(?P<profile>{_ID})")
    def _get_profile(self, request: Request) -> Response:
        profile = self._owned(self._service_principal(request), request.path_params["profile"])
        return Response.json({"id": profile.id, "displayName": profile.display_name})

    @route("POST", r"(?i)/v1\.0/myorg/profiles")
    def _create_profile(self, request: Request) -> Response:
        caller = self._service_principal(request)
        try:
            body = request.json()
        except ValueError:
            raise PowerBIError.bad_request("The request body is not valid JSON.") from None
        name = body.get("displayName") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_DISPLAY_NAME:
            raise PowerBIError.bad_request("'displayName' must be a non-empty string.", "displayName")
        profile_id = self.add_profile(caller.oid, name)
        return Response.json({"id": profile_id, "displayName": name})

    @route("DELETE", rf"(?i)/v1\.0/myorg/profiles/(?P<profile>{_ID})")
    def _delete_profile(self, request: Request) -> Response:
        profile = self._owned(self._service_principal(request), request.path_params["profile"])
        with self._profiles_lock:
            self._profile_table().pop(profile.id, None)
        return Response(200, b"")

    def _owned(self, caller: Caller, profile_id: str) -> ServicePrincipalProfile:
        with self._profiles_lock:
            profile = self._profile_table().get(profile_id.lower())
        if profile is None or profile.owner_oid != caller.oid:
            raise PowerBIError.not_found()
        return profile

    # ------------------------------------------------------------------- workspaces a profile creates
    @route("POST", r"(?i)/v1\.0/myorg/groups")
    def _create_group(self, request: Request) -> Response:
        """Groups - Create Group: the caller (a profile, with the header) becomes the workspace's admin."""
        caller: Caller = self._caller(request)  # type: ignore[attr-defined]
        try:
            body = request.json()
        except ValueError:
            raise PowerBIError.bad_request("The request body is not valid JSON.") from None
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name.strip():
            raise PowerBIError.bad_request("'name' must be a non-empty string.", "name")
        workspace_id = self.add_workspace(name=name, members={caller.oid},  # type: ignore[attr-defined]
                                          capacity="shared")
        return Response.json(self._group_json(self._workspace(workspace_id)))  # type: ignore[attr-defined]

    @route("POST", rf"(?i)/v1\.0/myorg/groups/(?P<group>{_ID})/assigntocapacity")
    def _assign_to_capacity(self, request: Request) -> Response:
        """Groups - Assign To Capacity; the empty GUID moves the workspace back to shared capacity."""
        caller: Caller = self._caller(request)  # type: ignore[attr-defined]
        ws = self._accessible_workspace(caller, request.path_params["group"])  # type: ignore[attr-defined]
        try:
            body = request.json()
        except ValueError:
            body = None
        capacity = body.get("capacityId") if isinstance(body, dict) else None
        if not isinstance(capacity, str) or not _is_guid(capacity):
            raise PowerBIError.bad_request("'capacityId' must be a GUID.", "capacityId")
        shared = uuid.UUID(capacity).int == 0
        with self._model_lock:  # type: ignore[attr-defined]
            self._workspaces[ws.id] = dataclasses.replace(  # type: ignore[attr-defined]
                ws, capacity="shared" if shared else "dedicated", capacity_id=None if shared else capacity.upper())
        return Response(200, b"")


def _is_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return len(value) == 36


def _count(request: Request, name: str, default: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not text.isdigit():
        raise PowerBIError.bad_request(f"'{name}' must be a non-negative integer.", name)
    return int(text)

