"""``python -m token_broker profiles``: onboard customers as Power BI service principal profiles.

Commands (Power BI REST API, as the broker's own service principal, with the settings the app reads):

- ``create NAME``: Profiles - Create Profile, unless the service principal already has a profile named ``NAME``
  (Get Profiles with ``$filter=displayName eq 'NAME'``), which is returned instead: running it twice is safe.
- ``list``: Profiles - Get Profiles, every page (``$top``/``$skip``).
- ``delete ID`` or ``delete --name NAME``: Profiles - Delete Profile; a profile that is already gone is success.
- ``create-workspace --profile ID NAME [--capacity CAPACITY_ID]``: Groups - Create Group
  (``POST /groups?workspaceV2=True``) *as the profile* (``X-PowerBI-Profile-Id``), so the profile owns the
  workspace and only it sees it; an existing workspace of that name the profile sees is returned instead.
  ``--capacity`` assigns it to an Embedded/Fabric capacity (Groups - Assign To Capacity) when it is not on it.

``--json`` prints one JSON document; the exit code is 0 on success, 1 on failure (one line on stderr saying what
to fix), 2 for a usage error. Nothing secret is printed. The mapping a customer needs is printed after
``create``: add it to ``POWERBI_PROFILES`` or as ``TokenBroker:Profiles:<customer>`` (docs/MULTITENANCY.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..powerbi.access import PowerBIAccess
    from ..powerbi.client import PowerBIClient

PROG = "python -m token_broker profiles"
PAGE = 1000


class CommandError(Exception):
    """A failure the command explains in one line (exit code 1)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Create, list and delete the Power BI service principal "
                                     "profiles of your customers, and their workspaces, as the broker's service "
                                     "principal (the settings the app reads). Idempotent: safe to run again.")
    parser.add_argument("--settings", metavar="PATH", help="also read the Values of this local.settings.json "
                        "(environment variables win)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    create = commands.add_parser("create", help="create a profile (or return the one with this name)")
    create.add_argument("name", help="the profile's display name, e.g. the customer's name")
    commands.add_parser("list", help="list the service principal's profiles")
    delete = commands.add_parser("delete", help="delete a profile (success when it is already gone)")
    target = delete.add_mutually_exclusive_group(required=True)
    target.add_argument("id", nargs="?", help="the profile id")
    target.add_argument("--name", help="the profile's display name instead of its id")
    workspace = commands.add_parser("create-workspace", help="create a workspace owned by a profile (or return it)")
    workspace.add_argument("--profile", required=True, metavar="ID", help="the profile that owns the workspace")
    workspace.add_argument("--capacity", metavar="ID", help="assign the workspace to this Embedded/Fabric capacity")
    workspace.add_argument("name", help="the workspace's name")
    return parser


def main(argv: Sequence[str] | None = None, *, environ: Mapping[str, str] | None = None) -> int:
    """Run the command in ``argv``; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else 2
    from ..support.errors import BrokerError
    from ..support.redaction import redact

    try:
        client, access = _connect(dict(os.environ if environ is None else environ), args.settings)
        result = _run(args, client, access)
    except CommandError as err:
        print(redact(f"{PROG} {args.command}: {err}"), file=sys.stderr)
        return 1
    except BrokerError as err:
        hint = (" Profiles need the Power BI tenant setting 'Allow service principals to create and use profiles' "
                "(admin portal, Developer settings) for this service principal's security group."
                if err.code in ("powerbi_not_authorized", "powerbi_forbidden") else "")
        print(redact(f"{PROG} {args.command}: {err.detail}{hint} [{err.code}]"), file=sys.stderr)
        return 1
    print(redact(json.dumps(result, indent=2) if args.json else _text(args.command, result)))
    return 0


def _connect(environ: dict[str, str], settings_path: str | None) -> tuple[PowerBIClient, PowerBIAccess]:
    """The Power BI client and the service principal's access, from the settings the app reads."""
    from ..config.contract import SECRET_SETTINGS
    from ..powerbi.access import PowerBIAccess
    from ..powerbi.client import PowerBIClient
    from ..support import redaction
    from .checks import Doctor
    from .cli import read_local_settings

    if settings_path:
        try:
            environ = {**read_local_settings(Path(settings_path)), **environ}
        except (OSError, ValueError) as err:
            raise CommandError(f"{settings_path} cannot be read: {err}") from err
    redaction.register_secrets([environ.get(name) for name in SECRET_SETTINGS])
    doctor = Doctor(environ)
    broker = doctor.load()
    if broker is None:
        fixes = "; ".join(c.detail for c in doctor.results if c.status == "fail") or "the settings are not valid"
        raise CommandError(f"the settings are not valid: {fixes}")
    settings = broker.settings
    if settings.grant_type != "client_credentials":
        raise CommandError(f"profiles belong to a service principal, and POWERBI_GRANT_TYPE={settings.grant_type} "
                           "signs in as a user; run this with POWERBI_GRANT_TYPE=client_credentials.")
    token = broker.tokens.service_principal_token()
    return PowerBIClient(settings.api_url, timeout=settings.http_timeout_seconds), PowerBIAccess(token.value)


def _run(args: argparse.Namespace, client: PowerBIClient, access: PowerBIAccess) -> Any:
    from ..support.errors import PowerBINotFoundError

    if args.command == "list":
        return [{"id": p.id, "displayName": p.display_name} for p in client.all_profiles(access, page=PAGE)]
    if args.command == "create":
        found = _named(client, access, args.name)
        if found is not None:
            return {"id": found.id, "displayName": found.display_name, "created": False}
        made = client.create_profile(access, args.name)
        return {"id": made.id, "displayName": made.display_name, "created": True}
    if args.command == "delete":
        ids = [args.id] if args.id else [p.id for p in [_named(client, access, args.name)] if p is not None]
        deleted = []
        for profile_id in ids:
            try:
                client.delete_profile(access, profile_id)
                deleted.append(profile_id)
            except PowerBINotFoundError:
                pass  # already gone (or never this principal's): nothing left to delete
        return {"deleted": deleted, "alreadyGone": not deleted}
    return _create_workspace(args, client, access)


def _named(client: PowerBIClient, access: PowerBIAccess, name: str) -> Any:
    matches = [p for p in client.list_profiles(access, display_name=name) if p.display_name == name]
    if len(matches) > 1:
        raise CommandError(f"the service principal has {len(matches)} profiles named '{name}'; use their ids "
                           f"({', '.join(p.id for p in matches)}).")
    return matches[0] if matches else None


def _create_workspace(args: argparse.Namespace, client: PowerBIClient, access: PowerBIAccess) -> dict[str, Any]:
    from ..config.reader import is_guid
    from ..powerbi.access import PowerBIAccess

    if not is_guid(args.profile) or (args.capacity is not None and not is_guid(args.capacity)):
        raise CommandError("--profile and --capacity take GUIDs (from 'profiles list' and the capacity's settings).")
    as_profile = PowerBIAccess(access.token, args.profile.lower())
    existing = [w for w in client.list_workspaces(as_profile) if w.name == args.name]
    workspace = existing[0] if existing else client.create_workspace(as_profile, args.name)
    assigned = False
    if args.capacity is not None and not workspace.on_dedicated_capacity:
        client.assign_to_capacity(as_profile, workspace.id, args.capacity)
        assigned = True
    return {"id": workspace.id, "name": workspace.name, "profileId": args.profile.lower(),
            "created": not existing, "capacityAssigned": assigned}


def _text(command: str, result: Any) -> str:
    if command == "list":
        return "\n".join(f"{p['id']}  {p['displayName']}" for p in result) or "(no profiles)"
    if command == "create":
        verb = "created" if result["created"] else "exists"
        return (f"{result['id']}  {result['displayName']}  ({verb})\nmap a customer to it: POWERBI_PROFILES "
                f"{{\"<customer>\": \"{result['id']}\"}} or TokenBroker:Profiles:<customer> = {result['id']}")
    if command == "delete":
        return "already gone" if result["alreadyGone"] else "deleted " + ", ".join(result["deleted"])
    verb = "created" if result["created"] else "exists"
    capacity = ", assigned to the capacity" if result["capacityAssigned"] else ""
    return f"{result['id']}  {result['name']}  ({verb}, owned by profile {result['profileId']}{capacity})"
