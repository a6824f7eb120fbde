#!/usr/bin/env bash
# Debian system setup for citytwin: PostGIS, GDAL tools, Chromium, nginx, wrk, Mosquitto, Node.js and
# the Python env. Safe to run again: every step checks before it acts, and says nothing when there is
# nothing to do. Run as root or as a user with sudo.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"

PY="${PYTHON:-python3}"
SYSTEM_PACKAGES=(postgresql-15 postgresql-15-postgis-3 gdal-bin proj-data chromium nginx-light wrk)

need_apt=()
for pkg in "${SYSTEM_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done

# Conditional packages: only when the tool is missing, so tools installed another way (a NodeSource
# Node.js, which bundles npm and conflicts with Debian's npm; a pyenv Python) are left alone.
# The tests start private Mosquitto brokers; Debian puts the binary in /usr/sbin.
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)

# `python3 -m venv` needs Debian's python3-venv (ensurepip) when python3 is the system Python; try
# it rather than guess. Only needed while .venv does not exist yet.
venv_works() {
  local probe
  probe="$(mktemp -d)"
  if "$PY" -m venv "$probe/venv" >/dev/null 2>&1; then rm -rf "$probe"; return 0; fi
  rm -rf "$probe"
  return 1
}
if [ ! -x .venv/bin/python ]; then
  if ! command -v "$PY" >/dev/null 2>&1; then
    need_apt+=(python3 python3-venv)
  elif ! venv_works; then
    need_apt+=(python3-venv)
  fi
fi

if [ ${#need_apt[@]} -gt 0 ]; then
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  echo "citytwin setup: installing system packages: ${need_apt[*]}"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# Python environment (a venv beside the code; reinstall only when pyproject.toml changed).
if [ ! -x .venv/bin/python ]; then
  if ! venv_works; then
    echo "citytwin setup: '$PY -m venv' does not work; install the venv module for $PY" \
         "(or set PYTHON to a Python 3.11+ that has it)" >&2
    exit 1
  fi
  "$PY" -m venv .venv
fi
stamp=.venv/.citytwin-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e ".[dev]"
  touch "$stamp"
fi

# Node tools used by the tests and the web map (gltf-validator, cesium).
if [ -f package.json ]; then
  if [ ! -d node_modules ] || [ package.json -nt node_modules ]; then
    npm install --no-audit --no-fund --silent
    touch node_modules
  fi
fi
