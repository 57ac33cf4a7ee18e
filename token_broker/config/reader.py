"""Reading app settings while collecting every problem instead of stopping at the first.

Used by every settings module; each problem names its setting and says what to do, and never repeats
the value it found: a secret pasted into the wrong setting must not come back in a response or a log line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeGuard
from urllib.parse import urlsplit

from ..support.errors import SettingProblem

KEY_VAULT_REFERENCE_PREFIX = "@Microsoft.KeyVault("
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")


@dataclass(frozen=True)
class SettingSpec:
    """One app setting of the public contract."""

    name: str
    description: str
    default: str | None = None
    secret: bool = False


def is_guid(value: object) -> TypeGuard[str]:
    """True for a GUID in its usual 8-4-4-4-12 hex form (the form Entra ID and Power BI ids take)."""
    return isinstance(value, str) and bool(_GUID.match(value))


class SettingReader:
    """Typed access to raw settings with defaults from the specs; problems accumulate in ``problems``."""

    def __init__(self, environ: Mapping[str, str], specs: tuple[SettingSpec, ...]) -> None:
        self.environ = environ
        self.defaults = {spec.name: spec.default for spec in specs}
        self.problems: list[SettingProblem] = []

    def raw(self, name: str) -> str | None:
        """The trimmed value, or the default when unset or blank."""
        value = self.environ.get(name)
        if value is None or not value.strip():
            return self.defaults.get(name)
        return value.strip()

    def is_set(self, name: str) -> bool:
        """True when the setting has a non-blank value in the environment (defaults do not count)."""
        return bool((self.environ.get(name) or "").strip())

    def problem(self, name: str, message: str, *, severity: str = "error") -> None:
        self.problems.append(SettingProblem(name, message, severity))

    def required(self, name: str, why: str) -> str | None:
        value = self.raw(name)
        if value is None:
            self.problem(name, f"{name} is not set; {why}")
        return value

    def secret(self, name: str, why: str) -> str | None:
        """A required secret; an unresolved Key Vault reference is a problem, never a value."""
        value = self.required(name, why)
        if value is not None and value.startswith(KEY_VAULT_REFERENCE_PREFIX):
            # The platform leaves the literal reference in place when it cannot resolve it.
            self.problem(
                name,
                f"{name} is a Key Vault reference that the platform did not resolve. Check that the "
                "function app's identity has the 'Key Vault Secrets User' role on the vault, that "
                "keyVaultReferenceIdentity names the user-assigned identity if you use one, that the "
                "vault's network rules let the app in, and that the secret exists and is enabled.",
            )
            return None
        return value

    def choice(self, name: str, allowed: tuple[str, ...]) -> str | None:
        value = self.raw(name)
        if value is None:
            return None
        if value.lower() not in {choice.lower() for choice in allowed}:
            self.problem(name, f"{name} must be one of {', '.join(allowed)}.")
            return None
        return value.lower()

    def flag(self, name: str) -> bool:
        value = (self.raw(name) or "false").lower()
        if value not in _TRUE + _FALSE:
            self.problem(name, f"{name} must be true or false.")
            return False
        return value in _TRUE

    def csv(self, name: str) -> tuple[str, ...]:
        """A comma-separated list, trimmed, without empty items or duplicates."""
        return tuple(dict.fromkeys(item.strip() for item in (self.raw(name) or "").split(",") if item.strip()))

    def https_url(self, name: str, *, allow_path: bool) -> str:
        value = self.raw(name) or ""
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.hostname:
            self.problem(name, f"{name} must be an https:// URL.")
        elif not allow_path and parts.path.strip("/"):
            self.problem(name, f"{name} must be a host URL without a path, such as {self.defaults[name]}.")
        elif parts.query or parts.fragment:
            self.problem(name, f"{name} must not have a query string or fragment.")
        return value.rstrip("/")

    def integer(self, name: str, *, minimum: int, maximum: int) -> int:
        text = self.raw(name) or "0"
        try:
            value = int(text)
        except ValueError:
            self.problem(name, f"{name} must be a whole number.")
            return int(self.defaults.get(name) or 0)
        if not minimum <= value <= maximum:
            self.problem(name, f"{name} must be between {minimum} and {maximum}.")
        return value

    def number(self, name: str, *, minimum: float, maximum: float) -> float:
        text = self.raw(name) or "0"
        try:
            value = float(text)
        except ValueError:
            self.problem(name, f"{name} must be a number of seconds.")
            return float(self.defaults.get(name) or 0)
        if not minimum <= value <= maximum:
            self.problem(name, f"{name} must be between {minimum:g} and {maximum:g}.")
        return value
