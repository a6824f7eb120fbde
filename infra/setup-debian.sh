#!/usr/bin/env bash
# Debian system setup for citytwin: PostGIS, GDAL tools, Chromium, nginx, wrk, and the Python env.
# Safe to run again: every step checks before it acts.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"

SYSTEM_PACKAGES=(postgresql-15 postgresql-15-postgis-3 gdal-bin proj-data chromium nginx-light wrk)

need_apt=()
for pkg in "${SYSTEM_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  echo "citytwin setup: installing system packages: ${need_apt[*]}"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# Python environment (a venv beside the code; reinstall only when pyproject.toml changed).
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
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
