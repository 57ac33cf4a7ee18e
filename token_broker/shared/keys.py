"""A cache key as canonical bytes: the input of the HMAC that names it in Redis.

Keys are tuples of strings, numbers, ``None``, frozen dataclasses (a report reference, an identity) and
frozensets; each becomes one JSON text with a fixed order, so equal keys give equal bytes in every process.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Hashable
from typing import Any


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [type(value).__name__, {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}]
    if isinstance(value, (tuple, list)):
        return [_plain(item) for item in value]
    if isinstance(value, (frozenset, set)):
        return sorted((_plain(item) for item in value), key=lambda item: json.dumps(item, sort_keys=True))
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"a shared cache key cannot hold a {type(value).__name__}")


def canonical(key: Hashable) -> bytes:
    """The canonical bytes of ``key`` (TypeError for anything that has no stable form)."""
    return json.dumps(_plain(key), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
