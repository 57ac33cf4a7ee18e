"""The OpenAPI 3.1 description of the broker's endpoints, served at ``GET /api/openapi.json``.

``openapi.yaml`` at the repository root is the source. ``openapi.json`` next to this module is its JSON
rendering, deployed with the app so that serving it needs no YAML parser (and no import beyond the
standard library on a cold start). ``tests/test_openapi.py`` fails when the two differ;
``python -m tests.test_openapi`` regenerates the JSON.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

DOCUMENT_PATH = Path(__file__).with_name("openapi.json")


@functools.cache
def document() -> dict[str, Any]:
    """The description, read from disk once per process. Callers must not modify it: it is shared."""
    with DOCUMENT_PATH.open(encoding="utf-8") as file:
        loaded = json.load(file)
    if not isinstance(loaded, dict):
        raise ValueError(f"{DOCUMENT_PATH.name} is not a JSON object")
    return loaded
