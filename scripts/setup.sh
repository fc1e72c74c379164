#!/usr/bin/env bash
# Installs everything the platform and its tests need on a fresh Debian machine, idempotently:
# apt packages, the Python virtualenv, npm front-end packages, and starts PostgreSQL and Redis
# when they are not already running. Safe to run again: each step skips what is present.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

APT_PACKAGES=(ffmpeg nginx libnginx-mod-rtmp libnginx-mod-stream srt-tools postgresql redis-server chromium nodejs npm python3-venv curl)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# Node.js may come from elsewhere than Debian (e.g. nodesource); a working npm is enough.
if command -v npm >/dev/null 2>&1; then
  missing=("${missing[@]/nodejs}"); missing=("${missing[@]/npm}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if ((${#missing[@]})); then
  say "apt: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  say "python: creating .venv"
  python3 -m venv .venv
fi
stamp=.venv/.requirements-stamp
if [ ! -f "$stamp" ] || [ requirements.txt -nt "$stamp" ] || [ requirements-dev.txt -nt "$stamp" ]; then
  say "pip: installing requirements-dev.txt"
  .venv/bin/pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -c "import django, channels, celery, mongoengine, boto3" # fail loudly if pip failed
  touch "$stamp"
fi

if [ ! -d node_modules ] || [ package.json -nt node_modules ]; then
  say "npm: installing front-end packages"
  npm install --no-audit --no-fund --loglevel=error >/dev/null
  touch node_modules
fi
# Front-end files are served by Django as static files, never from a CDN link.
mkdir -p static/vendor
cp node_modules/hls.js/dist/hls.min.js static/vendor/hls.min.js
[ -f node_modules/hls.js/dist/hls.min.js.map ] && cp node_modules/hls.js/dist/hls.min.js.map static/vendor/ || true
cp node_modules/chart.js/dist/chart.umd.js static/vendor/chart.umd.js 2>/dev/null || cp node_modules/chart.js/dist/chart.umd.min.js static/vendor/chart.umd.js

ensure_postgres
ensure_redis
ensure_database
say "setup complete"
