"""Embed tokens: authorize, build the row-level-security identity from the verified caller, cache, mint.

The flow for one request: check every item it names against the allow-lists (``EMBED_ALLOWED_WORKSPACES``,
``EMBED_ALLOWED_REPORTS``, ``EMBED_ALLOWED_DATASETS``) and edit rights (``403`` before any Power BI call);
look it up in a bounded, single-flight cache keyed by whose Azure AD token mints it, content, identity and
edit rights; on a miss, get an Azure AD token that outlives the requested embed lifetime (Power BI caps
an embed token at the Azure AD token's expiry), read the reports' metadata (cached per principal too)
and whether their datasets need an effective identity, check that every requested dataset that is not
listed backs one of the requested reports, and call GenerateToken V2.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..aad.tokens import TokenService
from ..callers.caller import Caller
from ..config.embed import EmbedSettings
from ..support import telemetry
from ..support.bounded import BoundedMap
from ..support.cache import RefreshingCache
from ..support.errors import (
    CallerForbiddenError,
    ConfigurationError,
    PowerBITokenExpired,
    RequestError,
    SettingProblem,
)
from ..support.shared import SharedCache
from . import cache_codec
from .access import PowerBIAccess, access_for
from .client import DatasetInfo, EmbedToken, PowerBIClient, ReportInfo
from .embed_request import EmbedRequest, ReportRef

log = logging.getLogger(__name__)

METADATA_TTL_SECONDS = 300.0  # report embed URLs and dataset RLS flags change rarely
METADATA_MAX_ENTRIES = 2048
MAX_USERNAME_LENGTH = 256
MAX_ROLES = 50


@dataclass(frozen=True)
class Identity:
    """The effective identity for row-level security, built only from the verified caller."""

    username: str
    roles: tuple[str, ...]
    custom_data: str | None = None


@dataclass(frozen=True)
class EmbedResult:
    """An embed token with the reports it covers. ``expires_on`` is what Power BI returned."""

    token: EmbedToken
    reports: tuple[ReportInfo, ...]
    expires_on: float = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "expires_on", self.token.expires_on)


class _Metadata:
    """A small TTL + LRU cache of report and dataset metadata, so cache misses cost one Power BI call.

    With a shared tier, a miss here looks in Redis first (same key, same TTL), so one instance's Power BI
    call serves every instance.
    """

    def __init__(self, clock: Callable[[], float], shared: SharedCache | None = None) -> None:
        self._items: BoundedMap[tuple[str, ...], Any] = BoundedMap(METADATA_MAX_ENTRIES, ttl=METADATA_TTL_SECONDS,
                                                                   clock=clock)
        self._attributes = telemetry.cache_attributes("powerbi metadata")
        self._shared = shared

    def get(self, key: tuple[str, ...], load: Callable[[], Any], encode: Callable[[Any], bytes],
            decode: Callable[[bytes], Any]) -> Any:
        hit = self._items.get(key)
        if hit is not None:
            self._items.touch(key)
            telemetry.cache_lookup(self._attributes, "hit")
            return hit
        telemetry.cache_lookup(self._attributes, "miss")
        if self._shared is not None:
            value = self._shared.get_or_fetch("powerbi metadata", key, load, encode=encode, decode=decode,
                                              ttl=lambda _value: METADATA_TTL_SECONDS)
        else:
            value = load()
        self._items.put(key, value)
        return value


class EmbedService:
    """Issues embed tokens for verified callers."""

    def __init__(self, embed: EmbedSettings, tokens: TokenService, client: PowerBIClient, *, username_claim: str,
                 refresh_margin: float, http_timeout: float, clock: Callable[[], float] = time.time,
                 shared: SharedCache | None = None) -> None:
        """``username_claim`` names ``CALLER_USERNAME_CLAIM`` in messages; ``refresh_margin`` is
        ``POWERBI_TOKEN_REFRESH_MARGIN_SECONDS``; ``http_timeout`` bounds the wait for another request's fetch;
        ``shared``: the shared tier (L2) behind the memory caches, when ``CACHE_REDIS_HOST`` is set."""
        self._embed = embed
        self._username_claim = username_claim
        self._tokens = tokens
        self._client = client
        self._metadata = _Metadata(clock, shared)
        self._shared = shared
        self._refresh_margin = refresh_margin
        self._clock = clock
        self._cache: RefreshingCache[EmbedResult] = RefreshingCache(
            refresh_margin=refresh_margin, max_entries=embed.cache_max_entries,
            wait_timeout=http_timeout * 8 + 5, clock=clock, name="embed token")

    @property
    def cached_tokens(self) -> int:
        """How many embed tokens are in memory (bounded by EMBED_CACHE_MAX_ENTRIES)."""
        return len(self._cache)

    def embed(self, caller: Caller, request: EmbedRequest) -> EmbedResult:
        """An embed token for ``request``, from the cache or freshly generated."""
        self._authorize(caller, request)
        minted_for = self._tokens.minted_for(caller)  # 401 before any lookup: on-behalf-of without a token
        lifetime = request.lifetime_minutes or self._embed.lifetime_minutes
        identity = self._identity(caller)
        # The key starts with the principal whose credential mints the token: the shared tier's key is derived
        # from this whole key, so two principals never share an entry there either.
        key = (minted_for, request.reports, request.datasets, identity, lifetime)
        shared = self._shared
        if shared is None:
            return self._cache.get(key, lambda: self._generate(caller, minted_for, request, identity, lifetime))
        return self._cache.get(key, lambda: shared.get_or_fetch(
            "embed token", key, lambda: self._generate(caller, minted_for, request, identity, lifetime),
            encode=_encode_result, decode=_decode_result, ttl=self._shared_ttl))

    def _shared_ttl(self, result: EmbedResult) -> float:
        """Kept in the shared tier until the value's own expiry minus the refresh margin."""
        return result.expires_on - self._refresh_margin - self._clock()

    def _authorize(self, caller: Caller, request: EmbedRequest) -> None:
        embed = self._embed
        allowed = embed.workspaces_for(caller.profile)  # EMBED_ALLOWED_WORKSPACES and the customer's own list
        if allowed is None:
            raise ConfigurationError([SettingProblem(
                "EMBED_ALLOWED_WORKSPACES", "EMBED_ALLOWED_WORKSPACES is not set, so no embed token is issued. "
                "List the workspace IDs whose reports may be embedded.")], code="embed_not_configured")
        workspaces = {r.workspace_id for r in request.reports}
        if request.datasets and request.dataset_workspace_id:
            workspaces.add(request.dataset_workspace_id)
        refused = sorted(workspaces - allowed)
        if refused:
            raise CallerForbiddenError(f"Embedding from workspace {refused[0]} is not allowed here.",
                                       code="embed_workspace_not_allowed")
        if embed.allowed_reports is not None:
            not_allowed = [r.id for r in request.reports if r.id not in embed.allowed_reports]
            if not_allowed:
                raise CallerForbiddenError(f"Report {not_allowed[0]} may not be embedded here.",
                                           code="embed_report_not_allowed")
        # Target workspaces (Save As) are the editing reports' own workspaces, checked above.
        if any(r.allow_edit for r in request.reports) and not (
            embed.allow_edit and embed.edit_role and embed.edit_role in caller.roles
        ):
            raise CallerForbiddenError(
                "Editing is not allowed for this caller: it needs EMBED_ALLOW_EDIT=true and the app role named "
                "by EMBED_EDIT_ROLE.", code="embed_edit_not_allowed")

    def _identity(self, caller: Caller) -> Identity | None:
        """The caller's effective identity, or None for callers without one (anonymous, function key)."""
        if caller.username is None:
            return None
        roles = self._embed.dataset_roles(caller.roles)
        custom = caller.claims.get(self._embed.custom_data_claim) if self._embed.custom_data_claim else None
        return Identity(caller.username, roles, custom if isinstance(custom, str) else None)

    def _access(self, caller: Caller, lifetime_minutes: int) -> PowerBIAccess:
        # The Azure AD token must outlive the embed token, or Power BI cuts the embed token short.
        return access_for(self._tokens, caller, min_remaining=lifetime_minutes * 60)

    def _generate(self, caller: Caller, minted_for: tuple[str, ...], request: EmbedRequest,
                  identity: Identity | None, lifetime: int) -> EmbedResult:
        try:
            return self._generate_with(self._access(caller, lifetime), caller, minted_for, request,
                                       identity, lifetime)
        except PowerBITokenExpired:
            # Power BI judged the Azure AD token expired (clock skew, revocation) although it was not by
            # its expiry: forget it and try once more with a fresh one.
            self._tokens.forget(caller)
            log.warning("Power BI rejected the Azure AD token as expired; retrying once with a fresh token")
            return self._generate_with(self._access(caller, lifetime), caller, minted_for, request,
                                       identity, lifetime)

    def _generate_with(self, access: PowerBIAccess, caller: Caller, minted_for: tuple[str, ...], request: EmbedRequest,
                       identity: Identity | None, lifetime: int) -> EmbedResult:
        reports = tuple(self._report(access, minted_for, ref) for ref in request.reports)
        self._authorize_datasets(request, reports)
        dataset_refs = {(r.dataset_workspace_id, r.dataset_id) for r in reports if r.dataset_id}
        dataset_refs |= {(request.dataset_workspace_id or "", d) for d in request.datasets}
        datasets = [self._dataset(access, minted_for, workspace, dataset)
                    for workspace, dataset in sorted(dataset_refs)]
        body: dict[str, Any] = {
            "reports": [{"id": r.id, "allowEdit": True} if r.allow_edit else {"id": r.id} for r in request.reports],
            "datasets": [{"id": d.id} for d in datasets],
            "lifetimeInMinutes": lifetime,
        }
        editing = sorted({r.workspace_id for r in request.reports if r.allow_edit})
        if editing:  # Save As needs a target workspace; nothing else does
            body["targetWorkspaces"] = [{"id": w} for w in editing]
        identities = self._identities(caller, identity, datasets)
        if identities:
            body["identities"] = identities
        token = self._client.generate_token(access, body)
        telemetry.embed_token_minted()
        log.info("Generated an embed token for %d report(s), %d dataset(s), %s (expires in %d s)", len(reports),
                 len(datasets), "with an effective identity" if identities else "without identity",
                 token.expires_on - time.time())
        return EmbedResult(token, reports)

    def _authorize_datasets(self, request: EmbedRequest, reports: tuple[ReportInfo, ...]) -> None:
        """Each requested dataset is listed in EMBED_ALLOWED_DATASETS or backs a requested (allowed) report.

        Runs on the reports' metadata, before any dataset is read and before GenerateToken.
        """
        allowed = self._embed.allowed_datasets
        if allowed is None and self._embed.allowed_reports is None:
            return  # neither reports nor datasets are listed: the workspace allow-list covers both
        backing = {r.dataset_id for r in reports}
        refused = [d for d in request.datasets if d not in (allowed or frozenset()) and d not in backing]
        if refused:
            raise CallerForbiddenError(
                f"Dataset {refused[0]} backs none of the requested reports and is not in EMBED_ALLOWED_DATASETS, so "
                "it may not be included in an embed token here.", code="embed_dataset_not_allowed")

    def _report(self, access: PowerBIAccess, minted_for: tuple[str, ...], ref: ReportRef) -> ReportInfo:
        # Keyed by principal: on-behalf-of, what one user may read says nothing about another.
        info: ReportInfo = self._metadata.get((*minted_for, "report", ref.workspace_id, ref.id),
                                              lambda: self._client.get_report(access, ref.workspace_id, ref.id),
                                              cache_codec.encode_report, cache_codec.decode_report)
        return info

    def _dataset(self, access: PowerBIAccess, minted_for: tuple[str, ...], workspace_id: str,
                 dataset_id: str) -> DatasetInfo:
        info: DatasetInfo = self._metadata.get((*minted_for, "dataset", workspace_id, dataset_id),
                                               lambda: self._client.get_dataset(access, workspace_id, dataset_id),
                                               cache_codec.encode_dataset, cache_codec.decode_dataset)
        return info

    def _identities(self, caller: Caller, identity: Identity | None,
                    datasets: list[DatasetInfo]) -> list[dict[str, Any]]:
        needing = [d for d in datasets if d.requires_identity]
        if not needing:
            return []
        if identity is None:
            raise CallerForbiddenError(
                "This report uses row-level security, which needs a signed-in caller with a username claim "
                f"({self._username_claim}); CALLER_AUTH={caller.mode} provides none.",
                code="embed_identity_required")
        if len(identity.username) > MAX_USERNAME_LENGTH or " " in identity.username:
            raise RequestError(f"The caller's username cannot be an effective identity: Power BI allows at most "
                               f"{MAX_USERNAME_LENGTH} characters and no spaces.", code="embed_identity_invalid")
        if any(d.requires_roles for d in needing) and not identity.roles:
            raise CallerForbiddenError(
                "This report's dataset requires row-level-security roles and none apply to this caller. Map the "
                "caller's app roles to dataset roles in EMBED_RLS_ROLES.", code="embed_rls_roles_missing")
        if len(identity.roles) > MAX_ROLES:
            raise RequestError(f"More than {MAX_ROLES} dataset roles apply to this caller; Power BI allows "
                               f"{MAX_ROLES}.", code="embed_identity_invalid")
        entry: dict[str, Any] = {"username": identity.username, "datasets": [d.id for d in needing]}
        if identity.roles:
            entry["roles"] = list(identity.roles)
        if identity.custom_data is not None:
            entry["customData"] = identity.custom_data
        return [entry]


def _encode_result(result: EmbedResult) -> bytes:
    return cache_codec.encode_embed(result.token, result.reports)


def _decode_result(blob: bytes) -> EmbedResult:
    token, reports = cache_codec.decode_embed(blob)
    return EmbedResult(token, reports)
