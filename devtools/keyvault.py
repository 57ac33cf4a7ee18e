"""Offline emulator of the Azure Key Vault secrets data plane.

Faithful enough for the unmodified ``azure.keyvault.secrets.SecretClient`` with a real azure-identity
credential: the challenge protocol (an unauthenticated request is answered 401 with a ``WWW-Authenticate``
naming the Entra ID emulator's tenant and the vault's resource), bearer tokens verified against the Entra ID
emulator, Azure RBAC (*Key Vault Secrets User*), versioned secrets, disabled and missing secrets, and
certificate-backed secrets (PEM or PKCS#12) -- all with Key Vault's JSON error bodies and statuses.

The SDK accepts a challenge only when the vault's host ends with "." + the resource's host, and that check
must stay on. So a vault served on ``127.A.B.C`` names its resource ``https://A.B.C`` (plus ``:port`` when
not on 443, because the SDK then compares host and port together).

Example::

    vault = KeyVaultEmulator(ca=ca, entra=entra, tenant_id=TENANT).start()
    vault.set_secret("powerbi-client-secret", "s3cret")
    vault.grant_secrets_user(principal_object_id)
    SecretClient(vault.vault_url, credential).get_secret("powerbi-client-secret").value
"""

from __future__ import annotations

import base64
import dataclasses
import re
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from devtools.emulator_server import EmulatorServer, Fault, Request, Response, route
from devtools.entra import EntraEmulator
from devtools.entra_tokens import InvalidAccessToken
from devtools.tls import DevCertificateAuthority

__all__ = ["SECRETS_USER_ROLE", "KeyVaultEmulator", "SecretVersion"]

SECRETS_USER_ROLE = "Key Vault Secrets User"
_GET_ACTION = "Microsoft.KeyVault/vaults/secrets/getSecret/action"
_NAME = re.compile(r"[0-9A-Za-z-]{1,127}")  # Key Vault object names
_PKCS12_KEYS = (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, dsa.DSAPrivateKey, ed25519.Ed25519PrivateKey,
                ed448.Ed448PrivateKey)


@dataclass(frozen=True)
class SecretVersion:
    """One version of a secret. ``managed`` marks the secret of a certificate (it then has a ``kid``)."""

    name: str
    version: str
    value: str
    content_type: str | None
    enabled: bool
    created: int
    updated: int
    tags: Mapping[str, str] = field(default_factory=dict)
    managed: bool = False
    not_before: int | None = None
    expires: int | None = None


def _error(status: int, code: str, message: str, inner: str | None = None,
           headers: Mapping[str, str] | None = None) -> Response:
    """Key Vault's error body: ``{"error": {"code", "message"[, "innererror": {"code"}]}}``."""
    error: dict[str, Any] = {"code": code, "message": message}
    if inner:
        error["innererror"] = {"code": inner}
    return Response.json({"error": error}, status, headers)


class KeyVaultEmulator(EmulatorServer):
    """A Key Vault (secrets only) whose callers authenticate with the Entra ID emulator. Thread-safe.

    Knobs: ``vault_name`` and ``location`` (used in RBAC messages and response headers); fault injection,
    latency and counters come from :class:`~devtools.emulator_server.EmulatorServer` (see :meth:`throttle`;
    an unreachable vault is simply a stopped one).
    """

    vault_name = "devtools-vault"
    location = "westeurope"
    subscription_id = "00000000-0000-0000-0000-000000000000"

    def __init__(self, *, ca: DevCertificateAuthority, entra: EntraEmulator, tenant_id: str, host: str | None = None,
                 port: int | None = None) -> None:
        super().__init__(ca=ca, host=host, port=port)
        self.entra = entra
        self.tenant_id = tenant_id.lower()
        self._vault_lock = threading.Lock()
        self._secrets: dict[str, list[SecretVersion]] = {}  # by lower-case name: Key Vault names ignore case
        self._readers: set[str] = set()

    # ------------------------------------------------------------------ addresses
    @property
    def vault_url(self) -> str:
        """The vault URL clients are configured with (``https://127.A.B.C[:port]``)."""
        return self.base_url

    @property
    def resource(self) -> str:
        """The resource (token audience) named in the challenge: the vault host minus its first label."""
        parent = self.host.partition(".")[2]
        if not parent:
            raise RuntimeError(f"the vault host {self.host!r} has no parent domain to name as its resource")
        return f"https://{parent}" if self.on_port_443 else f"https://{parent}:{self.port}"

    @property
    def challenge(self) -> str:
        """The ``WWW-Authenticate`` value of the vault's 401 answers."""
        return f'Bearer authorization="{self.entra.base_url}/{self.tenant_id}", resource="{self.resource}"'

    @property
    def resource_id(self) -> str:
        """The vault's Azure resource id, as RBAC messages quote it."""
        return (f"/subscriptions/{self.subscription_id}/resourcegroups/devtools/providers/microsoft.keyvault/vaults/"
                f"{self.vault_name}")

    # ----------------------------------------------------------------------- RBAC
    def grant_secrets_user(self, object_id: str) -> None:
        """Assign *Key Vault Secrets User* on the vault to a principal (the ``oid`` of its tokens)."""
        with self._vault_lock:
            self._readers.add(object_id.lower())

    def revoke(self, object_id: str) -> None:
        """Remove the principal's role assignment (no error when it had none)."""
        with self._vault_lock:
            self._readers.discard(object_id.lower())

    # -------------------------------------------------------------------- secrets
    def set_secret(self, name: str, value: str, *, content_type: str | None = None, enabled: bool = True,
                   tags: Mapping[str, str] | None = None) -> str:
        """Add a new version of a secret (creating the secret if needed); returns the version id."""
        return self._add_version(name, value, content_type=content_type, enabled=enabled, tags=tags)

    def set_certificate(self, name: str, *, private_key_pem: bytes, certificate_pem: bytes,
                        format: Literal["pem", "pkcs12"] = "pem") -> str:
        """Store a certificate as Key Vault does: its key and chain readable as the secret ``name``.

        ``pem``: the value is the unencrypted PKCS#8 key followed by the certificate chain, content type
        ``application/x-pem-file``; ``pkcs12``: the value is base64 of a password-less PFX, content type
        ``application/x-pkcs12``. Returns the version id.
        """
        key = serialization.load_pem_private_key(private_key_pem, password=None)
        chain = x509.load_pem_x509_certificates(certificate_pem)
        if format == "pem":
            key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
            value = (key_pem + b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)).decode()
            content_type = "application/x-pem-file"
        elif format == "pkcs12":
            if not isinstance(key, _PKCS12_KEYS):
                raise ValueError(f"a {type(key).__name__} cannot go into a PKCS#12 file")
            pfx = pkcs12.serialize_key_and_certificates(name.encode(), key, chain[0], chain[1:] or None,
                                                        serialization.NoEncryption())
            value, content_type = base64.b64encode(pfx).decode(), "application/x-pkcs12"
        else:
            raise ValueError(f"unknown certificate format {format!r}")
        leaf = chain[0]  # like Key Vault: the secret's validity window is the certificate's
        return self._add_version(name, value, content_type=content_type, enabled=True, tags=None, managed=True,
                                 not_before=int(leaf.not_valid_before_utc.timestamp()),
                                 expires=int(leaf.not_valid_after_utc.timestamp()))

    def disable_secret(self, name: str, version: str | None = None) -> None:
        """Disable one version (default: the latest); reading it then gets 403 ``SecretDisabled``."""
        with self._vault_lock:
            versions = self._secrets[name.lower()]
            matches = [i for i, v in enumerate(versions) if version in (None, v.version)]
            if not matches:
                raise KeyError(f"secret {name!r} has no version {version!r}")
            index = matches[-1]
            versions[index] = dataclasses.replace(versions[index], enabled=False, updated=int(time.time()))

    def delete_secret(self, name: str) -> None:
        """Delete every version of a secret (reads then get 404 ``SecretNotFound``)."""
        with self._vault_lock:
            del self._secrets[name.lower()]

    def versions(self, name: str) -> list[SecretVersion]:
        """The versions of a secret, oldest first."""
        with self._vault_lock:
            return list(self._secrets.get(name.lower(), []))

    def _add_version(self, name: str, value: str, *, content_type: str | None, enabled: bool,
                     tags: Mapping[str, str] | None, managed: bool = False, not_before: int | None = None,
                     expires: int | None = None) -> str:
        if not _NAME.fullmatch(name):
            raise ValueError(f"invalid Key Vault object name {name!r} (1-127 letters, digits and dashes)")
        now = int(time.time())
        secret = SecretVersion(name, uuid.uuid4().hex, value, content_type, enabled, now, now, dict(tags or {}),
                               managed, not_before, expires)
        with self._vault_lock:
            versions = self._secrets.setdefault(name.lower(), [])
            if versions:
                secret = dataclasses.replace(secret, name=versions[0].name)  # the first spelling is kept
            versions.append(secret)
        return secret.version

    # ------------------------------------------------------------ faults/counters
    def throttle(self, count: int | None = 1, *, retry_after: int = 1) -> None:
        """Answer the next ``count`` secret requests 429 with ``Retry-After``, as Key Vault does when throttling."""
        body = {"error": {"code": "Throttled", "message": "Request was not allowed because of throttling. Please "
                          f"retry after {retry_after} seconds."}}
        self.inject_fault(Fault.http(429, body, {"Retry-After": str(retry_after)}), count=count,
                          path_prefix="/secrets/")

    def secret_reads(self, name: str | None = None) -> int:
        """Number of authenticated GETs of a secret (or of any secret): challenge-eliciting requests excluded."""
        prefix = f"/secrets/{name.lower()}" if name else "/secrets/"
        return sum(1 for r in self.requests if r.method == "GET" and r.path.lower().startswith(prefix)
                   and any(h.lower() == "authorization" for h in r.headers))

    # --------------------------------------------------------------------- routes
    @route("GET", r"/secrets/(?P<name>[^/]+)/versions/?")
    def _list_versions(self, request: Request) -> Response:
        """Get Secret Versions: ``SecretItem`` metadata (never values), ``maxresults`` per page (at most 25),
        ``nextLink`` with an opaque ``$skiptoken``. Like Key Vault, items come in no particular order (here:
        by version id), so a client that wants the newest must sort by ``attributes.created``."""
        claims = self._authenticate(request)
        if isinstance(claims, Response):
            return claims
        name = request.path_params["name"]
        denied = self._check_api_version(request) or self._authorize(claims, name)
        if denied is not None:
            return denied
        try:
            page_size = int(request.query.get("maxresults") or 25)
            start = int(request.query.get("$skiptoken") or 0)
        except ValueError:
            return self._answer(_error(400, "BadParameter", "Invalid maxresults or $skiptoken."))
        if not 1 <= page_size <= 25:
            return self._answer(_error(400, "BadParameter", "maxresults must be between 1 and 25."))
        with self._vault_lock:
            versions = sorted(self._secrets.get(name.lower(), []), key=lambda v: v.version)
        if not versions:
            return self._answer(_error(404, "SecretNotFound", f"A secret with (name/id) {name} was not found in this "
                                       "key vault."))
        page = versions[start:start + page_size]
        next_link = None
        if start + page_size < len(versions):
            next_link = (f"{self.vault_url}/secrets/{versions[0].name}/versions?api-version="
                         f"{request.query['api-version']}&maxresults={page_size}&$skiptoken={start + page_size}")
        items = []
        for version in page:
            item = {key: value for key, value in self._bundle(version).items() if key not in ("value", "kid")}
            items.append(item)
        return self._answer(Response.json({"value": items, "nextLink": next_link}))

    @route("GET", r"/secrets/(?P<name>[^/]+)(?:/(?P<version>[^/]*))?/?")
    def _get_secret(self, request: Request) -> Response:
        claims = self._authenticate(request)
        if isinstance(claims, Response):
            return claims
        name, version = request.path_params["name"], request.path_params.get("version") or None
        denied = self._check_api_version(request) or self._authorize(claims, name)
        if denied is not None:
            return denied
        with self._vault_lock:
            versions = list(self._secrets.get(name.lower(), []))
        if version is None:
            found = versions[-1] if versions else None
        else:
            found = next((v for v in versions if v.version == version.lower()), None)
        if found is None:
            shown = f"{name}/{version}" if version else name
            return self._answer(_error(404, "SecretNotFound", f"A secret with (name/id) {shown} was not found in this "
                                       "key vault. If you recently deleted this secret you may be able to recover it "
                                       "using the correct recovery command. For help resolving this issue, please see "
                                       "https://go.microsoft.com/fwlink/?linkid=2125182"))
        if not found.enabled:
            return self._answer(_error(403, "Forbidden", "Operation get is not allowed on a disabled secret.",
                                       "SecretDisabled"))
        return self._answer(Response.json(self._bundle(found)))

    def _bundle(self, secret: SecretVersion) -> dict[str, Any]:
        """Key Vault's SecretBundle JSON."""
        attributes: dict[str, Any] = {"enabled": secret.enabled, "created": secret.created, "updated": secret.updated,
                                      "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90}
        if secret.not_before is not None:
            attributes["nbf"] = secret.not_before
        if secret.expires is not None:
            attributes["exp"] = secret.expires
        bundle: dict[str, Any] = {"value": secret.value, "id": f"{self.vault_url}/secrets/{secret.name}/"
                                  f"{secret.version}", "attributes": attributes, "tags": dict(secret.tags)}
        if secret.content_type is not None:
            bundle["contentType"] = secret.content_type
        if secret.managed:  # a certificate's secret points at its key, and cannot be changed directly
            bundle.update(kid=f"{self.vault_url}/keys/{secret.name}/{secret.version}", managed=True)
        return bundle

    # ------------------------------------------------------------------ security
    def _authenticate(self, request: Request) -> dict[str, Any] | Response:
        """The bearer token's claims, or the 401 (with the challenge) Key Vault answers."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return self._unauthorized("AKV10000: Request is missing a Bearer or PoP token.")
        try:
            claims = self.entra.verify_access_token(token.strip(), audience=[self.resource, self.resource + "/"])
        except InvalidAccessToken as exc:
            if exc.expired:
                return self._unauthorized("[TokenExpired] Error validating token: 'S2S12086'.")
            if exc.reason.startswith("InvalidAudienceError"):
                return self._unauthorized(f"AKV10022: Invalid audience. Expected {self.resource}, found: "
                                          f"{_unverified_audience(token.strip())}.")
            return self._unauthorized(f"AKV10032: Invalid bearer token: {exc.reason}.")
        if str(claims["tid"]).lower() != self.tenant_id:  # a token from another tenant: the challenge names ours
            return self._unauthorized(f"AKV10032: Invalid issuer. Expected one of {self.entra.issuer(self.tenant_id)}"
                                      f", found: {claims['iss']}.")
        return claims

    def _authorize(self, claims: Mapping[str, Any], name: str) -> Response | None:
        """403 ``ForbiddenByRbac`` unless the caller holds *Key Vault Secrets User*."""
        oid = str(claims.get("oid", ""))
        with self._vault_lock:
            allowed = oid.lower() in self._readers
        if allowed:
            return None
        message = (f"Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments "
                   f"or role definitions were changed recently, please observe propagation time.\r\nCaller: "
                   f"appid={claims.get('appid', '')};oid={oid};iss={claims.get('iss', '')}\r\nAction: '{_GET_ACTION}'"
                   f"\r\nResource: '{self.resource_id}/secrets/{name.lower()}'\r\nAssignment: (not found)\r\n"
                   f"DenyAssignmentId: null\r\nDecisionReason: null \r\nVault: {self.vault_name};location="
                   f"{self.location}\r\n")
        return self._answer(_error(403, "Forbidden", message, "ForbiddenByRbac"))

    def _check_api_version(self, request: Request) -> Response | None:
        if request.query.get("api-version"):
            return None
        return self._answer(_error(400, "BadParameter", "The request URI contains an invalid or missing api-version "
                                   "query parameter."))

    def _unauthorized(self, message: str) -> Response:
        return self._answer(_error(401, "Unauthorized", message), {"WWW-Authenticate": self.challenge})

    def _answer(self, response: Response, extra: Mapping[str, str] | None = None) -> Response:
        """Add the headers every Key Vault response carries."""
        headers = {"Cache-Control": "no-cache", "x-ms-request-id": str(uuid.uuid4()),
                   "x-ms-keyvault-service-version": "1.9.2718.1", "x-ms-keyvault-region": self.location,
                   **response.headers, **(extra or {})}
        return dataclasses.replace(response, headers=headers)


def _unverified_audience(token: str) -> str:
    """The ``aud`` of a token whose signature is not checked (for the error message only)."""
    try:
        return str(jwt.decode(token, options={"verify_signature": False}).get("aud", ""))
    except jwt.PyJWTError:
        return ""
