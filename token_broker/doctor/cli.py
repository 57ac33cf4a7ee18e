"""``python -m token_broker doctor``: check a deployment end to end and say what to fix.

Reads the settings the app reads (the environment; ``--settings`` adds a ``local.settings.json``'s
``Values`` under it, as Core Tools does; App Configuration when ``AZURE_APPCONFIG_ENDPOINT`` is set), then
runs the checks of :mod:`token_broker.doctor.checks` and prints a checklist (``--json``: a list of
``{"check", "status", "detail", "fix", "code"}`` for pipelines). The exit code is 0 when nothing failed
(warnings allowed), 1 when a check failed, 2 for a usage error.

Nothing secret is printed: tokens are decoded for their claims and never shown, and every line goes
through the broker's redaction (registered secrets and anything shaped like a JWT) before it is written.
Only the standard library is imported until the arguments are parsed, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from .check import FAIL, WARN, Check

PROG = "python -m token_broker doctor"
SYMBOLS = {"pass": "✓", "fail": "✗", "warn": "!", "skip": "–"}
ASCII_SYMBOLS = {"pass": "[ok]", "fail": "[FAIL]", "warn": "[warn]", "skip": "[skip]"}
EPILOG = """\
checks, in order (a stage runs only when the one before it passed):
  settings      every problem at once; App Configuration first when AZURE_APPCONFIG_ENDPOINT is set
  credential    the app's identity gets a token; *_URI secrets read from Key Vault; the certificate parses
  token         a Power BI token from Azure AD (client_credentials, password; on_behalf_of needs --user-token),
                with its non-secret claims (aud, appid/azp, tid, oid, roles, expiry)
  powerbi       each EMBED_ALLOWED_WORKSPACES workspace is visible, each EMBED_ALLOWED_REPORTS report resolves,
                and a dataset with row-level security can get the identity embed tokens need (a dataset that
                requires roles while EMBED_RLS_ROLES gives none fails: the broker would refuse every request);
                in profile mode (POWERBI_PROFILE_CLAIM): each mapped profile is one of the service principal's,
                and each customer's listed workspaces are visible to its profile

statuses: ✓ pass, ! warning, ✗ failure (with the fix), – skipped.
exit code: 0 when nothing failed (warnings allowed), 1 when a check failed, 2 for a usage error.
No secret or token is ever printed."""

def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The doctor's command line."""
    parser = argparse.ArgumentParser(
        prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Check the broker's settings, credential, Azure AD token and Power BI access, and say what to "
                    "fix. Run it where the app runs (the Function App's console) or locally.")
    parser.add_argument("--settings", metavar="PATH", help="also read the Values of this local.settings.json; "
                        "environment variables win over them, as under Azure Functions Core Tools")
    parser.add_argument("--json", action="store_true", help='print a JSON list of {"check", "status", "detail", '
                        '"fix", "code"} instead of the checklist')
    parser.add_argument("--user-token", metavar="TOKEN", help="for POWERBI_GRANT_TYPE=on_behalf_of: a user's access "
                        "token for this API, to test the exchange; '-' reads it from standard input (keeps it out "
                        "of the shell history)")
    parser.add_argument("--verbose", action="store_true", help="also write the broker's log (redacted) to stderr")
    return parser


def read_local_settings(path: Path) -> dict[str, str]:
    """The ``Values`` of a ``local.settings.json``; ValueError (or OSError) says what is wrong with the file.

    Deployed code must not import ``devtools``, so this is the doctor's own small reader.
    """
    data = json.loads(path.read_text(encoding="utf-8-sig"))  # editors on Windows write a byte order mark
    if not isinstance(data, dict):
        raise ValueError("the top level must be a JSON object")
    if data.get("IsEncrypted") is True:
        raise ValueError("IsEncrypted is true; run 'func settings decrypt' first")
    values = data.get("Values") or {}
    if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
        raise ValueError("Values must be an object of strings")
    return {str(name): value for name, value in values.items()}


def main(argv: Sequence[str] | None = None, *, environ: Mapping[str, str] | None = None) -> int:
    """Run the doctor with the command-line arguments ``argv``; returns the exit code (0: nothing failed).

    ``environ`` stands for the process environment (the app settings), e.g. when embedding the doctor.
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, or a usage error argparse already explained
        return done.code if isinstance(done.code, int) else 2
    settings: dict[str, str] = dict(os.environ if environ is None else environ)
    source = "the environment"
    checks: list[Check] = []
    from .checks import Doctor

    if args.settings:
        path = Path(args.settings)
        try:
            settings = {**read_local_settings(path), **settings}
            source += f" (winning) and the Values of {path}"
        except (OSError, ValueError) as err:
            reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            checks.append(Check("settings_file", FAIL, f"{path} cannot be read: {reason}",
                                "Pass the path of a readable local.settings.json, or leave out --settings.",
                                "configuration_invalid"))
    user_token = _user_token(args.user_token)
    _register_secrets(settings, user_token)
    if not checks:
        with _logging(verbose=args.verbose):
            doctor = Doctor(settings, user_token=user_token)
            try:
                checks = doctor.run()
            except Exception as err:  # a bug must still end in a checklist that says so, not a traceback
                logging.getLogger(__name__).exception("The doctor failed unexpectedly")
                checks = [*doctor.results, Check("doctor", FAIL, f"stopped by an unexpected {type(err).__name__}",
                                                 "Run again with --verbose to see the (redacted) traceback, and "
                                                 "report it.", "internal_error")]
    if args.json:
        _write(json.dumps([c.as_dict() for c in checks], indent=2, ensure_ascii=False))
    else:
        _write_checklist(checks, source)
    return 1 if any(c.status == FAIL for c in checks) else 0


def _user_token(value: str | None) -> str | None:
    if value is None:
        return None
    token = sys.stdin.readline() if value == "-" else value
    return token.strip() or None


def _register_secrets(settings: Mapping[str, str], user_token: str | None) -> None:
    """Every secret the doctor may come across is redacted from its output and from log records."""
    from ..config.contract import SECRET_SETTINGS
    from ..support import redaction

    redaction.register_secrets([*(settings.get(name) for name in SECRET_SETTINGS), user_token])
    redaction.install()  # as the app does at start: every record, the azure SDKs' included


@contextmanager
def _logging(*, verbose: bool) -> Iterator[None]:
    """The broker's log on stderr when asked for, else nowhere (not Python's last-resort handler)."""
    root = logging.getLogger()
    handler: logging.Handler = logging.StreamHandler(sys.stderr) if verbose else logging.NullHandler()
    if verbose:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    level = root.level
    root.addHandler(handler)
    if verbose and root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _write(text: str) -> None:
    from ..support.redaction import redact

    print(redact(text), file=sys.stdout)


def _symbols(stream: TextIO) -> dict[str, str]:
    try:
        "".join(SYMBOLS.values()).encode(getattr(stream, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return ASCII_SYMBOLS
    return SYMBOLS


def _write_checklist(checks: Sequence[Check], source: str) -> None:
    symbols = _symbols(sys.stdout)
    lines = [f"Power BI token broker doctor: settings from {source}"]
    for check in checks:
        code = f" [{check.code}]" if check.code and check.status in (FAIL, WARN) else ""
        lines.append(f"{symbols[check.status]} {check.check}: {check.detail}{code}")
        if check.fix and check.fix != check.detail and check.status in (FAIL, WARN):
            lines.append(f"    fix: {check.fix}")
    counts = {status: sum(1 for c in checks if c.status == status) for status in SYMBOLS}
    # Worded so that it is never mistaken for a test runner's "N passed, N failed" summary line.
    lines.append(f"Result: {counts['fail']} check(s) failed, {counts['warn']} warning(s), {counts['pass']} "
                 f"passed, {counts['skip']} skipped.")
    _write("\n".join(lines))
