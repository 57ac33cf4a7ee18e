"""What ``import function_app`` loads and where its time goes, from ``python -X importtime``.

The broker defers every SDK it needs only for some configurations (MSAL until the first token,
azure-identity and the Key Vault SDK for Key Vault modes, the App Configuration provider for a
store, PyJWT for ``CALLER_AUTH=jwt``); these notes check that the import itself keeps that promise.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

#: SDKs the import of the app must not load (the brief of the cold-start figure).
HEAVY_SDKS = ("msal", "azure.identity", "azure.keyvault", "azure.appconfiguration", "opentelemetry", "azure.monitor")
#: Also deferred, reported but not counted: PyJWT (jwt callers), cryptography (certificates), azure-core.
ALSO_DEFERRED = ("jwt", "cryptography", "azure.core")
_TOP_PACKAGES_SHOWN = 8
_SLOWEST_SHOWN = 5


def _within(module: str, packages: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def heavy_modules(modules: Iterable[str]) -> list[str]:
    """The modules in ``modules`` that belong to one of :data:`HEAVY_SDKS`."""
    return [m for m in modules if _within(m, HEAVY_SDKS)]


@dataclass(frozen=True)
class ImportLine:
    """One line of ``-X importtime``: a module, its own and cumulative import time, its nesting depth."""

    name: str
    self_us: int
    cumulative_us: int
    depth: int


def parse_importtime(stderr: str) -> list[ImportLine]:
    """The module lines of ``-X importtime`` output, in the order printed (children before parents)."""
    lines = []
    for text in stderr.splitlines():
        if not text.startswith("import time:"):
            continue
        own, cumulative, name_field = text.removeprefix("import time:").split("|", 2)
        if not own.strip().isdigit():
            continue  # the column header
        indent = len(name_field) - len(name_field.lstrip(" ")) - 1
        lines.append(ImportLine(name_field.strip(), int(own), int(cumulative), indent // 2))
    return lines


def subtree(lines: list[ImportLine], top_level: str) -> list[ImportLine]:
    """``top_level``'s line and every import nested in it (they are printed just before it)."""
    end = max(i for i, line in enumerate(lines) if line.name == top_level and line.depth == 0)
    start = end
    while start > 0 and lines[start - 1].depth > 0:
        start -= 1
    return lines[start:end + 1]


def _package(module: str) -> str:
    top = module.split(".")[0]
    return "(stdlib)" if top in sys.stdlib_module_names else top


def _ms(microseconds: float) -> str:
    return f"{microseconds / 1000:.1f} ms"


def _importtime_stderr(root: Path, environ: dict[str, str]) -> str:
    completed = subprocess.run([sys.executable, "-X", "importtime", "-c", "import function_app"], cwd=root,
                               env=environ, capture_output=True, text=True, timeout=120, check=True)
    return completed.stderr


def _median_tree(trees: list[list[ImportLine]]) -> list[ImportLine]:
    """Per module, the median self and cumulative time over several processes (in the first one's order)."""
    by_name: dict[str, list[ImportLine]] = defaultdict(list)
    for tree in trees:
        for line in tree:
            by_name[line.name].append(line)
    return [ImportLine(line.name, int(statistics.median(x.self_us for x in by_name[line.name])),
                       int(statistics.median(x.cumulative_us for x in by_name[line.name])), line.depth)
            for line in trees[0]]


def import_notes(app_modules: list[str], root: Path, environ: dict[str, str], *, runs: int = 3) -> list[str]:
    """Note lines: packages and ``token_broker`` modules loaded, deferred SDKs, and an importtime summary."""
    packages: dict[str, int] = defaultdict(int)
    for module in app_modules:
        packages[_package(module)] += 1
    broker_modules = sorted(m.removeprefix("token_broker.") for m in app_modules if m.startswith("token_broker."))
    heavy = heavy_modules(app_modules)
    deferred = [p for p in (*HEAVY_SDKS, *ALSO_DEFERRED) if not any(_within(m, [p]) for m in app_modules)]
    notes = [
        f"{len(app_modules)} new modules; top-level packages: "
        + ", ".join(f"{name} ({count})" for name, count in sorted(packages.items())),
        f"token_broker submodules ({len(broker_modules)}): {', '.join(broker_modules)}",
        ("Not imported by the import itself: " + ", ".join(deferred)) if not heavy
        else f"IMPORTED although they should be deferred: {', '.join(sorted(heavy)[:10])}",
    ]
    trees = [subtree(parse_importtime(_importtime_stderr(root, environ)), "function_app") for _ in range(runs)]
    tree = _median_tree(trees)
    self_by_package: dict[str, float] = defaultdict(float)
    for line in tree:
        self_by_package[_package(line.name)] += line.self_us
    ranked = sorted(self_by_package.items(), key=lambda item: -item[1])[:_TOP_PACKAGES_SHOWN]
    slowest = sorted((line for line in tree if line.name.startswith("token_broker")),
                     key=lambda line: -line.self_us)[:_SLOWEST_SHOWN]
    broker_total = sum(line.self_us for line in tree if line.name.split(".")[0] in ("token_broker", "function_app"))
    notes += [
        f"-X importtime, median of {runs} processes, bytecode cached: function_app {_ms(tree[-1].cumulative_us)} "
        f"cumulative, of which token_broker + function_app themselves {_ms(broker_total)}",
        "  self time by package: " + ", ".join(f"{name} {_ms(us)}" for name, us in ranked),
        "  slowest token_broker modules (self): " + ", ".join(f"{line.name} {_ms(line.self_us)}" for line in slowest),
    ]
    return notes
