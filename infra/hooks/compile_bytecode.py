"""Compiles the deployed Python code to bytecode before azd packages it (the api service's prepackage hook).

Without it the package has no __pycache__, and a read-only Flex Consumption instance compiles function_app and
token_broker from source at every cold start (1.25-1.32x the cold-start floor before this hook; `python -m
benchmarks` prints coldstart.token.packaged). The bytecode is hash-checked (PEP 552): a zip and its extraction do
not keep modification times to the second, which timestamp-checked .pyc files depend on, while a hash check still
notices a source that changed after compiling. It must be compiled by the same Python minor version as the Flex
runtime (functionAppConfig.runtime.version in infra/app/api.bicep): another version's .pyc would be ignored.

Usage: python infra/hooks/compile_bytecode.py [PROJECT_DIRECTORY]   (default: the repository root)
"""

from __future__ import annotations

import compileall
import re
import sys
from pathlib import Path
from py_compile import PycInvalidationMode

ROOT = Path(__file__).resolve().parents[2]
#: What the package deploys as code (.funcignore leaves out the rest).
DEPLOYED = ("function_app.py", "token_broker")


def runtime_version() -> str:
    """The Flex Consumption Python version (functionAppConfig.runtime in infra/app/api.bicep)."""
    found = re.search(r"runtime:\s*\{\s*name:\s*'python'\s*version:\s*'(\d+\.\d+)'",
                      (ROOT / "infra" / "app" / "api.bicep").read_text())
    if not found:
        raise SystemExit("infra/app/api.bicep has no functionAppConfig.runtime for python")
    return found.group(1)


def compile_project(project: Path) -> bool:
    """Compile the deployed modules under ``project``; True when every file compiled."""
    ok = True
    for name in DEPLOYED:
        target = project / name
        if target.is_dir():
            ok = compileall.compile_dir(target, quiet=1, force=True,
                                        invalidation_mode=PycInvalidationMode.CHECKED_HASH) and ok
        elif target.is_file():
            ok = compileall.compile_file(target, quiet=1, force=True,
                                         invalidation_mode=PycInvalidationMode.CHECKED_HASH) and ok
    return bool(ok)


def main(argv: list[str]) -> int:
    project = Path(argv[1]).resolve() if len(argv) > 1 else ROOT
    wanted = runtime_version()
    have = f"{sys.version_info.major}.{sys.version_info.minor}"
    if have != wanted:
        print(f"prepackage: Python {have} is not the function app's Python {wanted}: bytecode not compiled "
              f"(the app still works; cold starts compile it from source). Run azd with Python {wanted} on PATH.",
              file=sys.stderr)
        return 0
    if not compile_project(project):
        print("prepackage: a module does not compile (see above).", file=sys.stderr)
        return 1
    print(f"prepackage: compiled {', '.join(DEPLOYED)} to hash-checked Python {wanted} bytecode.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
