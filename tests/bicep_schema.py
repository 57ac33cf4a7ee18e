"""Checks Bicep resource bodies (as pycep-parser parses them) against Azure's published resource type definitions.

The definitions are the generated Bicep type files of Azure/bicep-types-az and microsoftgraph/msgraph-bicep-types,
vendored under tests/bicep_types/ (refresh.py there updates them). Each resource's ``type@apiVersion`` is resolved to
its body type, and every literal in the body is checked the way the Bicep compiler and Resource Manager would:
unknown properties, read-only properties set, required properties missing, and literals outside a type's enum,
also an extensible one (and every ``@allowed`` value of a parameter a property is set from). Values computed at
deployment time (function calls, references to resources or variables) cannot be checked and are skipped; the
branches of ``cond ? a : b`` and the objects merged by ``union()`` are checked one by one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from pycep.models import BicepElement

TYPES_DIRECTORY = Path(__file__).resolve().parent / "bicep_types"
REQUIRED, READ_ONLY = 1, 2
#: Bicep keywords of a resource declaration that are not part of the resource's body type.
DECLARATION_KEYWORDS = frozenset({"parent", "scope", "dependsOn"})


@dataclass(frozen=True)
class TypeFile:
    resources: dict[str, int]
    types: list[dict[str, Any]]

    def node(self, ref: dict[str, str]) -> dict[str, Any]:
        return self.types[int(ref["$ref"].rsplit("/", 1)[1])]


@cache
def type_files() -> tuple[TypeFile, ...]:
    files = []
    for path in sorted(TYPES_DIRECTORY.glob("*@*.json")):
        document = json.loads(path.read_text())
        files.append(TypeFile(document["resources"], document["types"]))
    return tuple(files)


def resource_type(type_name: str, api_version: str) -> tuple[TypeFile, dict[str, Any]] | None:
    """The file and ResourceType node of ``type_name@api_version`` (nested child declarations carry the version)."""
    key = f"{type_name.split('@')[0]}@{api_version}".lower()
    for types in type_files():
        for name, index in types.resources.items():
            if name.lower() == key:
                return types, types.types[index]
    return None


@dataclass
class Checker:
    """Collects every problem of one file: ``path: message`` strings."""

    types: TypeFile
    parameters: dict[str, Any]
    problems: list[str] = field(default_factory=list)

    def report(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def check(self, type_node: dict[str, Any], value: Any, where: str, *, partial: bool = False) -> None:
        if isinstance(value, BicepElement):
            self.check_parameter(type_node, str(value), where)
            return
        if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in ("function", "operator"):
            self.check_expression(type_node, value, where)
            return
        if isinstance(value, dict) and "loop_type" in value:  # [for x in y: body]: body is one array item
            if type_node["$type"] == "ArrayType":
                self.check(self.types.node(type_node["itemType"]), value["config"], f"{where}[]")
            return
        kind = type_node["$type"]
        if kind == "AnyType":
            return
        if kind == "ObjectType":
            self.check_object(type_node, value, where, partial=partial)
        elif kind == "DiscriminatedObjectType":
            self.check_discriminated(type_node, value, where, partial=partial)
        elif kind == "ArrayType":
            if isinstance(value, list):
                for index, item in enumerate(value):
                    self.check(self.types.node(type_node["itemType"]), item, f"{where}[{index}]")
            else:
                self.report(where, f"expected an array, got {value!r}")
        elif kind == "UnionType":
            self.check_union(type_node, value, where)
        else:
            self.check_primitive(type_node, value, where)

    # -- expressions and parameters ------------------------------------------------------------------

    def check_expression(self, type_node: dict[str, Any], value: dict[str, Any], where: str) -> None:
        node = next(iter(value.values()))
        if "operator" in value and node["type"] == "conditional":
            for branch in ("true_value", "false_value"):
                self.check(type_node, node["operands"][branch], where)
        elif "function" in value and node["type"] == "union" and type_node["$type"] == "ObjectType":
            for argument in (node.get("parameters") or {}).values():
                self.check(type_node, argument, where, partial=True)

    def check_parameter(self, type_node: dict[str, Any], name: str, where: str) -> None:
        parameter = self.parameters.get(name)
        if parameter is None:
            return  # a variable, resource or loop item: computed at deployment
        for decorator in parameter.get("decorators", []):
            if decorator.get("type") == "allowed":
                for allowed in decorator.get("argument", []):
                    self.check(type_node, allowed, f"{where} (@allowed value of parameter {name})")

    # -- objects ---------------------------------------------------------------------------------------

    def check_object(self, type_node: dict[str, Any], value: Any, where: str, *, partial: bool = False,
                     skip: frozenset[str] = frozenset()) -> None:
        if not isinstance(value, dict):
            if isinstance(value, (str, bool, int, list)) and not _is_interpolated(value):
                self.report(where, f"expected an object ({type_node.get('name')}), got {value!r}")
            return
        properties: dict[str, Any] = type_node.get("properties", {})
        by_lower = {name.lower(): name for name in properties}
        given = {key.strip("'"): item for key, item in value.items()}
        for key, item in given.items():
            if key in skip:
                continue
            name = key if key in properties else None
            if name is None and key.lower() in by_lower:
                self.report(f"{where}.{key}", f"spelled {by_lower[key.lower()]!r} in the type definition")
                name = by_lower[key.lower()]
            if name is None:
                additional = type_node.get("additionalProperties")
                if additional is not None:
                    self.check(self.types.node(additional), item, f"{where}.{key}")
                elif not key.startswith("${"):
                    self.report(f"{where}.{key}", f"unknown property of {type_node.get('name')}")
                continue
            spec = properties[name]
            if spec.get("flags", 0) & READ_ONLY and not spec.get("flags", 0) & REQUIRED:
                self.report(f"{where}.{key}", "read-only property set")
                continue
            self.check(self.types.node(spec["type"]), item, f"{where}.{key}")
        if not partial:
            for name, spec in properties.items():
                flags = spec.get("flags", 0)
                if flags & REQUIRED and not flags & READ_ONLY and name.lower() not in {k.lower() for k in given}:
                    self.report(where, f"required property {name!r} is missing")

    def check_discriminated(self, type_node: dict[str, Any], value: Any, where: str, *, partial: bool) -> None:
        if not isinstance(value, dict):
            return
        discriminator = type_node["discriminator"]
        chosen = {k.strip("'"): v for k, v in value.items()}.get(discriminator)
        if not isinstance(chosen, str) or isinstance(chosen, BicepElement) or _is_interpolated(chosen):
            choices = sorted(type_node["elements"])
            self.report(where, f"{discriminator} must be a literal to choose the type ({choices})")
            return
        element = type_node["elements"].get(chosen)
        if element is None:
            self.report(f"{where}.{discriminator}", f"{chosen!r} is not one of {sorted(type_node['elements'])}")
            return
        merged = dict(self.types.node(element))
        merged["properties"] = {**type_node.get("baseProperties", {}), **merged.get("properties", {})}
        self.check_object(merged, value, where, partial=partial)

    # -- scalars -----------------------------------------------------------------------------------------

    def check_union(self, type_node: dict[str, Any], value: Any, where: str) -> None:
        members = [self.types.node(ref) for ref in type_node["elements"]]
        if _is_interpolated(value) or isinstance(value, (dict, list)):
            return
        literals = [m["value"] for m in members if m["$type"] == "StringLiteralType"]
        open_kinds = {m["$type"] for m in members if m["$type"] != "StringLiteralType"}
        if isinstance(value, bool):
            if "BooleanType" not in open_kinds and "AnyType" not in open_kinds:
                self.report(where, f"{value!r} is not one of {literals}")
        elif isinstance(value, int):
            if not open_kinds & {"IntegerType", "AnyType"}:
                self.report(where, f"{value!r} is not one of {literals}")
        elif isinstance(value, str):
            # Extensible enums (literals plus "string") still name every value the service knows: a literal
            # outside them is a typo Bicep would let through and the resource provider would refuse.
            if value in literals or (not literals and open_kinds & {"StringType", "AnyType"}):
                return
            self.report(where, f"{value!r} is not one of {literals}")

    def check_primitive(self, type_node: dict[str, Any], value: Any, where: str) -> None:
        kind = type_node["$type"]
        if isinstance(value, (dict, list)) and kind != "AnyType":
            self.report(where, f"expected a {kind}, got {type(value).__name__}")
        elif kind == "StringLiteralType":
            if isinstance(value, str) and not _is_interpolated(value) and value != type_node["value"]:
                self.report(where, f"{value!r} must be {type_node['value']!r}")
        elif kind == "StringType":
            if isinstance(value, (bool, int)):
                self.report(where, f"expected a string, got {value!r}")
        elif kind == "BooleanType":
            if not isinstance(value, bool):
                self.report(where, f"expected a bool, got {value!r}")
        elif kind == "IntegerType":
            if isinstance(value, bool) or not isinstance(value, int):
                self.report(where, f"expected an int, got {value!r}")
            elif value < type_node.get("minValue", value) or value > type_node.get("maxValue", value):
                self.report(where, f"{value} is outside [{type_node.get('minValue')}, {type_node.get('maxValue')}]")


def _is_interpolated(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


def check_file(tree: dict[str, Any], unwrap: Any) -> tuple[list[str], list[str]]:
    """(problems, ``type@version`` of every resource checked) of one parsed Bicep file."""
    problems: list[str] = []
    checked: list[str] = []
    for symbol, attrs in tree.get("resources", {}).items():
        type_name = attrs["type"].split("@")[0]
        found = resource_type(attrs["type"], attrs["api_version"])
        label = f"{type_name}@{attrs['api_version']}"
        if found is None:
            problems.append(f"{symbol}: {label} is not in tests/bicep_types/ (run tests/bicep_types/refresh.py)")
            continue
        types, resource = found
        checked.append(label)
        if attrs["existing"]:
            continue  # only a name: nothing is written
        checker = Checker(types, tree.get("parameters", {}))
        body = types.node(resource["body"])
        config = unwrap(attrs["config"])
        if body["$type"] == "ObjectType":
            checker.check_object(body, config, symbol, skip=DECLARATION_KEYWORDS)
        else:
            checker.check_discriminated(body, {k: v for k, v in config.items() if k not in DECLARATION_KEYWORDS},
                                        symbol, partial=False)
        problems.extend(checker.problems)
    return problems, checked
