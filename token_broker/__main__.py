"""``python -m token_broker <command>``: the broker's command-line tools.

Commands: ``doctor`` (check a deployment's settings, credential, token and Power BI access; see
:mod:`token_broker.doctor.cli`) and ``profiles`` (onboard customers as Power BI profiles; see
:mod:`token_broker.doctor.onboarding`). Each command is imported only when it runs, so start-up stays fast.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

USAGE = """\
usage: python -m token_broker <command> [options]

commands:
  doctor    check the settings, credential, Azure AD token and Power BI access, and say what to fix
  profiles  create, list and delete customers' Power BI service principal profiles and their workspaces

'python -m token_broker <command> --help' describes a command's options."""


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to the command named by the first argument; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "doctor":
        from .doctor.cli import main as doctor

        return doctor(rest)
    if command == "profiles":
        from .doctor.onboarding import main as profiles

        return profiles(rest)
    print(f"unknown command '{command}'\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    if hasattr(sys.stdout, "reconfigure"):
        # A console or pipe that cannot encode a character of a message still gets the rest of it.
        sys.stdout.reconfigure(errors="replace")
    sys.exit(main())
