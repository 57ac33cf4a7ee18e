"""Settings of caller authentication and authorization (the ``CALLER_*`` part of the contract)."""

from __future__ import annotations

from dataclasses import dataclass

from .bootstrap import Bootstrap
from .reader import SettingReader, SettingSpec

DEFAULT_USERNAME_CLAIM = "preferred_username"

CALLER_SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec("CALLER_JWT_ISSUER", "jwt: the token issuer (iss), e.g. https://login.microsoftonline.com/<tid>/v2.0."),
    SettingSpec("CALLER_JWT_AUDIENCE", "jwt: accepted audiences (aud), comma separated."),
    SettingSpec("CALLER_JWT_JWKS_URI", "jwt: the signing keys' URL; default from the issuer's discovery document."),
    SettingSpec("CALLER_JWT_LEEWAY_SECONDS", "jwt: clock skew allowed on exp/nbf/iat (at most 60).", "60"),
    SettingSpec("CALLER_JWT_JWKS_REFRESH_COOLDOWN_SECONDS", "jwt: least time between key refreshes.", "30"),
    SettingSpec("CALLER_EASYAUTH_ALLOW_LOCAL", "easyauth: accept X-MS-CLIENT-PRINCIPAL off App Service.", "false"),
    SettingSpec("CALLER_REQUIRED_ROLES", "Caller must have one of these app roles (roles claim), comma separated."),
    SettingSpec("CALLER_REQUIRED_SCOPES", "Caller must have one of these scopes (scp claim), comma separated."),
    SettingSpec("CALLER_USERNAME_CLAIM", "Claim that names the caller (row-level security).", DEFAULT_USERNAME_CLAIM),
    SettingSpec("CALLER_RATE_LIMIT_PER_MINUTE", "Token requests per caller per minute; 0 turns it off.", "0"),
    SettingSpec("CALLER_RATE_LIMIT_MAX_CALLERS", "Most callers whose rate-limit state is kept in memory.", "10000"),
    SettingSpec("CALLER_TRUSTED_PROXY_HOPS", "anonymous/function_key rate limit: X-Forwarded-For entries appended "
                "by proxies you run in front of App Service (Front Door, API Management); 0 trusts none.", "0"),
)

@dataclass(frozen=True)
class CallerSettings:
    """Validated ``CALLER_*`` settings."""

    mode: str | None = None
    jwt_issuer: str | None = None
    jwt_audiences: tuple[str, ...] = ()
    jwt_jwks_uri: str | None = None
    jwt_leeway_seconds: int = 60
    jwt_jwks_refresh_cooldown_seconds: int = 30
    easyauth_allow_local: bool = False
    required_roles: tuple[str, ...] = ()
    required_scopes: tuple[str, ...] = ()
    username_claim: str = DEFAULT_USERNAME_CLAIM
    rate_limit_per_minute: int = 0
    rate_limit_max_callers: int = 10000
    trusted_proxy_hops: int = 0


def read_caller_settings(read: SettingReader, *, bootstrap: Bootstrap, client_id: str | None,
                         grant_type: str) -> CallerSettings:
    """Read and validate the ``CALLER_*`` settings, adding problems to ``read``.

    ``CALLER_AUTH`` itself is a bootstrap setting (it decides how the routes are indexed): it comes from
    ``bootstrap``, never from the settings store.
    """
    mode = bootstrap.caller_auth
    allow_local = read.flag("CALLER_EASYAUTH_ALLOW_LOCAL")
    issuer = audiences = jwks_uri = None
    if mode == "jwt":
        issuer = read.required("CALLER_JWT_ISSUER", "jwt mode verifies tokens from this issuer.")
        if issuer is not None:
            read.https_url("CALLER_JWT_ISSUER", allow_path=True)  # validates; iss is compared exactly as given
        audiences = read.csv("CALLER_JWT_AUDIENCE")
        if not audiences:
            read.problem("CALLER_JWT_AUDIENCE", "CALLER_JWT_AUDIENCE is not set; list the audiences (aud) to "
                         "accept, such as api://<client id of your API app registration>.")
        if read.is_set("CALLER_JWT_JWKS_URI"):
            jwks_uri = read.https_url("CALLER_JWT_JWKS_URI", allow_path=True)
        if grant_type == "on_behalf_of" and client_id and not {client_id, f"api://{client_id}"} & set(audiences):
            read.problem("CALLER_JWT_AUDIENCE", "on_behalf_of exchanges the caller's token, which Azure AD accepts "
                         f"only when its audience is this app: add api://{client_id} to CALLER_JWT_AUDIENCE.")
    elif mode == "easyauth":
        platform = bootstrap.platform
        if not platform.on_app_service and not allow_local:
            read.problem("CALLER_AUTH", "CALLER_AUTH=easyauth trusts the X-MS-CLIENT-PRINCIPAL header, which only "
                         "App Service Authentication can vouch for, and this app is not running on App Service. "
                         "Set CALLER_EASYAUTH_ALLOW_LOCAL=true for local development only.")
        elif platform.on_app_service and not platform.authentication_enabled:
            # The platform sets WEBSITE_AUTH_ENABLED=True only while Authentication is on; absent means off.
            read.problem("CALLER_AUTH", "CALLER_AUTH=easyauth, but App Service Authentication is not enabled "
                         "(WEBSITE_AUTH_ENABLED is not true), so anyone could forge X-MS-CLIENT-PRINCIPAL. Turn on "
                         "Authentication with the Microsoft provider and 'Require authentication' (the infra does "
                         "this for callerAuth='easyauth').")
    if mode == "anonymous":
        whose = "the signed-in user" if grant_type == "on_behalf_of" else "the configured identity"
        read.problem("CALLER_AUTH", "CALLER_AUTH=anonymous: anyone who can reach this function gets a Power BI token "
                     f"with the rights of {whose}. Use it only behind another gate (private network, API "
                     "Management), or use CALLER_AUTH=jwt.",
                     severity="warning")
    if grant_type == "on_behalf_of" and mode in ("easyauth", "function_key"):
        read.problem("CALLER_AUTH", f"POWERBI_GRANT_TYPE=on_behalf_of needs the caller's Azure AD token: use "
                     f"CALLER_AUTH=jwt, not {mode}.")
    roles, scopes = read.csv("CALLER_REQUIRED_ROLES"), read.csv("CALLER_REQUIRED_SCOPES")
    if (roles or scopes) and mode in ("anonymous", "function_key"):
        name = "CALLER_REQUIRED_ROLES" if roles else "CALLER_REQUIRED_SCOPES"
        read.problem(name, f"{name} needs a caller identity; CALLER_AUTH={mode} has none. Use jwt or easyauth.")
    username_claim = read.raw("CALLER_USERNAME_CLAIM") or DEFAULT_USERNAME_CLAIM
    if not username_claim.replace("_", "").replace(".", "").replace(":", "").replace("/", "").isalnum():
        read.problem("CALLER_USERNAME_CLAIM",
                     "CALLER_USERNAME_CLAIM is not a claim name (letters, digits, _ . : / only).")
    return CallerSettings(
        mode=mode,
        jwt_issuer=issuer,
        jwt_audiences=audiences or (),
        jwt_jwks_uri=jwks_uri,
        jwt_leeway_seconds=read.integer("CALLER_JWT_LEEWAY_SECONDS", minimum=0, maximum=60),
        jwt_jwks_refresh_cooldown_seconds=read.integer(
            "CALLER_JWT_JWKS_REFRESH_COOLDOWN_SECONDS", minimum=1, maximum=86400),
        easyauth_allow_local=allow_local,
        required_roles=roles,
        required_scopes=scopes,
        username_claim=username_claim,
        rate_limit_per_minute=read.integer("CALLER_RATE_LIMIT_PER_MINUTE", minimum=0, maximum=1_000_000),
        rate_limit_max_callers=read.integer("CALLER_RATE_LIMIT_MAX_CALLERS", minimum=1, maximum=10_000_000),
        trusted_proxy_hops=read.integer("CALLER_TRUSTED_PROXY_HOPS", minimum=0, maximum=10),
    )
