#!/usr/bin/env bash
# Starts the offline stack: Entra ID and Power BI emulators + the function app on http://localhost:7071.
# Then: curl http://localhost:7071/api/token. Options: python -m devtools --help (--doctor checks a running stack).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bootstrap.sh
. "$root/scripts/bootstrap.sh"
# shellcheck source=npm-packages.sh
. "$root/scripts/npm-packages.sh"
case " $* " in
  *" --doctor "*|*" --help "*|*" -h "*) ;;
  *) npm_packages samples/spa || echo "Note: the sample SPA (/samples/spa/) needs its npm packages: install Node.js" \
       "with npm, then run 'npm ci' in samples/spa" >&2 ;;
esac
cd "$root"
exec python -m devtools "$@"
