"""Flex Consumption denylist: the site properties and app settings that the platform rejects or ignores on Flex
Consumption, from Microsoft's "Flex Consumption plan deprecations" table (Azure Functions app settings
reference, learn.microsoft.com/azure/azure-functions/functions-app-settings#flex-consumption-plan-deprecations).

The generic type definitions (tests/test_bicep_schema.py) allow all of them, because Microsoft.Web/sites serves
every plan; Resource Manager refuses some on Flex (``siteConfig.ftpsState``: error 51021 "... site configuration
properties ... for Flex Consumption sites is invalid"; ``FUNCTIONS_WORKER_RUNTIME``: "The following app setting
... for Flex Consumption sites is invalid") and silently ignores others. Neither may come back.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

from tests.bicep_schema import check_file
from tests.test_infra import BICEP_FILES, bicep_app_settings, module_file, object_keys, parsed, resources, unwrap

#: Site properties of the table (it writes them as ``properties.<name>``; most live in ``siteConfig``), with why.
FLEX_DENIED_SITE_PROPERTIES = {
    "alwaysOn": "not valid",
    "containerSize": "renamed instanceMemoryMB (functionAppConfig.scaleAndConcurrency)",
    "dnsConfiguration": "DNS comes from the integrated virtual network",
    "ftpsState": "FTPS not supported (ARM error 51021)",
    "isReserved": "not valid",
    "isXenon": "not valid",
    "javaVersion": "functionAppConfig.runtime.version",
    "linuxFxVersion": "functionAppConfig.runtime",
    "netFrameworkVersion": "functionAppConfig.runtime.version",
    "powerShellVersion": "functionAppConfig.runtime.version",
    "functionAppScaleLimit": "renamed maximumInstanceCount",
    "preWarmedInstanceCount": "renamed alwaysReadyInstances",
    "use32BitWorkerProcess": "32-bit not supported",
    "vnetBackupRestoreEnabled": "not used for networking on Flex",
    "vnetContentShareEnabled": "not used for networking on Flex",
    "vnetImagePullEnabled": "not used for networking on Flex",
    "vnetRouteAllEnabled": "not used for networking on Flex",
    "windowsFxVersion": "not valid",
}

#: App settings of the table, with what replaces them.
FLEX_DENIED_APP_SETTINGS = {
    "ENABLE_ORYX_BUILD": "the remoteBuild deployment parameter",
    "FUNCTIONS_EXTENSION_VERSION": "set by the platform",
    "FUNCTIONS_WORKER_RUNTIME": "functionAppConfig.runtime.name",
    "FUNCTIONS_WORKER_RUNTIME_VERSION": "functionAppConfig.runtime.version",
    "FUNCTIONS_MAX_HTTP_CONCURRENCY": "functionAppConfig.scaleAndConcurrency.triggers.http",
    "FUNCTIONS_WORKER_PROCESS_COUNT": "not valid",
    "FUNCTIONS_WORKER_DYNAMIC_CONCURRENCY_ENABLED": "not valid",
    "SCM_DO_BUILD_DURING_DEPLOYMENT": "the remoteBuild deployment parameter",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING": "functionAppConfig.deployment",
    "WEBSITE_CONTENTOVERVNET": "not used for networking on Flex",
    "WEBSITE_CONTENTSHARE": "functionAppConfig.deployment",
    "WEBSITE_DNS_SERVER": "DNS comes from the integrated virtual network",
    "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT": "maximumInstanceCount",
    "WEBSITE_NODE_DEFAULT_VERSION": "functionAppConfig.runtime.version",
    "WEBSITE_RUN_FROM_PACKAGE": "not used for deployments on Flex",
    "WEBSITE_SKIP_CONTENTSHARE_VALIDATION": "no content share on Flex",
    "WEBSITE_VNET_ROUTE_ALL": "not used for networking on Flex",
}


def keys_under(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(dotted path, key) of every object key in a literal tree."""
    if isinstance(value, dict):
        for key, item in value.items():
            name = key.strip("'")
            yield f"{path}.{name}" if path else name, name
            yield from keys_under(item, f"{path}.{name}" if path else name)
    elif isinstance(value, list):
        for item in value:
            yield from keys_under(item, path)


def flex_site_problems(tree: dict[str, Any]) -> list[str]:
    """Denied site properties and app settings in one parsed file's sites and sites/config resources."""
    denied = {name.lower(): name for name in FLEX_DENIED_SITE_PROPERTIES}
    problems = []
    for symbol, attrs in tree.get("resources", {}).items():
        kind = attrs["type"].split("@")[0].lower()
        if kind not in ("microsoft.web/sites", "microsoft.web/sites/config") or attrs["existing"]:
            continue
        body = unwrap(attrs["config"])
        properties = body.get("properties", {})
        config_name = str(body.get("name", "")).strip("'")
        if kind == "microsoft.web/sites/config" and config_name == "appsettings":
            for setting in object_keys(properties):
                if setting.upper() in FLEX_DENIED_APP_SETTINGS:
                    problems.append(f"{symbol}: app setting {setting} ({FLEX_DENIED_APP_SETTINGS[setting.upper()]})")
            continue
        if kind == "microsoft.web/sites/config" and config_name != "web":
            continue  # authsettingsV2 and friends hold no site properties
        scope = properties if kind == "microsoft.web/sites/config" else {
            **properties, **(properties.get("siteConfig") or {})}
        for path, key in keys_under({k: v for k, v in scope.items() if k != "functionAppConfig"}):
            if key.lower() in denied and path.count(".") == 0:
                problems.append(f"{symbol}: {key} ({FLEX_DENIED_SITE_PROPERTIES[denied[key.lower()]]})")
        for setting in (properties.get("siteConfig") or {}).get("appSettings") or []:
            name = str(setting.get("name", "")) if isinstance(setting, dict) else ""
            if name.upper() in FLEX_DENIED_APP_SETTINGS:
                problems.append(f"{symbol}: siteConfig.appSettings {name}")
    return problems


def test_the_plan_is_flex_so_the_denylist_applies() -> None:
    (_, _, plan), = resources(of_type="Microsoft.Web/serverfarms")
    assert plan["sku"]["tier"] == "FlexConsumption"


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.name)
def test_no_site_property_or_app_setting_flex_rejects(path: Path) -> None:
    assert flex_site_problems(parsed(path)) == []


def test_no_app_settings_variable_names_a_setting_flex_rejects() -> None:
    assert sorted(set(map(str.upper, bicep_app_settings())) & set(FLEX_DENIED_APP_SETTINGS)) == []


def test_the_denylist_catches_ftps_state_that_the_generic_schema_allows(tmp_path: Path) -> None:
    """The api.bicep before this change set siteConfig.ftpsState: valid for Microsoft.Web/sites in general, so the
    schema check passes it, while Flex Consumption rejects the deployment."""
    text = module_file("api").read_text()
    anchor = "      scmMinTlsVersion: '1.2'\n"
    assert anchor in text
    probe = tmp_path / "api.bicep"
    probe.write_text(text.replace(anchor, anchor + "      ftpsState: 'Disabled'\n", 1))
    tree: Any = BicepParser().parse(file_path=probe)
    schema_problems, _ = check_file(tree, unwrap)
    assert schema_problems == []
    assert flex_site_problems(tree) == ["functionApp: ftpsState (FTPS not supported (ARM error 51021))"]


def test_the_denylist_catches_app_settings_in_a_config_resource(tmp_path: Path) -> None:
    probe = tmp_path / "probe.bicep"
    probe.write_text("""
resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: 'func-probe'
}
resource settings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'appsettings'
  properties: union({
    FUNCTIONS_WORKER_RUNTIME: 'python'
  }, {
    SCM_DO_BUILD_DURING_DEPLOYMENT: 'true'
  })
}
""")
    tree: Any = BicepParser().parse(file_path=probe)
    assert len(flex_site_problems(tree)) == 2
