"""The README's test command installs what the suite needs, or stops before any test with one line."""

from __future__ import annotations

import os
import subprocess

from tests.conftest import ROOT


def test_the_test_command_stops_before_pytest_with_one_line_when_chromium_is_missing() -> None:
    environ = {**os.environ, "BROKER_CHROMIUM_PATH": "/nonexistent/chromium", "BROKER_SYSTEM_INSTALL": "0"}
    result = subprocess.run(["bash", "scripts/test.sh", "--collect-only", "-q"], cwd=ROOT, env=environ,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 3, result.stdout + result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("scripts/test.sh: cannot run the tests: BROKER_CHROMIUM_PATH=/nonexistent/chromium")
    assert "collected" not in result.stdout and "test_" not in result.stdout  # pytest never ran


def test_ci_installs_nothing_the_suite_needs_before_the_readme_command() -> None:
    """.ci/run proves the README: whatever the suite needs is installed by scripts/test.sh itself."""
    ci = (ROOT / ".ci" / "run").read_text()
    before_tests = ci[: ci.index("bash scripts/test.sh")]
    assert "npm" not in before_tests and "chromium" not in before_tests and "apt-get" not in before_tests
    deps = (ROOT / "scripts" / "test-deps.sh").read_text()
    assert "samples/spa tools/actionlint" in deps and "apt-get install" in deps
    assert '. "$root/scripts/test-deps.sh"' in (ROOT / "scripts" / "test.sh").read_text()
