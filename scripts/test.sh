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
exec .venv/bin/pytest "$@"
