#!/usr/bin/env bash
# azd prepackage hook of the api service (POSIX): compiles function_app and token_broker to bytecode that is
# deployed with them, so that cold starts do not compile them from source (compile_bytecode.py says why and how).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
python="$(command -v python3 || command -v python || true)"
if [ -z "$python" ]; then
  echo "prepackage: no python3 on PATH: bytecode not compiled (cold starts compile it from source)." >&2
  exit 0
fi
exec "$python" "$root/infra/hooks/compile_bytecode.py" "$root"
