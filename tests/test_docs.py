"""The documentation keeps up with the code: every problem code and setting is documented."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def problem_codes_in_code() -> set[str]:
    """Every literal ``code`` of a BrokerError subclass or a ``code=`` argument in token_broker/."""
    codes: set[str] = set()
    for path in (ROOT / "token_broker").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "code" and isinstance(node.value, ast.Constant):
                codes.add(node.value.value)
            targets = node.targets if isinstance(node, ast.Assign) else []
            is_code = any(isinstance(t, ast.Name) and t.id == "code" for t in targets)
            if is_code and isinstance(node.value, ast.Constant):  # type: ignore[union-attr]
                codes.add(node.value.value)  # type: ignore[union-attr]
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "AadErrorRule" and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant):
                    codes.add(first.value)
    return {c for c in codes if isinstance(c, str)}


def test_the_scan_finds_codes() -> None:
    codes = problem_codes_in_code()
    assert {"configuration_invalid", "aad_invalid_client_secret", "caller_auth_not_configured"} <= codes


def test_troubleshooting_documents_every_problem_code() -> None:
    text = (ROOT / "docs" / "TROUBLESHOOTING.md").read_text()
    missing = sorted(code for code in problem_codes_in_code() if f"`{code}`" not in text)
    assert missing == []
