#!/usr/bin/env bash
# Runs the test suite (pytest) against the built-in emulators. Extra arguments go to pytest.
# First installs what the suite needs: .venv (bootstrap.sh), then the npm packages and Chromium
# (test-deps.sh); what cannot be installed stops the run with one line saying what to install.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bootstrap.sh
. "$root/scripts/bootstrap.sh"
# shellcheck source=test-deps.sh
. "$root/scripts/test-deps.sh"
cd "$root"
exec python -m pytest "$@"
