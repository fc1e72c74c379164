#!/usr/bin/env bash
# `make test`: install what is missing, start PostgreSQL and Redis if needed, run pytest.
# Integration tests start SeaweedFS, nginx-rtmp and Celery workers themselves (tests/fixtures).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p test-output
export DJANGO_SETTINGS_MODULE=livestream.settings.test
.venv/bin/python manage.py makemigrations --check --dry-run >/dev/null || {
  echo "Model changes without migrations: run manage.py makemigrations" >&2; exit 1; }
# --create-db: a fresh test database every run, so rows committed by a run that crashed
# (transactional tests) cannot leak into the next one. (--reuse-db stays for quick local runs.)
exec .venv/bin/pytest --create-db "$@"
