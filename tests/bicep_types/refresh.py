"""Refresh the vendored Azure resource type definitions that tests/test_bicep_schema.py checks the Bicep against.

The definitions are the generated Bicep type files of
  - Azure/bicep-types-az: generated/<rp>/<namespace>/<api-version>/types.json (MIT licence)
  - microsoftgraph/msgraph-bicep-types: generated/microsoftgraph/microsoft.graph/<v1.0|beta>/<extension version>/
    types.json (MIT licence)
Only the resource types and API versions that infra/**/*.bicep declares are kept (plus ``--extra`` ones), each
pruned to the types reachable from its resource type and renumbered, one file per namespace and version. Where
each file came from (repository, commit, path) is written to sources.json next to them.

Usage (with local clones or bare mirrors of both repositories; no network needed):
    python tests/bicep_types/refresh.py --az PATH/bicep-types-az --graph PATH/msgraph-bicep-types \
        [--extra Microsoft.Cache/redisEnterprise@2025-07-01]
Then run `bash scripts/test.sh tests/test_bicep_schema.py` and commit the changed files.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
INFRA = ROOT / "infra"
AZ_REPOSITORY = "Azure/bicep-types-az"
GRAPH_REPOSITORY = "microsoftgraph/msgraph-bicep-types"
#: The Graph extension version infra/bicepconfig.json pins (microsoftgraph/v1.0:<version>).
_GRAPH_EXTENSION = re.compile(r"microsoftgraph/(v1\.0|beta):(\d+\.\d+\.\d+(?:-preview)?)")
_DECLARATION = re.compile(r"^\s*resource\s+\w+\s+'([\w./-]+)@([\w.-]+)'", re.MULTILINE)


def git(repository: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repository), *args], check=True, capture_output=True, text=True).stdout


def declared_types(extra: list[str]) -> dict[str, set[str]]:
    """API version -> resource types declared in infra/ (nested child declarations by their short name)."""
    found: dict[str, set[str]] = defaultdict(set)
    for path in sorted(INFRA.rglob("*.bicep")):
        for type_name, version in _DECLARATION.findall(path.read_text()):
            found[version].add(type_name)
    for item in extra:
        type_name, _, version = item.partition("@")
        found[version].add(type_name)
    return found


def prune(types: list[dict[str, Any]], roots: list[int]) -> tuple[list[dict[str, Any]], dict[int, int]]:
    """The types reachable from ``roots``, renumbered; old index -> new index."""
    order: list[int] = []
    seen: set[int] = set()
    stack = list(reversed(roots))
    while stack:
        index = stack.pop()
        if index in seen:
            continue
        seen.add(index)
        order.append(index)
        refs = re.findall(r'"\$ref": "#/(\d+)"', json.dumps(types[index]))
        stack.extend(int(ref) for ref in reversed(refs))
    mapping = {old: new for new, old in enumerate(order)}

    def renumber(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (f"#/{mapping[int(v[2:])]}" if k == "$ref" else renumber(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [renumber(item) for item in node]
        return node

    return [renumber(types[old]) for old in order], mapping


def wanted(resource_name: str, version: str, short_or_full: set[str]) -> bool:
    type_name, _, api_version = resource_name.partition("@")
    if api_version != version:
        return False
    return type_name in short_or_full or any(
        "/" not in name and type_name.endswith("/" + name) for name in short_or_full)


def vendor(repository: Path, repository_name: str, path: str, version: str, names: set[str],
           sources: dict[str, Any]) -> list[str]:
    types = json.loads(git(repository, "show", f"HEAD:{path}"))
    roots = [i for i, t in enumerate(types) if t.get("$type") == "ResourceType" and wanted(t["name"], version, names)]
    if not roots:
        return []
    pruned, mapping = prune(types, roots)
    resources = {types[i]["name"]: mapping[i] for i in roots}
    namespace = next(iter(resources)).split("/")[0]
    target = HERE / f"{namespace}@{version}.json"
    target.write_text(json.dumps({"resources": resources, "types": pruned}, separators=(",", ":")) + "\n")
    sources[target.name] = {"repository": repository_name, "commit": git(repository, "rev-parse", "HEAD").strip(),
                            "path": path, "licence": "MIT"}
    return sorted(resources)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--az", type=Path, required=True, help="clone or mirror of Azure/bicep-types-az")
    parser.add_argument("--graph", type=Path, required=True,
                        help="clone or mirror of microsoftgraph/msgraph-bicep-types")
    parser.add_argument("--extra", action="append", default=[], help="another TYPE@API-VERSION to vendor")
    arguments = parser.parse_args()

    for old in HERE.glob("*@*.json"):
        old.unlink()
    sources: dict[str, Any] = {}
    vendored: list[str] = []
    az_files = git(arguments.az, "ls-tree", "-r", "--name-only", "HEAD", "generated").splitlines()
    config = (INFRA / "bicepconfig.json").read_text()
    graph = _GRAPH_EXTENSION.search(config)
    for version, names in sorted(declared_types(arguments.extra).items()):
        namespaces = {name.split("/")[0] for name in names if "/" in name}
        if "Microsoft.Graph" in namespaces:
            assert graph, "infra/bicepconfig.json does not pin a microsoftgraph extension"
            path = f"generated/microsoftgraph/microsoft.graph/{graph.group(1)}/{graph.group(2)}/types.json"
            vendored += vendor(arguments.graph, GRAPH_REPOSITORY, path, version, names, sources)
            namespaces.discard("Microsoft.Graph")
        for namespace in sorted(namespaces):
            suffix = f"/{namespace.lower()}/{version}/types.json"
            in_namespace = {n for n in names if n.startswith(namespace + "/")}
            for path in (p for p in az_files if p.endswith(suffix)):
                got = vendor(arguments.az, AZ_REPOSITORY, path, version, in_namespace, sources)
                if got:
                    vendored += got
                    break
    (HERE / "sources.json").write_text(json.dumps(sources, indent=2, sort_keys=True) + "\n")
    print("\n".join(sorted(vendored)))


if __name__ == "__main__":
    main()
