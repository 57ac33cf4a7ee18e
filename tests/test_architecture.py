"""The package's shape, as docs/ARCHITECTURE.md describes it: no import cycles, layers that only import
downwards, no ``assert`` in product code, no module over 400 lines.

Every ``import`` of every module under ``token_broker/`` is read with :mod:`ast`, the lazy ones inside
functions and ``if TYPE_CHECKING:`` blocks included, so a cycle hidden in a function body fails as well.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "token_broker"
MAX_LINES = 400

#: Layer of each top-level part of the package; a module may import only from its own layer or a lower
#: one (docs/ARCHITECTURE.md, "Layers"). Within a layer, the module graph must still be acyclic.
LAYERS = {
    "support": 0,
    "config": 1,
    "callers": 2,
    "aad": 3,
    "shared": 4,
    "powerbi": 5,
    "broker": 6,
    "runtime": 7,
    "doctor": 8,
    "web": 8,
    "__main__": 9,
    "__init__": 9,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The token_broker modules ``name`` imports anywhere in its body (relative imports resolved)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:  # "import a.b.c" runs the longest known prefix
                parts = alias.name.split(".")
                prefixes = [".".join(parts[:n]) for n in range(len(parts), 0, -1)]
                found.update(next(([p] for p in prefixes if p in known), []))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            for alias in node.names:  # "from package import module", else "from module import name"
                submodule = f"{origin}.{alias.name}"
                if submodule in known:
                    found.add(submodule)
                elif origin in known:
                    found.add(origin)
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the token_broker modules it imports. Parent packages are left out: their __init__ files
    execute nothing (test_package_init_files_execute_nothing), so importing through them adds no edge."""
    found = modules()
    known = set(found)
    return {name: imported_modules(name, path, known) for name, path in found.items()}


def test_package_init_files_execute_nothing() -> None:
    busy = sorted(str(path.relative_to(ROOT)) for path in PACKAGE.rglob("__init__.py")
                  if not all(isinstance(n, ast.Expr | ast.Assign) and isinstance(n.value, ast.Constant)
                             for n in ast.parse(path.read_text(encoding="utf-8")).body))
    assert busy == []


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (as a path that ends where it starts), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*stack[stack.index(target):], target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def layer(name: str) -> int:
    part = name.split(".")[1] if "." in name else "__init__"
    return LAYERS[part]


def test_every_part_of_the_package_has_a_layer() -> None:
    parts = {name.split(".")[1] if "." in name else "__init__" for name in modules()}
    assert parts <= set(LAYERS), f"add {sorted(parts - set(LAYERS))} to LAYERS and docs/ARCHITECTURE.md"


def test_the_import_graph_sees_lazy_imports() -> None:
    graph = import_graph()
    # callers.modes imports the jwt and easyauth modes inside a function, only when configured
    assert {"token_broker.callers.jwt", "token_broker.callers.easyauth"} <= graph["token_broker.callers.modes"]
    assert "token_broker.support.errors" in graph["token_broker.aad.tokens"]


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_there_is_no_import_cycle() -> None:
    assert find_cycle(import_graph()) is None


def test_layers_import_only_downwards() -> None:
    upward = sorted(f"{name} -> {target}" for name, targets in import_graph().items() for target in targets
                    if layer(target) > layer(name))
    assert upward == []


def test_nothing_below_the_web_layer_knows_azure_functions() -> None:
    # Caller authentication takes a headers mapping; only the web layer (and the assembly's health facts)
    # deal in func.HttpRequest.
    allowed = {"web"}
    users = sorted(name for name, path in modules().items()
                   if "azure.functions" in _absolute_imports(path) and name.split(".")[1] not in allowed)
    assert users == []


def _absolute_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module)
    return names


def test_no_assert_statements_in_product_code() -> None:
    found = sorted(f"{path.relative_to(ROOT)}:{node.lineno}" for path in PACKAGE.rglob("*.py")
                   for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) if isinstance(node, ast.Assert))
    assert found == []


def test_no_module_is_over_the_line_limit() -> None:
    long = sorted(f"{path.relative_to(ROOT)}: {n} lines" for path in PACKAGE.rglob("*.py")
                  if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES)
    assert long == []
