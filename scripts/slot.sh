#!/usr/bin/env bash
# Run a command in an isolated "slot" so several test runs can share this machine at once:
#   bash scripts/slot.sh N COMMAND...     (N = 1..20), e.g. bash scripts/slot.sh 3 .venv/bin/pytest tests/chat
# Slot N gets its own Redis (port 6400+N, started here if absent, no persistence), its own
# PostgreSQL database (livestream_sN; pytest makes test_livestream_sN), and its own SeaweedFS
# bound to 127.0.0.(20+N):(8340+N) (the s3 fixture starts it). Nothing else is shared but the machine.
set -euo pipefail
slot="${1:?usage: scripts/slot.sh N COMMAND...}"; shift
cd "$(dirname "$0")/.."
port=$((6400 + slot))
if ! redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1; then
  # The daemon must not inherit our open files beyond stdio: run under `flock /tmp/heavy.lock`,
  # it would hold the lock for as long as it lives and block every other heavy test run.
  for fd in /proc/$$/fd/*; do fd=${fd##*/}; [ "$fd" -gt 2 ] && eval "exec $fd>&-"; done
  redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
    --logfile "/tmp/redis-slot-$slot.log" >/dev/null
  for _ in $(seq 1 20); do redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 && break; sleep 0.25; done
fi
export TEST_REDIS_URL="redis://127.0.0.1:$port/10"
export TEST_CELERY_BROKER_URL="redis://127.0.0.1:$port/11"
export TEST_CHANNEL_REDIS_URL="redis://127.0.0.1:$port/12"
export REDIS_URL="redis://127.0.0.1:$port/0" CELERY_BROKER_URL="redis://127.0.0.1:$port/1"
export CHANNEL_REDIS_URL="redis://127.0.0.1:$port/2"
export DATABASE_URL="postgres://postgres:postgres@127.0.0.1:5432/livestream_s$slot"
# weed mini also binds its S3 port on 127.0.0.1: a port of its own per slot too.
export S3_ENDPOINT_URL="http://127.0.0.$((20 + slot)):$((8400 + slot))"
export DJANGO_SETTINGS_MODULE="${DJANGO_SETTINGS_MODULE:-livestream.settings.test}"
exec "$@"
