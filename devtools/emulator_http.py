"""HTTP value types shared by :class:`~devtools.emulator_server.EmulatorServer` and its route handlers.

:class:`Headers` is a case-insensitive header mapping, :class:`Request` is what a handler receives and
:class:`Response` is what it returns.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

__all__ = ["Headers", "Request", "Response"]


class Headers(Mapping[str, str]):
    """Read-only, case-insensitive HTTP header mapping (the last value of a repeated header wins)."""

    def __init__(self, items: Mapping[str, str] | list[tuple[str, str]] | None = None) -> None:
        pairs = list(items.items()) if isinstance(items, Mapping) else list(items or [])
        self._data = {name.lower(): (name, value) for name, value in pairs}

    def __getitem__(self, key: str) -> str:
        return self._data[key.lower()][1]

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._data.values())

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._data


@dataclass(frozen=True)
class Request:
    """An incoming request as seen by a route handler (``path`` is URL-decoded, without query)."""

    method: str
    path: str
    query: dict[str, str]
    headers: Headers
    body: bytes
    path_params: dict[str, str] = field(default_factory=dict)

    def form(self) -> dict[str, str]:
        """Decode an ``application/x-www-form-urlencoded`` body (the last value of a repeated key wins)."""
        return dict(parse_qsl(self.body.decode("utf-8", "replace"), keep_blank_values=True))

    def json(self) -> Any:
        """Decode a JSON body; raises ``ValueError`` when it is not JSON."""
        return json.loads(self.body or b"null")

    def body_dict(self) -> dict[str, Any]:
        """Best-effort dict view of the body: JSON object, form fields, or ``{}``."""
        if "json" in self.headers.get("content-type", "").lower():
            with contextlib.suppress(ValueError):
                parsed = self.json()
                return parsed if isinstance(parsed, dict) else {}
            return {}
        return self.form() if b"=" in self.body else {}


@dataclass(frozen=True)
class Response:
    """What a route handler returns. Content-Length is always added by the server."""

    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = "application/json; charset=utf-8"

    @classmethod
    def json(cls, payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
        """Serialise ``payload`` as a JSON response."""
        return cls(status, json.dumps(payload).encode(), dict(headers or {}))
