#!/usr/bin/env bash
# Runs the test suite (pytest) against the built-in emulators. Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bootstrap.sh
. "$root/scripts/bootstrap.sh"
cd "$root"
exec python -m pytest "$@"
