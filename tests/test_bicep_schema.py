"""Every resource under infra/ against Azure's published type definitions (tests/bicep_schema.py explains how),
and the checker against bodies that Resource Manager or the Graph extension would refuse, so that it can fail."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

from tests.bicep_schema import TYPES_DIRECTORY, check_file, resource_type
from tests.test_infra import BICEP_FILES, INFRA, parsed, unwrap


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_every_resource_matches_its_published_type(path: Path) -> None:
    problems, checked = check_file(parsed(path), unwrap)
    assert problems == []
    assert len(checked) == len(parsed(path).get("resources", {}))


def test_every_declared_type_and_api_version_is_vendored_with_its_source() -> None:
    declared = set()
    for path in BICEP_FILES:
        for attrs in parsed(path).get("resources", {}).values():
            declared.add((attrs["type"].split("@")[0], attrs["api_version"]))
    assert len(declared) >= 15
    for type_name, version in sorted(declared):
        assert resource_type(type_name, version) is not None, f"{type_name}@{version}: run refresh.py"
    sources = json.loads((TYPES_DIRECTORY / "sources.json").read_text())
    vendored = {p.name for p in TYPES_DIRECTORY.glob("*@*.json")}
    assert set(sources) == vendored
    for source in sources.values():
        assert source["repository"] in ("Azure/bicep-types-az", "microsoftgraph/msgraph-bicep-types")
        assert re.fullmatch(r"[0-9a-f]{40}", source["commit"]) and source["licence"] == "MIT"
    assert "MIT License" in (TYPES_DIRECTORY / "LICENSE").read_text()
    # The Graph types are the ones of the extension version bicepconfig.json pins.
    pinned = json.loads((INFRA / "bicepconfig.json").read_text())["extensions"]["microsoftGraphV1"].rsplit(":", 1)[1]
    assert sources["Microsoft.Graph@v1.0.json"]["path"].endswith(f"/v1.0/{pinned}/types.json")


def problems_of(tmp_path: Path, text: str) -> list[str]:
    source = tmp_path / "probe.bicep"
    source.write_text(text)
    tree: Any = BicepParser().parse(file_path=source)
    problems, checked = check_file(tree, unwrap)
    assert checked, "the probe declares no resource"
    return problems


SITE = """
param location string
@allowed([
  'Disabled'
  'SometimesOn'
])
param ftps string = 'Disabled'
resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: 'func-probe'
  location: location
  kind: 'functionapp,linux'
  properties: {
    httpsOnly: true
    siteConfig: {
      %s
    }
  }
}
"""


@pytest.mark.parametrize(("body", "expected"), [
    ("minTlsVersion: '1.2'", None),
    ("ftpsState: 'Disabled'", None),  # valid for App Service in general (Flex rejects it: tests/test_flex.py)
    ("ftpState: 'Disabled'", "unknown property"),
    ("ftpsState: 'Off'", "is not one of"),
    ("ftpsState: ftps", "@allowed value of parameter ftps"),
    ("http20Enabled: 'yes'", "expected a bool"),
    ("minTlsVersion: true ? '1.2' : '1.9'", "is not one of"),
    ("machineKey: {\n validation: 'x'\n}", "read-only property set"),
])
def test_the_checker_finds_what_azure_refuses(tmp_path: Path, body: str, expected: str | None) -> None:
    problems = problems_of(tmp_path, SITE % body)
    if expected is None:
        assert problems == []
    else:
        assert problems and all(expected in problem for problem in problems), problems


def test_the_checker_finds_missing_required_properties_and_unknown_discriminators(tmp_path: Path) -> None:
    role = """
resource assignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid('x')
  properties: {
    principalId: '00000000-0000-0000-0000-000000000000'
  }
}
resource settings 'Microsoft.Web/sites/config@2024-04-01' = {
  name: 'authsettingsV3'
  properties: {}
}
resource app 'Microsoft.Graph/applications@v1.0' = {
  uniqueName: 'probe'
  displayName: 'probe'
  appId: 'set by Entra ID'
}
"""
    problems = problems_of(tmp_path, role)
    assert any("required property 'roleDefinitionId' is missing" in p for p in problems), problems
    assert any("'authsettingsV3' is not one of" in p for p in problems), problems
    assert any("app.appId: read-only property set" in p for p in problems), problems


REDIS = """
resource cluster 'Microsoft.Cache/redisEnterprise@2025-07-01' = {
  name: 'amr-probe'
  location: 'westeurope'
  sku: {
    name: 'Balanced_B0'
  }
  properties: {
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
  }
}
resource database 'Microsoft.Cache/redisEnterprise/databases@2025-07-01' = {
  parent: cluster
  name: 'default'
  properties: {
    %s
  }
}
resource assignment 'Microsoft.Cache/redisEnterprise/databases/accessPolicyAssignments@2025-07-01' = {
  parent: database
  name: 'probe'
  properties: {
    %s
  }
}
"""
ASSIGNMENT = "accessPolicyName: 'default'\n    user: {\n      objectId: '00000000-0000-0000-0000-000000000000'\n    }"


@pytest.mark.parametrize(("database", "assignment", "expected"), [
    ("accessKeysAuthentication: 'Disabled'\n    clusteringPolicy: 'EnterpriseCluster'", ASSIGNMENT, None),
    ("clusteringPolicy: 'Enterprise'", ASSIGNMENT, "is not one of"),  # the policy is EnterpriseCluster
    ("minimumTlsVersion: '1.2'", ASSIGNMENT, "unknown property"),  # a property of the cluster, not the database
    ("accessKeysAuthentication: false", ASSIGNMENT, "is not one of"),  # 'Disabled', not a bool
    ("port: '10000'", ASSIGNMENT, "expected an int"),
    ("evictionPolicy: 'volatile-lru'", ASSIGNMENT, "is not one of"),  # Redis's spelling, not Azure's
    ("clientProtocol: 'Encrypted'", "accessPolicyName: 'default'", "required property 'user' is missing"),
    ("clientProtocol: 'Encrypted'", "accessPolicyName: 'default'\n    user: {\n      principalId: 'x'\n    }",
     "unknown property"),  # the user is named by objectId
])
def test_the_checker_finds_what_azure_managed_redis_refuses(tmp_path: Path, database: str, assignment: str,
                                                            expected: str | None) -> None:
    problems = problems_of(tmp_path, REDIS % (database, assignment))
    if expected is None:
        assert problems == []
    else:
        assert problems and all(expected in problem for problem in problems), problems


def test_azure_managed_redis_requires_public_network_access_at_this_api_version(tmp_path: Path) -> None:
    """2025-07-01 makes publicNetworkAccess required: a template that omits it is refused."""
    problems = problems_of(tmp_path, (REDIS % ("port: 10000", ASSIGNMENT)).replace(
        "    publicNetworkAccess: 'Enabled'\n", ""))
    assert problems == ["cluster.properties: required property 'publicNetworkAccess' is missing"]
