"""Offline emulator of the App Service / Azure Functions managed-identity endpoint.

On App Service the platform exports ``IDENTITY_ENDPOINT`` (plain HTTP on 127.0.0.1) and ``IDENTITY_HEADER``
(a per-instance secret); azure-identity's ``ManagedIdentityCredential`` (through MSAL) then calls
``GET {IDENTITY_ENDPOINT}?resource=...&api-version=2019-08-01`` with ``X-IDENTITY-HEADER``. This emulator
answers that protocol with tokens minted by the Entra ID emulator, so resources that verify bearer tokens
against it (the Key Vault emulator, the Entra ID emulator's federated credentials) accept them.

Example::

    mi = ManagedIdentityEmulator(entra=entra, tenant_id=TENANT).start()
    identity = mi.add_identity()  # user-assigned; add_identity(user_assigned=False) for the system identity
    os.environ.update(mi.environ())
    ManagedIdentityCredential(client_id=identity.client_id).get_token("https://vault.azure.net/.default")
"""

from __future__ import annotations

import secrets
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from devtools.emulator_server import EmulatorServer, Request, Response, route
from devtools.entra import EntraEmulator

__all__ = ["FEDERATION_AUDIENCE", "ManagedIdentity", "ManagedIdentityEmulator"]

#: The resource a managed identity asks for when its token is a federated client assertion.
FEDERATION_AUDIENCE = "api://AzureADTokenExchange"
_API_VERSION = "2019-08-01"
#: Query parameters selecting a user-assigned identity; ``object_id`` is App Service's alias of ``principal_id``.
_SELECTORS = ("client_id", "principal_id", "object_id", "mi_res_id")


@dataclass(frozen=True)
class ManagedIdentity:
    """A managed identity: ``client_id`` is its app id, ``principal_id`` its object id (the ``oid`` of its tokens)."""

    client_id: str
    principal_id: str
    resource_id: str
    user_assigned: bool


class ManagedIdentityEmulator(EmulatorServer):
    """The managed-identity endpoint of one App Service / Functions app, over plain HTTP. Thread-safe.

    ``tenant_id`` is the tenant the identities live in. :attr:`identity_header` is the secret callers must
    send (random by default). Fault injection, latency and counters come from the emulator base; an endpoint
    that is down is a stopped emulator.
    """

    subscription_id = "00000000-0000-0000-0000-000000000000"
    site_name = "func-devtools"

    def __init__(self, *, entra: EntraEmulator, tenant_id: str, host: str | None = "127.0.0.1",
                 port: int | None = None, identity_header: str | None = None) -> None:
        # Plain HTTP like the real endpoint; the CA argument is only there for the base's signature.
        super().__init__(ca=entra.ca, host=host, port=port, tls=False)
        self.entra = entra
        self.tenant_id = tenant_id.lower()
        self.identity_header = identity_header or secrets.token_urlsafe(24)
        self._mi_lock = threading.Lock()
        self._identities: list[ManagedIdentity] = []

    @property
    def endpoint(self) -> str:
        """The ``IDENTITY_ENDPOINT`` value: ``http://127.0.0.1:PORT/msi/token``."""
        return f"{self.base_url}/msi/token"

    def environ(self) -> dict[str, str]:
        """The environment App Service gives the app: ``IDENTITY_ENDPOINT`` and ``IDENTITY_HEADER``."""
        return {"IDENTITY_ENDPOINT": self.endpoint, "IDENTITY_HEADER": self.identity_header}

    def add_identity(self, client_id: str | None = None, *, principal_id: str | None = None,
                     user_assigned: bool = True) -> ManagedIdentity:
        """Attach an identity to the app (ids default to uuid4). There is at most one system-assigned identity,
        used when a request names none; adding another one replaces it.
        """
        cid, pid = client_id or str(uuid.uuid4()), principal_id or str(uuid.uuid4())
        group = f"/subscriptions/{self.subscription_id}/resourcegroups/devtools/providers"
        resource_id = (f"{group}/Microsoft.ManagedIdentity/userAssignedIdentities/id-{cid[:8]}" if user_assigned
                       else f"{group}/Microsoft.Web/sites/{self.site_name}")
        identity = ManagedIdentity(cid.lower(), pid.lower(), resource_id, user_assigned)
        with self._mi_lock:
            self._identities = [i for i in self._identities
                                if i.client_id != identity.client_id and (user_assigned or i.user_assigned)]
            self._identities.append(identity)
        return identity

    def remove_identity(self, client_id: str) -> None:
        """Detach an identity; requests for it then fail like requests for an unknown identity."""
        with self._mi_lock:
            self._identities = [i for i in self._identities if i.client_id != client_id.lower()]

    def token_requests(self, resource: str | None = None) -> int:
        """Number of token requests received (for ``resource`` only, when given), faulted ones included."""
        return sum(1 for r in self.requests if r.path == "/msi/token"
                   and (resource is None or r.query.get("resource") == resource))

    # --------------------------------------------------------------------- routes
    @route("GET", r"/msi/token/?")
    def _token(self, request: Request) -> Response:
        # Checked in the platform's order: the caller's secret, then the request, then the identity.
        sent = request.headers.get("x-identity-header")
        if not sent:
            return _error(400, "The X-IDENTITY-HEADER header is missing or empty.")
        if not secrets.compare_digest(sent.encode(), self.identity_header.encode()):
            return _error(401, "Unauthorized: the X-IDENTITY-HEADER value is not valid.")
        if request.query.get("api-version") != _API_VERSION:
            return _error(400, f"The api-version '{request.query.get('api-version', '')}' is not supported; use "
                          f"'{_API_VERSION}'.")
        resource = request.query.get("resource", "")
        if not resource:
            return _error(400, "The 'resource' query parameter is required.")
        selectors = {k: request.query[k].lower() for k in _SELECTORS if request.query.get(k)}
        if len(selectors) > 1:
            return _error(400, f"Only one of {', '.join(_SELECTORS)} may be specified.")
        identity = self._find(selectors)
        if identity is None:
            return _error(400, "Unable to load the proper Managed Identity.")
        token = self.entra.issue_access_token(
            tenant_id=self.tenant_id, audience=resource, client_id=identity.client_id, roles=(),
            extra_claims={"oid": identity.principal_id, "sub": identity.principal_id, "idtyp": "app",
                          "appidacr": "2", "azpacr": "2", "xms_mirid": identity.resource_id})
        expires_on = jwt.decode(token, options={"verify_signature": False})["exp"]
        return Response.json({"access_token": token, "expires_on": str(expires_on), "resource": resource,
                              "token_type": "Bearer", "client_id": identity.client_id})

    def _find(self, selectors: dict[str, str]) -> ManagedIdentity | None:
        with self._mi_lock:
            identities = list(self._identities)
        if not selectors:
            return next((i for i in identities if not i.user_assigned), None)
        ((kind, value),) = selectors.items()
        field = {"client_id": "client_id", "principal_id": "principal_id", "object_id": "principal_id",
                 "mi_res_id": "resource_id"}[kind]
        return next((i for i in identities if str(getattr(i, field)).lower() == value), None)


def _error(status: int, message: str) -> Response:
    """The App Service identity endpoint's error shape (MSAL reports ``statusCode`` and ``message``)."""
    body: dict[str, Any] = {"statusCode": status, "message": message, "correlationId": str(uuid.uuid4())}
    return Response.json(body, status)
