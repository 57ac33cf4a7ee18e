"""Infrastructure as code: the Bicep under infra/ parses, follows the security policy, and agrees with the
settings contract (token_broker.config.contract.SETTINGS), the azd parameters file and azure.yaml.

Bicep is parsed with pycep-parser (no Bicep CLI needed), which turns each file into JSON-like dicts:
``parameters``, ``variables``, ``resources`` (child resources flattened as ``parent__child``), ``modules``
and ``outputs``. Expressions become ``{"function": ...}`` / ``{"operator": ...}`` trees, identifiers are
``BicepElement`` strings and object literals stay plain dicts. pycep-parser drops comments, so the
role-name comments are checked in the source text.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser
from pycep.models import BicepElement

from token_broker.config import contract
from token_broker.config.bootstrap import BOOTSTRAP_NAMES
from token_broker.runtime import Runtime
from token_broker.support.errors import ConfigurationError

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
MAIN = INFRA / "main.bicep"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))
HOOKS = (INFRA / "hooks" / "postprovision.sh", INFRA / "hooks" / "postprovision.ps1")

#: Settings of the next issues, being added to the contract: Bicep may set them before they land.
UPCOMING_SETTINGS = frozenset({
    "POWERBI_CLIENT_SECRET_URI", "POWERBI_PASSWORD_URI", "POWERBI_CLIENT_CERTIFICATE_URI",
    "POWERBI_CLIENT_CERTIFICATE_SEND_X5C", "POWERBI_CLIENT_ASSERTION", "POWERBI_CLOUD", "AZURE_CLIENT_ID",
    "AZURE_APPCONFIG_ENDPOINT", "AZURE_APPCONFIG_LABEL", "AZURE_APPCONFIG_REFRESH_SECONDS", "POWERBI_WORKSPACE_ID",
    "EMBED_ALLOWED_WORKSPACES", "EMBED_ALLOWED_REPORTS", "EMBED_ALLOW_EDIT", "EMBED_EDIT_ROLE", "EMBED_RLS_ROLES",
    "EMBED_RLS_CUSTOM_DATA_CLAIM", "EMBED_TOKEN_LIFETIME_MINUTES", "EMBED_CACHE_MAX_ENTRIES",
})

#: Runtime and platform settings the Bicep sets that are not the broker's contract.
PLATFORM_SETTINGS = frozenset({
    "AzureWebJobsStorage__blobServiceUri",  # identity-based runtime storage, blobs only (no connection string)
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",  # where telemetry goes (ingestion needs Entra ID: local auth is off)
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",  # telemetry authenticated with the managed identity
    "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY",  # the worker exports OpenTelemetry to Application Insights
    "AZURE_CLIENT_ID",  # the user-assigned identity azure-identity uses
    "PYTHON_THREADPOOL_THREAD_COUNT",  # the Python worker's threads, matched to the HTTP concurrency
})

#: Settings the broker reads from the process environment only (app settings and platform variables), never
#: from the App Configuration store: they decide how the app is indexed and where the store is. A bootstrap
#: key found in the store is ignored by the broker, so the deployment must never write one there.
PLATFORM_PREFIXES = ("WEBSITE_", "IDENTITY_")


def is_bootstrap(name: str) -> bool:
    return name in BOOTSTRAP_NAMES or name.startswith(PLATFORM_PREFIXES)

#: Contract settings the deployment leaves unset on purpose (documented as optional), with the reason.
OPTIONAL_SETTINGS: dict[str, str] = {
    "POWERBI_AUTHORITY_HOST": "derived from POWERBI_CLOUD, which the deployment sets",
    "POWERBI_SCOPE": "derived from POWERBI_CLOUD, which the deployment sets",
    "POWERBI_API_URL": "derived from POWERBI_CLOUD, which the deployment sets",
    "POWERBI_TOKEN_REFRESH_MARGIN_SECONDS": "tuning; the contract default fits",
    "POWERBI_HTTP_TIMEOUT_SECONDS": "tuning; the contract default fits",
    "POWERBI_USER_TOKEN_CACHE_MAX_ENTRIES": "tuning; the contract default fits",
    "POWERBI_CLIENT_CERTIFICATE_URI": "certificates are not one of the template's credential modes; set it by hand "
                                      "after importing a certificate into the vault (docs/DEPLOY.md)",
    "POWERBI_CLIENT_CERTIFICATE_SEND_X5C": "only with POWERBI_CLIENT_CERTIFICATE_URI",
    "CALLER_JWT_JWKS_URI": "read from the issuer's discovery document by default",
    "HEALTH_DETAILS": "local development only: in Azure, /api/health shows details to authenticated callers",
    "EMBED_ALLOWED_DATASETS": "optional allow-list; the deployment lists workspaces (and reports, if given)",
    "CALLER_JWT_LEEWAY_SECONDS": "tuning; the contract default fits",
    "CALLER_JWT_JWKS_REFRESH_COOLDOWN_SECONDS": "tuning; the contract default fits",
    "CALLER_EASYAUTH_ALLOW_LOCAL": "local development only; must stay unset (false) in Azure",
    "CALLER_USERNAME_CLAIM": "the default (preferred_username) fits Entra ID tokens",
    "CALLER_RATE_LIMIT_MAX_CALLERS": "tuning; the contract default fits",
    "CALLER_TRUSTED_PROXY_HOPS": "0 fits the template (nothing in front of the app); set it when you add Front Door "
                                 "or API Management",
    "EMBED_ALLOWED_REPORTS": "depends on the reports; set after deployment",
    "EMBED_ALLOW_EDIT": "off unless the reports need editing; set after deployment",
    "EMBED_EDIT_ROLE": "only with EMBED_ALLOW_EDIT",
    "EMBED_RLS_ROLES": "depends on the datasets' row-level security roles; set after deployment",
    "EMBED_RLS_CUSTOM_DATA_CLAIM": "depends on the datasets; set after deployment",
    "EMBED_TOKEN_LIFETIME_MINUTES": "tuning; the contract default fits",
    "EMBED_CACHE_MAX_ENTRIES": "tuning; the contract default fits",
    "POWERBI_PROFILE_CLAIM": "multitenancy is opt-in: set with POWERBI_PROFILES after onboarding customers "
                             "(docs/MULTITENANCY.md)",
    "POWERBI_PROFILES": "per customer, after onboarding; many customers belong in App Configuration key-values "
                        "TokenBroker:Profiles:<customer>",
    "POWERBI_PROXY_ENABLED": "the Power BI proxy is off by default (secure by default); turned on after deployment",
    "POWERBI_PROXY_OPERATIONS": "the contract default (read-only operations) fits; narrowed or widened per app",
    "POWERBI_PROXY_ALLOW_ANONYMOUS": "off: never deployed open to anonymous callers",
    "POWERBI_PROXY_QUERY_CACHE_SECONDS": "tuning; the contract default fits",
    "POWERBI_PROXY_QUERY_CACHE_MAX_ENTRIES": "tuning; the contract default fits",
    "POWERBI_PROXY_QUERIES_PER_MINUTE": "tuning; the contract default keeps under Power BI's 120 per user",
    "POWERBI_PROXY_MAX_RESPONSE_BYTES": "tuning; the contract default fits",
    "CACHE_REDIS_PASSWORD": "only with CACHE_REDIS_AUTH=password; the template uses Entra ID authentication",
    "AZURE_APPCONFIG_LABEL": "the template writes unlabelled key-values",
}

#: Built-in Azure role definition ids the templates may use, and the names their comments must give.
BUILTIN_ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
    "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7": "Key Vault Secrets Officer",
    "516239f1-63e1-4d78-a4de-a74fb236a071": "App Configuration Data Reader",
    "5ae67dd6-50cb-40e7-96ff-dc2bfa4b606b": "App Configuration Data Owner",
}
#: Roles the function app's identity needs.
IDENTITY_ROLES = {"Storage Blob Data Owner", "Monitoring Metrics Publisher", "Key Vault Secrets User",
                  "App Configuration Data Reader"}

_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_SECRETISH_WORDS = {"secret", "secrets", "password", "passwords", "passwd", "pwd", "key", "keys", "sas",
                    "connectionstring"}


# -- parsing helpers --------------------------------------------------------------------------------------


@cache
def _parser() -> BicepParser:
    return BicepParser()


@cache
def parsed(path: Path) -> dict[str, Any]:
    """The pycep-parser JSON of one Bicep file."""
    tree: Any = _parser().parse(file_path=path)
    assert isinstance(tree, dict)
    return tree


def module_file(name: str) -> Path:
    return INFRA / "app" / f"{name}.bicep"


def unwrap(config: Any) -> dict[str, Any]:
    """The body of a resource or module, without its ``if (...)`` condition or ``[for ...]`` loop."""
    while isinstance(config, dict) and "config" in config and ("condition" in config or "loop_type" in config):
        config = config["config"]
    assert isinstance(config, dict)
    return config


Body = dict[str, Any]


def resources(*, of_type: str | None = None, include_existing: bool = False) -> Iterator[tuple[Path, str, Body]]:
    """(file, symbolic name, body) of every resource declared under infra/."""
    for path in BICEP_FILES:
        for name, attrs in parsed(path).get("resources", {}).items():
            if attrs["existing"] and not include_existing:
                continue
            if of_type is None or attrs["type"].lower() == of_type.lower():
                yield path, name, unwrap(attrs["config"])


def one(of_type: str) -> tuple[Path, str, Body]:
    found = list(resources(of_type=of_type))
    assert len(found) == 1, f"expected exactly one {of_type}, found {[n for _, n, _ in found]}"
    return found[0]


def get(mapping: dict[str, Any], *path: str) -> Any:
    """A nested property, matching keys case-insensitively like Bicep does."""
    value: Any = mapping
    for key in path:
        assert isinstance(value, dict), f"{key} is not inside an object: {value!r}"
        matches = [v for k, v in value.items() if k.strip("'").lower() == key.lower()]
        assert matches, f"property {'.'.join(path)} is missing"
        value = matches[0]
    return value


def is_expression(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in ("function", "operator")


def object_keys(value: Any) -> set[str]:
    """Keys of every object literal an expression can evaluate to (through union(), ?:, and so on)."""
    if is_expression(value):
        return set().union(*(object_keys(v) for v in _children(value)))
    if isinstance(value, dict):
        return {key.strip("'") for key in value}
    return set()


def object_items(value: Any) -> Iterator[tuple[str, Any]]:
    """(key, value) of every object literal an expression can evaluate to."""
    if is_expression(value):
        for child in _children(value):
            yield from object_items(child)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key.strip("'"), item


def _children(expression: dict[str, Any]) -> list[Any]:
    node = next(iter(expression.values()))
    inner = node.get("operands") or node.get("parameters") or {}
    return list(inner.values()) if isinstance(inner, dict) else []


def references(value: Any) -> set[str]:
    """Identifiers (parameters, variables, resources, modules) an expression uses."""
    if isinstance(value, BicepElement):
        return {str(value)}
    if isinstance(value, dict):
        return set().union(set(), *(references(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(set(), *(references(v) for v in value))
    return set()


def function_name(value: Any) -> str | None:
    return value["function"]["type"] if isinstance(value, dict) and "function" in value else None


def decorator(param: dict[str, Any], kind: str) -> Any:
    for deco in param.get("decorators", []):
        if deco.get("type") == kind:
            return deco.get("argument", deco.get("arguments", True))
    return None


def app_settings_variables() -> dict[tuple[Path, str], Any]:
    """Variables named ``*AppSettings``: every app setting the templates set is a key of one of them."""
    return {(path, name): attrs["value"]
            for path in BICEP_FILES
            for name, attrs in parsed(path).get("variables", {}).items() if name.endswith("AppSettings")}


def bicep_app_settings() -> set[str]:
    return set().union(*(object_keys(value) for value in app_settings_variables().values()))


def simple_yaml(text: str) -> dict[str, Any]:
    """Enough YAML for azure.yaml: nested mappings of scalars (no lists, no flow style)."""
    root: dict[str, Any] = {}
    stack: list[tuple[int, dict[str, Any]]] = [(-1, root)]
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        key, _, value = line.strip().partition(":")
        while stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        if value.strip():
            parent[key] = value.strip().strip("'\"")
        else:
            parent[key] = {}
            stack.append((indent, parent[key]))
    return root


# -- every file parses -------------------------------------------------------------------------------------


def test_the_templates_exist() -> None:
    names = {p.relative_to(INFRA).as_posix() for p in BICEP_FILES}
    assert {"main.bicep", "app/api.bicep", "app/entra.bicep", "app/keyvault.bicep", "app/storage.bicep",
            "app/monitoring.bicep", "app/identity.bicep", "app/rbac.bicep", "app/appconfig.bicep",
            "app/redis.bicep"} <= names


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_bicep_parses(path: Path) -> None:
    tree = parsed(path)
    assert tree.get("resources") or tree.get("modules"), f"{path.name} declares nothing"


def test_main_follows_the_azd_template_conventions() -> None:
    tree = parsed(MAIN)
    assert tree["globals"]["scope"]["value"] == "subscription"
    variables = tree["variables"]
    assert function_name(variables["abbrs"]["value"]) == "load_json_content"
    token = variables["resourceToken"]["value"]
    assert function_name(token) == "to_lower"
    assert "unique_string" in json.dumps(token)
    abbreviations = json.loads((INFRA / "abbreviations.json").read_text())
    for path in BICEP_FILES:
        for used in re.findall(r"abbrs\.(\w+)", path.read_text()):
            assert used in abbreviations, f"{path.name}: abbrs.{used} is not in abbreviations.json"
    assert get(variables["tags"]["value"], "azd-env-name") == "environmentName"
    for name in tree["outputs"]:
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", name), f"output {name} is not UPPER_SNAKE"
    assert {"AZURE_FUNCTION_APP_NAME", "AZURE_KEY_VAULT_NAME", "AZURE_KEY_VAULT_URI", "SERVICE_API_URI",
            "POWERBI_CLIENT_ID", "AZURE_LOCATION", "AZURE_TENANT_ID", "AZURE_RESOURCE_GROUP"} <= set(tree["outputs"])


def test_modules_point_at_files_that_exist_and_get_every_required_parameter() -> None:
    for name, attrs in parsed(MAIN)["modules"].items():
        target = INFRA / attrs["detail"]["path"]
        assert target.is_file(), f"module {name}: {target} does not exist"
        declared = parsed(target).get("parameters", {})
        given = set(unwrap(attrs["config"]).get("params", {}))
        required = {p for p, a in declared.items() if a["default"] is None}
        assert required <= given, f"module {name} lacks parameters {sorted(required - given)}"
        assert given <= set(declared), f"module {name} passes unknown parameters {sorted(given - set(declared))}"


# -- security policy ---------------------------------------------------------------------------------------


def test_key_vault_uses_rbac_soft_delete_and_purge_protection() -> None:
    _, _, vault = one("Microsoft.KeyVault/vaults")
    assert get(vault, "properties", "enableRbacAuthorization") is True
    assert get(vault, "properties", "enableSoftDelete") is True
    assert get(vault, "properties", "enablePurgeProtection") is True


def test_function_app_is_https_only_tls12_flex_python() -> None:
    _, _, site = one("Microsoft.Web/sites")
    props = get(site, "properties")
    assert get(props, "httpsOnly") is True
    assert get(props, "siteConfig", "minTlsVersion") == "1.2"
    # FTP is off through basicPublishingCredentialsPolicies (test_basic_auth_publishing_is_off), not
    # siteConfig.ftpsState, which Flex Consumption rejects (tests/test_flex.py).
    assert "ftpsState" not in get(props, "siteConfig")
    runtime = get(props, "functionAppConfig", "runtime")
    assert get(runtime, "name") == "python"
    assert get(runtime, "version") == f"{sys.version_info.major}.{sys.version_info.minor}"
    storage = get(props, "functionAppConfig", "deployment", "storage")
    assert get(storage, "type") == "blobContainer"
    assert get(storage, "authentication", "type") == "UserAssignedIdentity"
    # One user-assigned identity, also used for Key Vault references.
    assert get(site, "identity", "type") == "UserAssigned"
    assert get(props, "keyVaultReferenceIdentity") == "identityId"
    assert get(storage, "authentication", "userAssignedIdentityResourceId") == "identityId"
    assert "azd-service-name" in json.dumps(get(site, "tags"))
    assert get(site, "tags")["function"]["type"] == "union"
    assert dict(object_items(get(site, "tags"))).get("azd-service-name") == "api"
    assert "tags" in references(get(site, "tags"))


def test_the_plan_is_flex_consumption() -> None:
    _, _, plan = one("Microsoft.Web/serverfarms")
    assert get(plan, "sku", "name") == "FC1"
    assert get(plan, "sku", "tier") == "FlexConsumption"


def test_basic_auth_publishing_is_off() -> None:
    policies = {get(body, "name"): body for _, _, body in
                resources(of_type="Microsoft.Web/sites/basicPublishingCredentialsPolicies")}
    assert set(policies) == {"ftp", "scm"}
    assert all(get(p, "properties", "allow") is False for p in policies.values())


def test_storage_has_no_shared_keys_public_blobs_or_old_tls() -> None:
    _, _, storage = one("Microsoft.Storage/storageAccounts")
    props = get(storage, "properties")
    assert get(props, "allowSharedKeyAccess") is False
    assert get(props, "allowBlobPublicAccess") is False
    assert get(props, "minimumTlsVersion") == "TLS1_2"
    assert get(props, "supportsHttpsTrafficOnly") is True


def test_monitoring_and_app_configuration_disable_local_auth() -> None:
    _, _, insights = one("Microsoft.Insights/components")
    assert get(insights, "properties", "DisableLocalAuth") is True
    _, _, workspace = one("Microsoft.OperationalInsights/workspaces")
    assert get(workspace, "properties", "features", "disableLocalAuth") is True
    _, _, store = one("Microsoft.AppConfiguration/configurationStores")
    assert get(store, "properties", "disableLocalAuth") is True
    # With local auth off, Resource Manager can only write key-values with the deployer's identity.
    assert get(store, "properties", "dataPlaneProxy", "authenticationMode") == "Pass-through"


def test_runtime_storage_and_telemetry_use_the_managed_identity() -> None:
    platform = object_keys(parsed(module_file("api"))["variables"]["platformAppSettings"]["value"])
    assert {"AzureWebJobsStorage__blobServiceUri", "AzureWebJobsStorage__credential", "AzureWebJobsStorage__clientId",
            "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"} <= platform
    settings = dict(object_items(parsed(module_file("api"))["variables"]["platformAppSettings"]["value"]))
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "ClientId=${identityClientId};Authorization=AAD"
    assert not {"AzureWebJobsStorage", "AzureWebJobsStorage__connectionString"} & bicep_app_settings()


def test_the_worker_exports_opentelemetry_with_entra_authentication() -> None:
    """docs/OPERATIONS.md: the worker's Azure Monitor distro (enabled by the app setting, installed from
    requirements.txt) authenticates with the user-assigned identity; the host exports OpenTelemetry too."""
    settings = dict(object_items(parsed(module_file("api"))["variables"]["platformAppSettings"]["value"]))
    assert settings["PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"] == "true"
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "ClientId=${identityClientId};Authorization=AAD"
    host = json.loads((ROOT / "host.json").read_text(encoding="utf-8"))
    assert host["telemetryMode"] == "OpenTelemetry"
    requirements = (ROOT / "requirements.txt").read_text(encoding="utf-8")
    assert "\nazure-monitor-opentelemetry==" in requirements and "\nopentelemetry-api==" in requirements
    _, _, insights = one("Microsoft.Insights/components")
    assert get(insights, "properties", "DisableLocalAuth") is True


def test_runtime_storage_is_blob_only_like_the_roles() -> None:
    """With __accountName the host also builds queue and table clients for AzureWebJobsStorage and logs 403s,
    because the identity holds blob roles only; the service URI of each service it may use must match a role."""
    platform = object_keys(parsed(module_file("api"))["variables"]["platformAppSettings"]["value"])
    assert "AzureWebJobsStorage__accountName" not in bicep_app_settings()
    services = {name.removeprefix("AzureWebJobsStorage__").removesuffix("ServiceUri")
                for name in platform if name.endswith("ServiceUri")}
    assert services == {"blob"}
    storage_roles = {BUILTIN_ROLES[parsed(module_file("rbac"))["variables"][name]["value"]]
                     for name in parsed(module_file("rbac"))["variables"] if name.startswith("storage")}
    assert storage_roles == {"Storage Blob Data Owner"}, "add the ServiceUri setting of every storage role's service"


def test_scale_limits_and_http_concurrency() -> None:
    for path in (MAIN, module_file("api")):
        param = parsed(path)["parameters"]["maximumInstanceCount"]
        assert (decorator(param, "min_value"), decorator(param, "max_value")) == (40, 1000), path.name
        concurrency = parsed(path)["parameters"]["httpPerInstanceConcurrency"]
        assert decorator(concurrency, "min_value") == 1 and concurrency["default"] >= 1, path.name
    assert parsed(MAIN)["parameters"]["httpPerInstanceConcurrency"]["default"] == \
        parsed(module_file("api"))["parameters"]["httpPerInstanceConcurrency"]["default"]
    assert parsed(MAIN)["modules"]["api"]["config"]["params"]["httpPerInstanceConcurrency"] == \
        "httpPerInstanceConcurrency"
    # The benchmark that measured the choice reports the deployed value (python -m benchmarks --only concurrency).
    measured = re.search(r"^DEPLOYED_CONCURRENCY = (\d+)$", (ROOT / "benchmarks" / "concurrency.py").read_text(),
                         re.MULTILINE)
    assert measured and int(measured.group(1)) == parsed(MAIN)["parameters"]["httpPerInstanceConcurrency"]["default"]
    _, _, site = one("Microsoft.Web/sites")
    http = get(site, "properties", "functionAppConfig", "scaleAndConcurrency", "triggers", "http")
    assert get(http, "perInstanceConcurrency") == "httpPerInstanceConcurrency"
    # The Python worker gets one thread per concurrent request, up to its maximum of 32.
    for concurrency, threads in ((1, "1"), (8, "8"), (32, "32"), (100, "32")):
        api = Evaluator(parsed(module_file("api")), {"identityClientId": IDENTITY_CLIENT_ID,
                                                     "httpPerInstanceConcurrency": concurrency},
                        {"storage.properties.primaryEndpoints.blob": "https://sttest.blob.core.windows.net/",
                         "applicationInsights.properties.ConnectionString": "InstrumentationKey=0"})
        assert api.variable("platformAppSettings")["PYTHON_THREADPOOL_THREAD_COUNT"] == threads


#: The azd Flex Consumption template's regions (Azure-Samples/functions-quickstart-python-http-azd, main.bicep).
FLEX_REGIONS_OF_THE_AZD_TEMPLATE = frozenset({
    "australiaeast", "australiasoutheast", "brazilsouth", "canadacentral", "centralindia", "centralus", "eastasia",
    "eastus", "eastus2", "eastus2euap", "francecentral", "germanywestcentral", "italynorth", "japaneast",
    "koreacentral", "northcentralus", "northeurope", "norwayeast", "southafricanorth", "southcentralus",
    "southeastasia", "southindia", "spaincentral", "swedencentral", "uaenorth", "uksouth", "ukwest", "westcentralus",
    "westeurope", "westus", "westus2", "westus3"})


def test_location_is_a_flex_consumption_region() -> None:
    allowed = set(decorator(parsed(MAIN)["parameters"]["location"], "allowed"))
    assert allowed >= FLEX_REGIONS_OF_THE_AZD_TEMPLATE
    assert all(re.fullmatch(r"[a-z0-9]+", region) for region in allowed)
    assert "list-flexconsumption-locations" in MAIN.read_text()


def test_cors_comes_from_a_parameter_that_never_allows_everyone() -> None:
    _, _, site = one("Microsoft.Web/sites")
    assert get(site, "properties", "siteConfig", "cors", "allowedOrigins") == "corsAllowedOrigins"
    for path in BICEP_FILES:
        param = parsed(path).get("parameters", {}).get("corsAllowedOrigins")
        if param is not None:
            assert param["type"] == "array"
            assert param["default"] == [], f"{path.name}: corsAllowedOrigins must default to []"
    assert parsed(MAIN)["modules"]["api"]["config"]["params"]["corsAllowedOrigins"] == "corsAllowedOrigins"
    for path in BICEP_FILES:
        assert "'*'" not in path.read_text(), f"{path.name} contains the wildcard origin '*'"
    assert "*" not in parameters_file()["corsAllowedOrigins"]["value"]


def test_every_located_resource_is_tagged() -> None:
    checked = 0
    for path, name, body in resources():
        if "location" not in body:
            continue
        checked += 1
        assert "tags" in body, f"{path.name}: resource {name} has no tags"
        assert "tags" in references(body["tags"]), f"{path.name}: resource {name} does not use the tags parameter"
    assert checked >= 8
    for name, attrs in parsed(MAIN)["modules"].items():
        target = parsed(INFRA / attrs["detail"]["path"])
        if "tags" in target.get("parameters", {}):
            assert unwrap(attrs["config"])["params"].get("tags") == "tags", f"module {name} is not given tags"


def test_role_assignments_are_named_with_guid_and_comment_their_role() -> None:
    assignments = list(resources(of_type="Microsoft.Authorization/roleAssignments"))
    assert assignments
    used_roles: set[str] = set()
    for path, name, body in assignments:
        assert function_name(body["name"]) == "guid", f"{path.name}: {name} is not named with guid(...)"
        role = get(body, "properties", "roleDefinitionId")
        assert function_name(role) == "subscription_resource_id", f"{path.name}: {name}"
        variable = str(role["function"]["parameters"]["resource_name_1"])
        role_id = parsed(path)["variables"][variable]["value"]
        assert role_id in BUILTIN_ROLES, f"{path.name}: {name} uses the unknown role {role_id}"
        used_roles.add(BUILTIN_ROLES[role_id])
        assert get(body, "properties", "principalType"), f"{path.name}: {name} has no principalType"
    assert used_roles >= IDENTITY_ROLES
    # Every role definition id in the sources is commented with its role's name.
    for path in BICEP_FILES:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for role_id in set(_GUID.findall(line)) & set(BUILTIN_ROLES):
                code, _, comment = line.partition("//")
                assert role_id in code and BUILTIN_ROLES[role_id] in comment, (
                    f"{path.name}:{number}: role {role_id} needs the comment // {BUILTIN_ROLES[role_id]}")


def _secretish(name: str) -> bool:
    words = [w.lower() for w in re.findall(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])", name)]
    joined = "".join(words)
    words = [w for i, w in enumerate(words) if not (w == "key" and words[i + 1:i + 2] == ["vault"])]
    return bool(_SECRETISH_WORDS & set(words)) or "connectionstring" in joined


def test_the_secret_name_check_works() -> None:
    assert _secretish("clientSecret") and _secretish("POWERBI_PASSWORD") and _secretish("storageKey")
    assert _secretish("APPLICATIONINSIGHTS_CONNECTION_STRING") and _secretish("connectionString")
    assert not _secretish("AZURE_KEY_VAULT_NAME") and not _secretish("keyVaultName")
    assert not _secretish("credentialMode") and not _secretish("resourceToken")


def test_no_secret_in_any_parameter_or_output() -> None:
    for path in BICEP_FILES:
        tree = parsed(path)
        for name, param in tree.get("parameters", {}).items():
            assert not _secretish(name), f"{path.name}: parameter {name} looks like a secret"
            if decorator(param, "secure") is not None:
                assert param["default"] is None, f"{path.name}: @secure() parameter {name} has a default"
        for name, output in tree.get("outputs", {}).items():
            assert not _secretish(name), f"{path.name}: output {name} looks like a secret"
            text = json.dumps(output["value"])
            assert "function_accessor" not in text, f"{path.name}: output {name} calls a list*() function"
            assert "connectionstring" not in text.lower(), f"{path.name}: output {name} is a connection string"
            assert "secretText" not in text, f"{path.name}: output {name} is a generated password"
            assert decorator(output, "secure") is None


def test_secret_settings_are_only_key_vault_references() -> None:
    found = 0
    for (path, variable), value in app_settings_variables().items():
        for name, setting in object_items(value):
            if name in contract.SECRET_SETTINGS:
                found += 1
                assert isinstance(setting, str) and setting.startswith("@Microsoft.KeyVault(VaultName="), (
                    f"{path.name}: {variable}.{name} must be a Key Vault reference")
    assert found >= 1
    text = MAIN.read_text()
    assert "SecretName=${clientSecretName}" in text
    assert parsed(MAIN)["variables"]["clientSecretName"]["value"] == "powerbi-client-secret"
    assert parsed(MAIN)["variables"]["masterPasswordName"]["value"] == "powerbi-master-password"
    for hook in HOOKS:  # the hooks write the secret the templates reference
        assert "'powerbi-client-secret'" in hook.read_text() or '"powerbi-client-secret"' in hook.read_text()


def test_credential_modes() -> None:
    param = parsed(MAIN)["parameters"]["credentialMode"]
    assert set(decorator(param, "allowed")) == {"keyVaultReference", "runtimeSecretUri", "federated"}
    assert param["default"] == "keyVaultReference"
    settings = dict(object_items(parsed(MAIN)["variables"]["brokerAppSettings"]["value"]))
    assert settings["POWERBI_CLIENT_ASSERTION"] == "managed_identity"
    assert settings["POWERBI_CLIENT_SECRET_URI"] == "clientSecretUri"
    assert parsed(MAIN)["variables"]["clientSecretUri"]["value"] == (
        "${keyVault.outputs.uri}secrets/${clientSecretName}")


# -- Entra ID (Microsoft Graph Bicep extension) --------------------------------------------------------------


def test_graph_extension_is_configured() -> None:
    config = json.loads((INFRA / "bicepconfig.json").read_text())
    reference = config["extensions"]["microsoftGraphV1"]
    assert re.fullmatch(r"br:mcr\.microsoft\.com/bicep/extensions/microsoftgraph/v1\.0:\d+\.\d+\.\d+(-preview)?",
                        reference)
    assert "microsoftGraphV1" in parsed(module_file("entra"))["extensions"]


def test_entra_objects() -> None:
    tree = parsed(module_file("entra"))
    apps = {n: unwrap(a["config"]) for n, a in tree["resources"].items() if a["type"] == "Microsoft.Graph/applications"}
    assert len(apps) == 2
    for name, app in apps.items():
        assert app.get("uniqueName"), f"{name} needs a uniqueName (idempotent deployments)"
        assert app.get("signInAudience") == "AzureADMyOrg"
        assert get(app, "api", "requestedAccessTokenVersion") == 2
    api = apps["callerApiApp"]
    assert [s["value"] for s in tree["variables"]["callerScopes"]["value"]] == ["access_as_user"]
    assert [r["value"] for r in tree["variables"]["callerRoles"]["value"]] == ["Report.Viewer"]
    assert get(api, "api", "oauth2PermissionScopes") == "callerScopes"
    assert get(api, "appRoles") == "callerRoles"
    assert "tenant" in json.dumps(tree["variables"]["callerApiIdentifierUri"]["value"])

    principals = [unwrap(a["config"]) for a in tree["resources"].values()
                  if a["type"] == "Microsoft.Graph/servicePrincipals"]
    assert len(principals) == 2
    # Owned like their applications: Application.ReadWrite.OwnedBy can update them on a redeploy.
    for body in [*principals, *apps.values()]:
        assert get(body, "owners", "relationships") == "owners"

    fic = unwrap(tree["resources"]["powerbiApp__managedIdentityCredential"]["config"])
    assert tree["resources"]["powerbiApp__managedIdentityCredential"]["config"]["condition"] == "isFederated"
    assert fic["issuer"] == "${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0"
    assert fic["subject"] == "identityPrincipalId"
    assert fic["audiences"] == ["tokenExchangeAudience"]
    assert tree["parameters"]["tokenExchangeAudience"]["default"] == "api://AzureADTokenExchange"

    # The Power BI app always declares the scope and role and enables them only with on_behalf_of: Graph
    # refuses to remove an enabled scope or role, so a grant type change must never remove one.
    powerbi = apps["powerbiApp"]
    assert get(powerbi, "api", "oauth2PermissionScopes") == "powerbiAppScopes"
    assert get(powerbi, "appRoles") == "powerbiAppRoles"
    for grant in ("client_credentials", "on_behalf_of", "password"):
        entra = Evaluator(tree, {"grantType": grant, "resourceToken": "abcdefghijklm"}, {})
        for variable, declared in (("powerbiAppScopes", "callerScopes"), ("powerbiAppRoles", "callerRoles")):
            values = entra.variable(variable)
            assert [v["id"] for v in values] == [v["id"] for v in entra.variable(declared)]
            assert {v["isEnabled"] for v in values} == {grant == "on_behalf_of"}

    group = unwrap(tree["resources"]["powerbiSecurityGroup"]["config"])
    assert group["securityEnabled"] is True and group["mailEnabled"] is False and group["uniqueName"]
    assert "powerbiServicePrincipal" in references(group["members"]["relationships"])


# -- the settings contract -----------------------------------------------------------------------------------


def test_app_configuration_keys_are_the_ones_the_broker_loads() -> None:
    """The hook writes the key-values (not Resource Manager: the data-plane role would not have propagated)."""
    tree = parsed(module_file("appconfig"))
    assert not [attrs for attrs in tree["resources"].values()
                if attrs["type"] == "Microsoft.AppConfiguration/configurationStores/keyValues"]
    writer = (INFRA / "hooks" / "appconfig_keyvalues.py").read_text()
    loader = pytest.importorskip("token_broker.config.store")
    assert f'KEY_PREFIX = "{loader.KEY_PREFIX}"' in writer
    assert 'SENTINEL_KEY = KEY_PREFIX + "Sentinel"' in writer and loader.SENTINEL_KEY == loader.KEY_PREFIX + "Sentinel"
    for hook in HOOKS:
        assert "appconfig_keyvalues.py" in hook.read_text(), hook.name
    outputs = parsed(MAIN)["outputs"]
    for name in ("AZURE_APPCONFIG_ENDPOINT", "AZURE_APPCONFIG_SETTINGS", "AZURE_APPCONFIG_KEYVAULT_REFERENCES"):
        assert name in outputs and f'"{name}"' in writer


def test_the_app_settings_reach_the_function_app() -> None:
    site_settings = next(body for _, _, body in resources(of_type="Microsoft.Web/sites/config")
                         if body["name"] == "appsettings")
    assert references(site_settings["properties"]) == {"appSettings", "platformAppSettings"}
    api = parsed(MAIN)["modules"]["api"]["config"]["params"]
    assert api["appSettings"] == "functionAppSettings"
    assert references(parsed(MAIN)["variables"]["functionAppSettings"]["value"]) >= {
        "brokerAppSettings", "keyVaultReferenceAppSettings", "useAppConfiguration", "sharedCacheAppSettings"}
    app_config = unwrap(parsed(MAIN)["modules"]["appConfiguration"]["config"])["params"]
    assert "settings" not in app_config
    assert references(parsed(MAIN)["outputs"]["AZURE_APPCONFIG_SETTINGS"]["value"]) == {
        "useAppConfiguration", "brokerAppSettings"}
    assert references(parsed(MAIN)["outputs"]["AZURE_APPCONFIG_KEYVAULT_REFERENCES"]["value"]) == {
        "useAppConfiguration", "keyVaultReferenceUris"}
    assert object_keys(parsed(MAIN)["variables"]["keyVaultReferenceUris"]["value"]) == object_keys(
        parsed(MAIN)["variables"]["keyVaultReferenceAppSettings"]["value"])


def test_every_contract_setting_is_deployed_or_documented_as_optional() -> None:
    deployed = bicep_app_settings()
    missing = sorted(spec.name for spec in contract.SETTINGS
                     if spec.name not in deployed and spec.name not in OPTIONAL_SETTINGS)
    assert missing == [], "set these in infra/ or add them to OPTIONAL_SETTINGS with a reason"
    assert all(reason.strip() for reason in OPTIONAL_SETTINGS.values())
    both = sorted(set(OPTIONAL_SETTINGS) & deployed)
    assert both == [], "these are deployed, so they are not optional"
    stale = sorted(set(OPTIONAL_SETTINGS) - contract.SETTING_NAMES - UPCOMING_SETTINGS)
    assert stale == [], "OPTIONAL_SETTINGS names settings that are not in the contract"


def test_every_deployed_setting_is_known() -> None:
    unknown = sorted(bicep_app_settings() - contract.SETTING_NAMES - PLATFORM_SETTINGS - UPCOMING_SETTINGS)
    assert unknown == [], "app settings that are neither contract, platform nor upcoming settings"


def test_the_settings_the_deployment_knows_are_deployed() -> None:
    assert {"POWERBI_TENANT_ID", "POWERBI_CLIENT_ID", "POWERBI_GRANT_TYPE", "POWERBI_CLIENT_SECRET",
            "POWERBI_CLIENT_SECRET_URI", "POWERBI_CLIENT_ASSERTION", "CALLER_AUTH", "CALLER_JWT_ISSUER",
            "CALLER_JWT_AUDIENCE", "CALLER_REQUIRED_ROLES", "AZURE_CLIENT_ID",
            "AZURE_APPCONFIG_ENDPOINT"} <= bicep_app_settings()


# -- azd: azure.yaml, main.parameters.json and main.bicep agree ------------------------------------------------


#: Parameters fed by variables azd always sets.
AZD_PARAMETERS = {"environmentName": "AZURE_ENV_NAME", "location": "AZURE_LOCATION",
                  "principalId": "AZURE_PRINCIPAL_ID"}


@cache
def parameters_file() -> dict[str, Any]:
    document = json.loads((INFRA / "main.parameters.json").read_text())
    parameters: dict[str, Any] = document["parameters"]
    return parameters


def test_parameters_file_and_main_bicep_agree() -> None:
    declared = parsed(MAIN)["parameters"]
    given = parameters_file()
    assert sorted(set(given) - set(declared)) == [], "parameters-file entries that main.bicep does not declare"
    required = {name for name, attrs in declared.items() if attrs["default"] is None}
    assert sorted(required - set(given)) == [], "main.bicep parameters without a default missing from the file"
    for name, variable in AZD_PARAMETERS.items():
        assert given[name]["value"] == f"${{{variable}}}"


def test_every_user_settable_parameter_has_an_azd_variable_with_the_bicep_default() -> None:
    declared = parsed(MAIN)["parameters"]
    given = parameters_file()
    for name, attrs in declared.items():
        if attrs["default"] is None or function_name(attrs["default"]) or name in AZD_PARAMETERS:
            continue
        assert name in given, f"{name}: add it to main.parameters.json as ${{VAR=default}}"
        match = re.fullmatch(r"\$\{([A-Z][A-Z0-9_]*)=(.*)\}", given[name]["value"])
        assert match, f"{name}: use ${{VAR=default}} in main.parameters.json"
        default = attrs["default"]
        expected = (json.dumps(default) if isinstance(default, list | dict)
                    else str(default).lower() if isinstance(default, bool) else str(default))
        assert match.group(2) == expected, f"{name}: the parameters file's default differs from main.bicep's"


def test_azure_yaml() -> None:
    document = simple_yaml((ROOT / "azure.yaml").read_text())
    assert document["name"]
    api = document["services"]["api"]
    assert (api["project"], api["language"], api["host"]) == (".", "python", "function")
    infra = document.get("infra", {})
    assert (ROOT / infra.get("path", "infra") / f"{infra.get('module', 'main')}.bicep") == MAIN
    assert (INFRA / "main.parameters.json").is_file()
    hook = document["hooks"]["postprovision"]
    assert hook["posix"]["run"] == "infra/hooks/postprovision.sh" and hook["posix"]["shell"] == "sh"
    assert hook["windows"]["run"] == "infra/hooks/postprovision.ps1" and hook["windows"]["shell"] == "pwsh"
    for run in (hook["posix"]["run"], hook["windows"]["run"]):
        assert (ROOT / run).is_file()
    # The api service compiles its bytecode before packaging, and the package keeps it.
    prepackage = api["hooks"]["prepackage"]
    assert prepackage["posix"]["run"] == "infra/hooks/prepackage.sh" and prepackage["posix"]["shell"] == "sh"
    assert prepackage["windows"]["run"] == "infra/hooks/prepackage.ps1" and prepackage["windows"]["shell"] == "pwsh"
    for run in (prepackage["posix"]["run"], prepackage["windows"]["run"]):
        assert "compile_bytecode.py" in (ROOT / run).read_text()
    ignored = {line.strip() for line in (ROOT / ".funcignore").read_text().splitlines()}
    assert not {"__pycache__", "*.pyc", "__pycache__/", "*.py[cod]"} & ignored
    assert not {"token_broker", "function_app.py", "host.json", "requirements.txt"} & ignored


def test_the_hooks_read_the_outputs_main_bicep_writes() -> None:
    outputs = set(parsed(MAIN)["outputs"])
    azd_variables = {"AZURE_ENV_NAME", "AZURE_SUBSCRIPTION_ID", "AZURE_TENANT_ID"}
    pipeline_variables = {"AZURE_CLIENT_ID"}  # the deploy job's federated identity (GitHub OIDC re-sign-in)
    knobs = {"POWERBI_CLIENT_SECRET_DAYS", "POWERBI_CLIENT_SECRET_RENEW_DAYS", "POWERBI_ROTATE_CLIENT_SECRET",
             "CACHE_ROTATE_ENCRYPTION_KEY"}
    for hook in HOOKS:
        text = hook.read_text()
        used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]+)[:?}-]", text)) | set(re.findall(r"'([A-Z][A-Z0-9_]+)'", text))
        used = {u for u in used if u.startswith(("AZURE_", "POWERBI_", "CALLER_", "CACHE_"))}
        assert used, hook.name
        assert sorted(used - outputs - azd_variables - knobs - pipeline_variables) == [], (
            f"{hook.name} reads variables nobody sets")


def test_the_bash_hook_never_puts_the_secret_on_a_command_line() -> None:
    text = HOOKS[0].read_text()
    assert "az ad app credential reset" in text and "--append" in text and "--query password" in text
    assert "--file /dev/stdin" in text and "--expires" in text
    assert "--value" not in text, "a secret passed with --value is visible in ps"
    assert re.search(r"printf '%s' \"\$client_secret\" \| az keyvault secret set", text)
    assert not re.search(r"echo[^\n]*\$client_secret", text), "the secret must never be printed"
    assert "set -x" not in text
    # The Power BI admin steps, with the exact REST call.
    assert "Service principals can call Fabric public APIs" in text
    assert "/v1.0/myorg/groups/{groupId}/users" in text
    assert '{"identifier": "<service principal object id>", "principalType": "App", "groupUserAccessRight": ' \
           '"Viewer"}' in text
    assert "az rest --method post" in text


# -- the deployed configuration passes the broker's own validation, for every combination -------------------

TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"
POWERBI_APP_ID = "6731de76-14a6-49ae-97bc-6eba6914391e"
CALLER_API_APP_ID = "d3590ed6-52b3-4102-aeff-aad2292ab01c"
IDENTITY_CLIENT_ID = "1950a258-227b-4e31-a9cf-717495945fc2"
RESOLVED_SECRET = "Q8x8Q~resolved-by-the-platform.0123456789"
REDIS_NAME = "amr-abcdefghijklm"
REDIS_HOST_NAME = "amr-abcdefghijklm.eastus.redis.azure.net"
_INTERPOLATION = re.compile(r"\$\{([^}]+)\}")


class Evaluator:
    """Evaluates the subset of Bicep that the settings variables use, for given parameters and runtime values."""

    def __init__(self, tree: dict[str, Any], params: dict[str, Any], runtime: dict[str, Any]) -> None:
        self.tree = tree
        defaults = {n: a["default"] for n, a in tree.get("parameters", {}).items() if a["default"] is not None}
        self.params = {**defaults, **params}
        self.runtime = runtime

    def variable(self, name: str) -> Any:
        return self.eval(self.tree["variables"][name]["value"])

    def output(self, name: str) -> Any:
        return self.eval(self.tree["outputs"][name]["value"])

    def name(self, name: str) -> Any:
        if name in self.params:
            return self.params[name]
        if name in self.tree.get("variables", {}):
            return self.variable(name)
        return self.runtime[name]

    def path(self, value: Any) -> str:
        """``a.b.c`` of a property access such as ``keyVault.outputs.uri`` or ``tenant().tenantId``."""
        if isinstance(value, str):
            return str(value)
        if function_name(value):
            return f"{value['function']['type']}()"
        operands = value["operator"]["operands"]
        return f"{self.path(operands['operand_1'])}.{self.path(operands['operand_2'])}"

    def lookup(self, text: str) -> Any:
        return self.name(text) if re.fullmatch(r"\w+", text) else self.runtime[text]

    def eval(self, value: Any) -> Any:
        if isinstance(value, BicepElement):
            return self.name(str(value))
        if isinstance(value, str):
            return _INTERPOLATION.sub(lambda m: str(self.lookup(m.group(1))), value)
        if isinstance(value, list):
            return [self.eval(item) for item in value]
        if isinstance(value, dict) and "loop_type" in value:
            return self.for_expression(value)
        if function_name(value):
            return self.function(value["function"])
        if is_expression(value):
            return self.operator(value["operator"])
        if isinstance(value, dict):
            return {key.strip("'"): self.eval(item) for key, item in value.items()}
        return value

    def function(self, node: dict[str, Any]) -> Any:
        args = [self.eval(a) for a in node.get("parameters", {}).values()]
        kind = node["type"]
        if kind == "union":
            merged: dict[str, Any] = {}
            for arg in args:
                merged.update(arg)
            return merged
        if kind == "string":
            return str(args[0]).lower() if isinstance(args[0], bool) else str(args[0])
        if kind == "empty":
            return not args[0]
        if kind == "min":
            return min(args)
        if kind == "split":
            return str(args[0]).split(str(args[1]))
        if kind == "first":
            return args[0][0] if args[0] else None
        if kind == "guid":
            return "guid(" + ",".join(map(str, args)) + ")"
        raise NotImplementedError(kind)

    def for_expression(self, loop: dict[str, Any]) -> list[Any]:
        """``[for item in list: body]``: the body evaluated with the loop variable bound to each item."""
        detail = loop["loop_type"]["detail"]
        results = []
        for item in self.name(str(detail["array_name"])):
            saved = dict(self.params)
            self.params[str(detail["item_name"])] = item
            try:
                results.append(self.eval(loop["config"]))
            finally:
                self.params = saved
        return results

    def operator(self, node: dict[str, Any]) -> Any:
        kind, operands = node["type"], node["operands"]
        if kind == "property_accessor":
            return self.runtime[self.path({"operator": node})]
        if kind == "conditional":
            branch = "true_value" if self.eval(operands["condition"]) else "false_value"
            return self.eval(operands[branch])
        values = [self.eval(v) for v in operands.values()]
        if kind == "equals":
            return values[0] == values[1]
        if kind == "not_equals":
            return values[0] != values[1]
        if kind == "and":
            return all(values)
        if kind == "or":
            return any(values)
        if kind == "not":
            return not values[0]
        raise NotImplementedError(kind)


class Deployment:
    """What Azure hands the broker for one set of parameters, evaluated from the Bicep.

    ``environment``: the process environment, as the platform builds it: the site's app settings (Key Vault
    references resolved) plus the platform's own variables (``WEBSITE_AUTH_ENABLED=True`` only when App Service
    Authentication is on). ``store``: the key-values the deployment writes to App Configuration, without the
    ``TokenBroker:`` prefix (Key Vault references resolved). ``settings``: what the broker runs with: the store
    minus bootstrap keys (which the broker ignores there), overridden by the environment.
    """

    def __init__(self, credential_mode: str, grant_type: str, caller_auth: str, use_app_configuration: bool,
                 *, enable_redis: bool = False) -> None:
        entra = Evaluator(parsed(module_file("entra")), {"grantType": grant_type, "credentialMode": credential_mode,
                                                         "resourceToken": "abcdefghijklm", "environmentName": "test"},
                          {"powerbiApp.appId": POWERBI_APP_ID, "callerApiApp.appId": CALLER_API_APP_ID,
                           "tenant().tenantId": TENANT})
        params = {"credentialMode": credential_mode, "powerbiGrantType": grant_type, "callerAuth": caller_auth,
                  "useAppConfiguration": use_app_configuration, "powerbiUsername": "pbi-master@contoso.com",
                  "powerbiWorkspaceId": "b0e6e5a0-6a8a-4c4e-9f5e-7d0c6a1f2b3c",
                  "embedAllowedWorkspaces": "b0e6e5a0-6a8a-4c4e-9f5e-7d0c6a1f2b3c", "enableRedis": enable_redis}
        self.main = main = Evaluator(parsed(MAIN), params, {
            "tenant().tenantId": TENANT,
            "environment().authentication.loginEndpoint": "https://login.microsoftonline.com/",
            "keyVault.outputs.uri": "https://kv-test.vault.azure.net/",
            "keyVault.outputs.name": "kv-test",
            "entra.outputs.powerbiClientId": POWERBI_APP_ID,
            "entra.outputs.callerJwtAudience": entra.output("callerJwtAudience"),
            "entra.outputs.callerApiClientId": entra.output("callerApiClientId"),
            "appConfiguration.outputs.endpoint": "https://appcs-test.azconfig.io",
            "redis.outputs.name": REDIS_NAME,
            "redis.outputs.hostName": REDIS_HOST_NAME,
            "redis.outputs.port": 10000,
        })
        api_params = {name: main.eval(value)
                      for name, value in unwrap(parsed(MAIN)["modules"]["api"]["config"])["params"].items()
                      if name in ("httpPerInstanceConcurrency", "easyAuthEnabled", "easyAuthClientId",
                                  "easyAuthIssuer", "easyAuthAllowedAudiences")}
        api = Evaluator(parsed(module_file("api")), {"identityClientId": IDENTITY_CLIENT_ID, **api_params}, {
            "storage.properties.primaryEndpoints.blob": "https://sttest.blob.core.windows.net/",
            "applicationInsights.properties.ConnectionString": "InstrumentationKey=0",
        })
        self.api_params = api_params
        self.easy_auth = bool(api_params["easyAuthEnabled"])
        site_settings = {**main.variable("functionAppSettings"), **api.variable("platformAppSettings")}
        environment = {k: RESOLVED_SECRET if str(v).startswith("@Microsoft.KeyVault(") else str(v)
                       for k, v in site_settings.items()}
        # Set by the platform on App Service; WEBSITE_AUTH_ENABLED only when Authentication is on.
        environment.update(WEBSITE_SITE_NAME="func-api-test", WEBSITE_INSTANCE_ID="0123456789abcdef")
        if self.easy_auth:
            environment["WEBSITE_AUTH_ENABLED"] = "True"
        self.environment = environment
        # What the postprovision hook writes (infra/hooks/appconfig_keyvalues.py reads these outputs).
        store = {k: str(v) for k, v in main.output("AZURE_APPCONFIG_SETTINGS").items()}
        store.update(dict.fromkeys(main.output("AZURE_APPCONFIG_KEYVAULT_REFERENCES"), RESOLVED_SECRET))
        self.store = store
        self.settings = {**{k: v for k, v in store.items() if not is_bootstrap(k)}, **environment}


def load_deployed(deployment: Deployment) -> contract.Settings:
    """The broker's own settings pipeline on what Azure hands it: bootstrap from the environment only."""
    return contract.load_settings(deployment.environment, store=deployment.store or None)


def deploys_app_service_authentication() -> bool:
    """True when the Bicep configures App Service Authentication (Easy Auth) on the function app."""
    return any("authsettingsV2" in path.read_text() for path in BICEP_FILES)


COMBINATIONS = [(mode, grant, caller, app_config)
                for mode in ("keyVaultReference", "runtimeSecretUri", "federated")
                for grant in ("client_credentials", "on_behalf_of", "password")
                for caller in ("jwt", "easyauth", "function_key", "anonymous")
                for app_config in (False, True)]


@pytest.mark.parametrize(("mode", "grant", "caller", "app_config"), COMBINATIONS,
                         ids=["-".join(str(p) for p in c) for c in COMBINATIONS])
def test_the_deployed_settings_are_valid(mode: str, grant: str, caller: str, app_config: bool) -> None:
    if mode != "keyVaultReference" and "POWERBI_CLIENT_SECRET_URI" not in contract.SETTING_NAMES:
        pytest.skip("the broker does not read credentials from Key Vault or federation yet")
    deployment = Deployment(mode, grant, caller, app_config)
    environ = deployment.settings
    assert not any(v.startswith("@Microsoft.KeyVault(") for v in environ.values())
    if grant == "on_behalf_of" and caller in ("easyauth", "function_key"):
        # on_behalf_of needs the caller's Entra ID token: the broker refuses this combination (docs/DEPLOY.md).
        with pytest.raises(ConfigurationError):
            load_deployed(deployment)
        return
    if caller == "easyauth" and not deploys_app_service_authentication():
        # The platform sets WEBSITE_AUTH_ENABLED=True only when App Service Authentication is on; the template
        # does not configure it (no authsettingsV2), so the broker must refuse to trust X-MS-CLIENT-PRINCIPAL.
        with pytest.raises(ConfigurationError) as refused:
            load_deployed(deployment)
        assert any(p.setting == "CALLER_AUTH" and "App Service Authentication" in p.message
                   for p in refused.value.problems)
        return
    loaded = load_deployed(deployment)
    assert loaded.client_id == POWERBI_APP_ID and loaded.grant_type == grant and loaded.caller_auth == caller
    errors = [p for p in loaded.warnings if p.severity == "error"]
    assert errors == []
    if caller == "jwt":
        audiences = environ["CALLER_JWT_AUDIENCE"].split(",")
        assert audiences[0] == (POWERBI_APP_ID if grant == "on_behalf_of" else CALLER_API_APP_ID)
        assert environ["CALLER_JWT_ISSUER"] == f"https://login.microsoftonline.com/{TENANT}/v2.0"
    if mode == "federated":
        assert environ["POWERBI_CLIENT_ASSERTION"] == "managed_identity"
        assert environ["AZURE_CLIENT_ID"] == IDENTITY_CLIENT_ID
    if mode == "runtimeSecretUri":
        assert environ["POWERBI_CLIENT_SECRET_URI"] == "https://kv-test.vault.azure.net/secrets/powerbi-client-secret"
        assert "POWERBI_CLIENT_SECRET" not in environ
    if app_config:
        assert environ["AZURE_APPCONFIG_ENDPOINT"] == "https://appcs-test.azconfig.io"


# -- bootstrap settings and the auth level: what the worker indexes with vs what the broker runs -------------

CALLER_COMBINATIONS = [(caller, app_config) for caller in ("jwt", "easyauth", "function_key", "anonymous")
                       for app_config in (False, True)]


def indexed_auth_level(environment: dict[str, str]) -> str:
    """The auth level the worker gives the token routes when it indexes the app in this process environment
    (the product's own decision, on a runtime of its own rather than this test process's)."""
    return "FUNCTION" if Runtime(environment).index_token_routes() else "ANONYMOUS"


def expected_auth_level(caller: str) -> str:
    return "FUNCTION" if caller == "function_key" else "ANONYMOUS"


@pytest.mark.parametrize(("caller", "app_config"), CALLER_COMBINATIONS,
                         ids=[f"{c}-appconfig={a}" for c, a in CALLER_COMBINATIONS])
def test_the_auth_level_and_caller_mode_are_the_operators(caller: str, app_config: bool) -> None:
    """The routes are indexed from the environment alone; the broker runs with environment + store. Both must
    give the callerAuth the operator chose (a function_key broker behind ANONYMOUS routes answers without a key)."""
    deployment = Deployment("keyVaultReference", "client_credentials", caller, app_config)
    assert deployment.environment["CALLER_AUTH"] == caller
    assert indexed_auth_level(deployment.environment) == expected_auth_level(caller)
    # The broker's own pipeline: bootstrap settings from the environment only, the rest environment over store.
    loaded = contract.load_settings(deployment.environment, store=deployment.store if app_config else None)
    assert loaded.caller_auth == caller
    # Easy Auth is on exactly when the broker trusts X-MS-CLIENT-PRINCIPAL.
    assert deployment.easy_auth is (caller == "easyauth")
    assert ("WEBSITE_AUTH_ENABLED" in deployment.environment) is (caller == "easyauth")


def test_the_auth_level_check_catches_a_store_only_caller_auth() -> None:
    """The old deployment: CALLER_AUTH=function_key in the store only. Indexed ANONYMOUS, and the broker ignores
    the store's copy, so it runs with no caller mode at all (every token route 503), never function_key."""
    deployment = Deployment("keyVaultReference", "client_credentials", "function_key", True)
    environment = {k: v for k, v in deployment.environment.items() if k != "CALLER_AUTH"}
    assert indexed_auth_level(environment) != expected_auth_level("function_key")
    loaded = contract.load_settings(environment, store={**deployment.store, "CALLER_AUTH": "function_key"})
    assert loaded.caller_auth is None
    assert any(w.setting == "CALLER_AUTH" and "ignored" in w.message for w in loaded.warnings)


@pytest.mark.parametrize(("mode", "grant", "caller", "app_config"), COMBINATIONS,
                         ids=["-".join(str(p) for p in c) for c in COMBINATIONS])
def test_no_bootstrap_setting_is_written_to_the_store(mode: str, grant: str, caller: str, app_config: bool) -> None:
    deployment = Deployment(mode, grant, caller, app_config)
    assert sorted(k for k in deployment.store if is_bootstrap(k)) == []
    assert {"CALLER_AUTH", "AZURE_CLIENT_ID"} <= set(deployment.environment)
    if app_config:
        assert deployment.store, "App Configuration is on but the store gets no key-values"
        assert {"AZURE_APPCONFIG_ENDPOINT", "AZURE_APPCONFIG_REFRESH_SECONDS"} <= set(deployment.environment)
    else:
        assert not any(k.startswith("AZURE_APPCONFIG_") for k in deployment.environment)


def test_bootstrap_settings_are_app_settings_by_construction() -> None:
    variables = parsed(MAIN)["variables"]
    store_keys = object_keys(variables["brokerAppSettings"]["value"]) | object_keys(
        variables["keyVaultReferenceUris"]["value"])
    assert sorted(k for k in store_keys if is_bootstrap(k)) == []
    assert {"CALLER_AUTH", "AZURE_APPCONFIG_ENDPOINT", "AZURE_APPCONFIG_REFRESH_SECONDS"} <= object_keys(
        variables["bootstrapAppSettings"]["value"])
    assert "bootstrapAppSettings" in references(variables["functionAppSettings"]["value"])


def test_the_app_configuration_refresh_fits_the_free_tier() -> None:
    """Free: 1,000 requests a day per store. Each running instance checks the sentinel once per interval."""
    for sku in ("free", "standard"):
        main = Evaluator(parsed(MAIN), {"appConfigurationSku": sku}, {})
        seconds = main.variable("appConfigurationRefreshSeconds")
        if sku == "free":
            assert 86400 / seconds <= 1000 / 40, "one busy instance must use at most 1/40 of the daily quota"
        else:
            assert seconds <= 300
    assert decorator(parsed(MAIN)["parameters"]["appConfigurationSku"], "allowed") == ["free", "standard"]


def test_easy_auth_is_configured_for_easyauth() -> None:
    """callerAuth=easyauth: authsettingsV2 with the Entra ID provider of the API app registration, every token
    route behind it (401 without a valid token), health and the OpenAPI description open."""
    found = [(name, attrs) for name, attrs in parsed(module_file("api"))["resources"].items()
             if attrs["type"] == "Microsoft.Web/sites/config" and unwrap(attrs["config"])["name"] == "authsettingsV2"]
    assert len(found) == 1
    _, attrs = found[0]
    assert attrs["config"]["condition"] == "easyAuthEnabled"
    body = unwrap(attrs["config"])["properties"]
    assert get(body, "platform", "enabled") is True
    assert get(body, "globalValidation", "requireAuthentication") is True
    assert get(body, "globalValidation", "unauthenticatedClientAction") == "Return401"
    excluded = get(body, "globalValidation", "excludedPaths")
    assert set(excluded) == {"/api/health", "/api/openapi.json"}
    aad = get(body, "identityProviders", "azureActiveDirectory")
    assert get(aad, "enabled") is True
    assert get(aad, "registration", "clientId") == "easyAuthClientId"
    assert get(aad, "registration", "openIdIssuer") == "easyAuthIssuer"
    assert get(aad, "validation", "allowedAudiences") == "easyAuthAllowedAudiences"
    # Wired to the API app registration that entra.bicep creates, for every grant type.
    for grant in ("client_credentials", "on_behalf_of", "password"):
        deployment = Deployment("keyVaultReference", grant, "easyauth", False)
        expected_client = POWERBI_APP_ID if grant == "on_behalf_of" else CALLER_API_APP_ID
        assert deployment.api_params["easyAuthClientId"] == expected_client
        assert deployment.api_params["easyAuthAllowedAudiences"][0] == expected_client
        assert deployment.api_params["easyAuthIssuer"] == f"https://login.microsoftonline.com/{TENANT}/v2.0"


# -- the workbook and the alert rules (infra/app/observability.bicep, docs/OPERATIONS.md) ------------------------

_KQL_METRIC = re.compile(r'name == "(token_broker\.[a-z_.]+)"')
_KQL_DIMENSION = re.compile(r'customDimensions\["([a-z_.]+)"\]')


def _broker_instruments() -> set[str]:
    """The instrument names token_broker/support/telemetry.py creates."""
    source = (ROOT / "token_broker" / "support" / "telemetry.py").read_text(encoding="utf-8")
    return set(re.findall(r'create_(?:counter|histogram)\(\s*"([a-z_.]+)"', source))


def _broker_attributes() -> set[str]:
    from token_broker.support.telemetry import ATTRIBUTES

    return set(ATTRIBUTES)


def _observability() -> dict[str, Any]:
    return parsed(module_file("observability"))


def _kql_texts() -> list[str]:
    variables = _observability()["variables"]
    texts = [v["value"] for v in variables.values() if isinstance(v["value"], str) and "customMetrics" in v["value"]]
    texts += [v["value"] for v in variables.values() if isinstance(v["value"], str) and "dependencies" in v["value"]]
    texts += [q["query"] for q in variables["workbookQueries"]["value"]]
    return texts


def test_alert_rules_cover_the_issue_and_notify_the_action_group_parameter() -> None:
    observability = _observability()
    alerts = observability["variables"]["alerts"]["value"]
    assert {a["name"] for a in alerts} == {"server-errors", "azure-ad-errors", "powerbi-throttled", "keyvault-failures"}
    variables = observability["variables"]
    for alert in alerts:
        query = variables[alert["query"]]["value"]
        assert f"{alert['measure']} =" in query, f"{alert['name']}: the query never computes {alert['measure']}"
        assert "docs/OPERATIONS.md#alert-" in alert["description"]
    rules = observability["resources"]["alertRules"]
    body = unwrap(rules["config"])
    assert rules["type"] == "Microsoft.Insights/scheduledQueryRules" and body["kind"] == "LogAlert"
    assert get(body, "properties", "actions", "actionGroups") == "actionGroupIds"
    assert "applicationInsights" in references(get(body, "properties", "scopes"))
    assert get(body, "properties", "severity") == "alertSeverity" and get(body, "properties", "enabled") is True
    group_ids = references(variables["actionGroupIds"]["value"])
    assert {"alertActionGroupId", "alertEmailAddress", "actionGroup"} <= group_ids
    main = parsed(MAIN)
    params = unwrap(main["modules"]["observability"]["config"])["params"]
    assert params["alertActionGroupId"] == "alertActionGroupId" and params["alertEmailAddress"] == "alertEmailAddress"
    assert parameters_file()["alertActionGroupId"]["value"] == "${ALERT_ACTION_GROUP_ID=}"


def test_the_workbook_charts_what_the_issue_asks() -> None:
    observability = _observability()
    titles = [q["title"] for q in observability["variables"]["workbookQueries"]["value"]]
    for wanted in ("Cache hit ratio", "Upstream latency percentiles", "Problem codes over time", "Embed tokens"):
        assert any(title.startswith(wanted) for title in titles), wanted
    workbook = observability["resources"]["workbook"]
    body = unwrap(workbook["config"])
    assert workbook["type"] == "Microsoft.Insights/workbooks" and body["kind"] == "shared"
    assert function_name(body["name"]) == "guid"  # a workbook's resource name must be a GUID
    assert function_name(get(body, "properties", "serializedData")) == "string"
    assert "applicationInsights" in references(get(body, "properties", "sourceId"))


def test_every_metric_and_dimension_the_queries_read_is_one_the_broker_exports() -> None:
    """Cross-feature: a renamed instrument or attribute would silently empty a chart or mute an alert."""
    instruments, attributes = _broker_instruments(), _broker_attributes()
    assert {"token_broker.requests", "token_broker.upstream.calls", "token_broker.cache.lookups"} <= instruments
    texts = _kql_texts()
    assert len(texts) >= 9
    for text in texts:
        assert set(_KQL_METRIC.findall(text)) <= instruments, text
        assert set(_KQL_DIMENSION.findall(text)) <= attributes, text
    problem_codes = set(re.findall(r'code = "([a-z_]+)"', (ROOT / "token_broker/support/errors.py").read_text()))
    assert any(code.startswith("aad_") for code in problem_codes)  # the aad_* alert has codes to match


# -- the shared cache: Azure Managed Redis (infra/app/redis.bicep, docs/DEPLOY.md "Shared cache") ----------------

REDIS_SETTINGS = ("CACHE_REDIS_HOST", "CACHE_REDIS_AUTH", "CACHE_ENCRYPTION_KEY_URI")


def _redis() -> dict[str, Any]:
    return parsed(module_file("redis"))


def _redis_body(symbol: str) -> Body:
    return unwrap(_redis()["resources"][symbol]["config"])


def _name_pattern(type_name: str) -> re.Pattern[str]:
    """The name pattern of a resource type in the vendored type definitions."""
    from tests.bicep_schema import resource_type

    found = resource_type(type_name, "2025-07-01")
    assert found is not None
    types, resource = found
    body = types.node(resource["body"])
    return re.compile(types.node(body["properties"]["name"]["type"])["pattern"])


def test_redis_is_off_by_default_and_only_in_its_module() -> None:
    params = parsed(MAIN)["parameters"]
    assert params["enableRedis"]["default"] is False
    assert parameters_file()["enableRedis"]["value"] == "${ENABLE_REDIS=false}"
    module = parsed(MAIN)["modules"]["redis"]
    assert module["config"]["condition"] == "enableRedis" and module["detail"]["path"] == "app/redis.bicep"
    cache_resources = [(path.name, name) for path, name, _ in resources() if "Microsoft.Cache/" in
                       parsed(path)["resources"][name]["type"]]
    assert {path for path, _ in cache_resources} == {"redis.bicep"} and len(cache_resources) == 3
    # Off: the deployment sets no cache setting and writes none to the store, in every mode.
    for app_config in (False, True):
        deployment = Deployment("federated", "client_credentials", "jwt", app_config)
        assert not set(REDIS_SETTINGS) & (set(deployment.environment) | set(deployment.store))
        assert (deployment.main.output("AZURE_REDIS_NAME"), deployment.main.output("AZURE_REDIS_ENDPOINT")) == ("", "")


def test_redis_accepts_entra_id_over_tls_only() -> None:
    cluster = _redis_body("cluster")
    assert get(cluster, "properties", "minimumTlsVersion") == "1.2"
    database = _redis_body("database")
    assert database["name"] == "default" and database["parent"] == "cluster"
    props = get(database, "properties")
    assert get(props, "accessKeysAuthentication") == "Disabled"  # no password exists
    assert get(props, "clientProtocol") == "Encrypted" and get(props, "port") == 10000
    # One endpoint for the broker's non-cluster client; every entry has a TTL, so the LRU of those goes first.
    assert get(props, "clusteringPolicy") == "EnterpriseCluster"
    assert get(props, "evictionPolicy") == "VolatileLRU"
    assert not {"persistence", "modules", "geoReplication"} & set(props)
    # No key is ever read out of the cache or the database, into an output or anywhere else.
    for path in BICEP_FILES:
        text = path.read_text()
        assert "listKeys" not in text and "regenerateKey" not in text, path.name
    assert set(_redis()["outputs"]) == {"name", "id", "hostName", "port"}


def test_redis_public_access_is_a_parameter_and_never_without_entra() -> None:
    cluster = _redis_body("cluster")
    assert get(cluster, "properties", "publicNetworkAccess") == "publicNetworkAccess"
    for path, name in ((module_file("redis"), "publicNetworkAccess"), (MAIN, "redisPublicNetworkAccess")):
        param = parsed(path)["parameters"][name]
        assert decorator(param, "allowed") == ["Enabled", "Disabled"] and param["default"] == "Enabled"
    assert unwrap(parsed(MAIN)["modules"]["redis"]["config"])["params"]["publicNetworkAccess"] == \
        "redisPublicNetworkAccess"
    assert parameters_file()["redisPublicNetworkAccess"]["value"] == "${REDIS_PUBLIC_NETWORK_ACCESS=Enabled}"


def test_the_access_policy_assignment_is_the_function_apps_identity() -> None:
    assignment = _redis_body("appAccessPolicyAssignment")
    assert _redis()["resources"]["appAccessPolicyAssignment"]["type"] == \
        "Microsoft.Cache/redisEnterprise/databases/accessPolicyAssignments"
    assert assignment["parent"] == "database"
    assert get(assignment, "properties", "accessPolicyName") == "default"
    assert get(assignment, "properties", "user", "objectId") == "identityPrincipalId"
    # The principal id of the same user-assigned identity the function app runs as.
    redis_params = unwrap(parsed(MAIN)["modules"]["redis"]["config"])["params"]
    api_params = unwrap(parsed(MAIN)["modules"]["api"]["config"])["params"]
    evaluated = Evaluator(parsed(MAIN), {}, {"identity.outputs.principalId": "principal-of-id-api",
                                             "identity.outputs.id": "id-api"})
    assert evaluated.eval(redis_params["identityPrincipalId"]) == "principal-of-id-api"
    assert evaluated.eval(api_params["identityId"]) == "id-api"
    identity = Evaluator(parsed(module_file("identity")), {}, {"identity.properties.principalId": "object-id",
                                                               "identity.id": "id-api"})
    assert (identity.output("principalId"), identity.output("id")) == ("object-id", "id-api")
    # Its name allows letters and digits only: a fixed prefix and uniqueString() (13 of [a-z0-9]).
    name = assignment["name"]
    assert re.fullmatch(r"api\$\{uniqueString\(cluster\.id, identityPrincipalId\)\}", name)
    pattern = _name_pattern("Microsoft.Cache/redisEnterprise/databases/accessPolicyAssignments")
    assert pattern.fullmatch("api" + "0123456789abc") and not pattern.fullmatch("api-0123")
    cluster_name = json.loads((INFRA / "abbreviations.json").read_text())["cacheRedisEnterprise"] + "abcdefghijklm"
    assert _name_pattern("Microsoft.Cache/redisEnterprise").fullmatch(cluster_name)
    assert redis_params["name"] == "${abbrs.cacheRedisEnterprise}${resourceToken}"


def test_redis_skus_are_the_same_in_main_and_the_module() -> None:
    """tests/test_bicep_schema.py checks every @allowed SKU of the module against the published type."""
    module_skus = decorator(_redis()["parameters"]["skuName"], "allowed")
    assert decorator(parsed(MAIN)["parameters"]["redisSku"], "allowed") == module_skus
    assert parsed(MAIN)["parameters"]["redisSku"]["default"] == _redis()["parameters"]["skuName"]["default"]
    assert _redis()["parameters"]["skuName"]["default"] == "Balanced_B0"
    assert all(sku.split("_")[0] in ("Balanced", "MemoryOptimized", "ComputeOptimized") for sku in module_skus)
    assert unwrap(parsed(MAIN)["modules"]["redis"]["config"])["params"]["skuName"] == "redisSku"
    for parameter, variable in (("redisSku", "REDIS_SKU"), ("redisHighAvailability", "REDIS_HIGH_AVAILABILITY")):
        assert parameters_file()[parameter]["value"].startswith(f"${{{variable}=")


@pytest.mark.parametrize(("mode", "caller", "app_config"),
                         [(mode, caller, app_config) for mode in ("keyVaultReference", "federated")
                          for caller in ("jwt", "function_key") for app_config in (False, True)])
def test_redis_settings_are_wired_when_enabled(mode: str, caller: str, app_config: bool) -> None:
    deployment = Deployment(mode, "client_credentials", caller, app_config, enable_redis=True)
    # Always app settings, also with App Configuration: they reach the broker whether it reads them at bootstrap
    # (environment only) or with its other settings, and turning the cache off removes them.
    assert not set(REDIS_SETTINGS) & set(deployment.store)
    assert {name: deployment.environment[name] for name in REDIS_SETTINGS} == {
        "CACHE_REDIS_HOST": f"{REDIS_HOST_NAME}:10000",
        "CACHE_REDIS_AUTH": "entra",
        # Versionless: the broker encrypts with the newest version and decrypts with the previous one too.
        "CACHE_ENCRYPTION_KEY_URI": "https://kv-test.vault.azure.net/secrets/cache-encryption-key",
    }
    assert deployment.settings["CACHE_REDIS_HOST"] == f"{REDIS_HOST_NAME}:10000"
    # entra: the broker's token for Redis is the user-assigned identity's, which AZURE_CLIENT_ID selects.
    assert deployment.environment["AZURE_CLIENT_ID"] == IDENTITY_CLIENT_ID
    assert deployment.main.output("AZURE_REDIS_NAME") == REDIS_NAME
    assert deployment.main.output("AZURE_REDIS_ENDPOINT") == f"{REDIS_HOST_NAME}:10000"
    # The broker's own settings pipeline accepts what is deployed.
    loaded = load_deployed(deployment)
    assert [p for p in loaded.warnings if p.severity == "error"] == []


def test_the_key_the_settings_name_is_the_one_the_hooks_create_and_the_roles_allow() -> None:
    variables = parsed(MAIN)["variables"]
    assert variables["cacheEncryptionKeySecretName"]["value"] == "cache-encryption-key"
    assert variables["cacheEncryptionKeyUri"]["value"] == (
        "${keyVault.outputs.uri}secrets/${cacheEncryptionKeySecretName}")
    for hook in HOOKS:
        text = hook.read_text()
        assert "'cache-encryption-key'" in text or '"cache-encryption-key"' in text, hook.name
        assert "AZURE_REDIS_NAME" in text and "CACHE_ROTATE_ENCRYPTION_KEY" in text, hook.name
    # The app reads it (and lists its versions) with Key Vault Secrets User, whatever the other options.
    rbac = parsed(module_file("rbac"))["resources"]
    reader = rbac["identityKeyVaultSecretsUser"]["config"]
    assert "condition" not in reader
    assert get(reader, "properties", "roleDefinitionId")["function"]["parameters"]["resource_name_1"] == \
        "keyVaultSecretsUserRoleId"
    # The deployer may write it (the hook runs as the deployer): Key Vault Secrets Officer whenever Redis is on,
    # also in federated mode, where no client secret needs it.
    writes = unwrap(parsed(MAIN)["modules"]["rbac"]["config"])["params"]["deployerWritesToVault"]
    for mode in ("keyVaultReference", "runtimeSecretUri", "federated"):
        for enable_redis in (False, True):
            evaluated = Evaluator(parsed(MAIN), {"credentialMode": mode, "enableRedis": enable_redis}, {})
            assert evaluated.eval(writes) is ((mode != "federated") or enable_redis), (mode, enable_redis)
    officer = unwrap(rbac["deployerKeyVaultSecretsOfficer"]["config"])
    assert get(officer, "properties", "roleDefinitionId")["function"]["parameters"]["resource_name_1"] == \
        "keyVaultSecretsOfficerRoleId"
    assert references(rbac["deployerKeyVaultSecretsOfficer"]["config"]["condition"]) >= {"deployerWritesToVault"}
