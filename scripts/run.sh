#!/usr/bin/env bash
# `make run`: install what is missing, prepare the database, then run every process of the
# stack in the foreground with prefixed logs (honcho). Ctrl-C stops them all. Each Procfile line
# runs under scripts/respawn.sh: a process that crashes is started again, the others keep going.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/lib.sh
export DJANGO_SETTINGS_MODULE=livestream.settings.local
mkdir -p var
say "database: migrating"
.venv/bin/python manage.py migrate --noinput
.venv/bin/python manage.py collectstatic --noinput -v 0
say "starting: web http://127.0.0.1:8000  rtmp rtmp://127.0.0.1:1935/live/<key>  rtmps rtmps://127.0.0.1:1943/live/<key>  srt srt://127.0.0.1:9998?streamid=<key>  edge http://127.0.0.1:8080"
exec .venv/bin/honcho -f Procfile start
