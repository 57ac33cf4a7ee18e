"""Reader for Azure Functions Core Tools' ``local.settings.json``.

The file looks like::

    {
      "IsEncrypted": false,
      "Values": {"FUNCTIONS_WORKER_RUNTIME": "python", "SOME_SETTING": "value"},
      "Host": {"LocalHttpPort": 7071, "CORS": "http://localhost:3000,https://example.org",
               "CORSCredentials": false}
    }

It is a developer file (never deployed) and often absent, e.g. in CI, so a
missing file means "no settings"; a broken one is a loud, precise error.
"""

from __future__ import annotations

import json
import os
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["LocalSettings", "load_local_settings"]


@dataclass
class LocalSettings:
    """The parts of local.settings.json the dev server uses."""

    values: dict[str, str] = field(default_factory=dict)
    cors_origins: list[str] = field(default_factory=list)
    cors_credentials: bool = False
    port: int | None = None

    def apply_to_environ(self, environ: MutableMapping[str, str] | None = None) -> list[str]:
        """Export ``values`` as environment variables, as Core Tools does for the worker.

        Like Core Tools, a variable already set in the environment wins over the file
        (Core Tools logs "Skipping '<name>' from local settings..."); the skipped names
        are returned so a caller can say so too.
        """
        env = os.environ if environ is None else environ
        skipped = []
        for name, value in self.values.items():
            if name in env:
                skipped.append(name)
            else:
                env[name] = value
        return skipped


def _section(data: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    section = data.get(key)
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise ValueError(f"{path}: {key!r} must be a JSON object")
    return section


def load_local_settings(path: Path) -> LocalSettings:
    """Read ``path``; a missing file gives empty settings, a malformed one a ValueError."""
    path = Path(path)
    try:
        # Visual Studio writes this file with a UTF-8 byte order mark.
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return LocalSettings()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level must be a JSON object")
    if data.get("IsEncrypted") is True:
        raise ValueError(
            f"{path}: IsEncrypted is true; this reader only handles plain settings "
            "(run `func settings decrypt` on the machine that encrypted them)"
        )

    values: dict[str, str] = {}
    for name, value in _section(data, "Values", path).items():
        # Core Tools documents Values as strings only; guessing a rendering for numbers,
        # booleans or objects would hide the mistake until the app misreads the setting.
        if not isinstance(value, str):
            raise ValueError(f"{path}: Values.{name} must be a string, got {type(value).__name__}")
        values[name] = value

    host = _section(data, "Host", path)
    port = host.get("LocalHttpPort")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535):
        raise ValueError(f"{path}: Host.LocalHttpPort must be an integer port, got {port!r}")
    cors = host.get("CORS", "")
    if not isinstance(cors, str):
        raise ValueError(f"{path}: Host.CORS must be a comma-separated string of origins")
    credentials = host.get("CORSCredentials", False)
    if not isinstance(credentials, bool):
        raise ValueError(f"{path}: Host.CORSCredentials must be true or false")
    origins = [o.strip().rstrip("/") for o in cors.split(",") if o.strip()]
    return LocalSettings(values=values, cors_origins=origins, cors_credentials=credentials, port=port)
