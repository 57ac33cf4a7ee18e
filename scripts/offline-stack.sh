#!/usr/bin/env bash
# Starts the offline stack: Entra ID emulator + the function app on http://localhost:7071.
# Then: curl http://localhost:7071/api/token
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bootstrap.sh
. "$root/scripts/bootstrap.sh"
cd "$root"
exec python -m devtools "$@"
