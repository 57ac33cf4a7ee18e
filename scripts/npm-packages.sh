#!/usr/bin/env bash
# Defines npm_packages DIR: `npm ci` in DIR (relative to the project root) when its node_modules is missing
# or older than its package-lock.json (a stamp records the lock file's hash). Returns non-zero on failure.
# Sourced by test-deps.sh and offline-stack.sh.
npm_packages() {
  local root dir lock stamp want
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  dir="$root/$1"
  lock="$dir/package-lock.json"
  stamp="$dir/node_modules/.package-lock.sha256"
  want="$(sha256sum "$lock" | cut -d' ' -f1)"
  [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && return 0
  command -v npm >/dev/null || return 1
  echo "== npm ci in $1"
  (cd "$dir" && npm ci --no-audit --no-fund --no-update-notifier --loglevel=error >/dev/null) || return 1
  echo "$want" > "$stamp"
}
