# One image for every role of the platform (web, worker, ingest, rtmp, rtmps, srt, edge): Debian's
# ffmpeg and nginx with the RTMP and stream (RTMPS) modules, libsrt (SRT), the Python app, and
# hls.js from npm.
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 DJANGO_SETTINGS_MODULE=livestream.settings.production
RUN apt-get update && apt-get install -y --no-install-recommends \
        ca-certificates ffmpeg nginx libnginx-mod-rtmp libnginx-mod-stream libsrt1.5-gnutls nodejs npm postgresql-client \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY package.json ./
RUN npm install --omit=dev --no-audit --no-fund && mkdir -p static/vendor \
    && cp node_modules/hls.js/dist/hls.min.js static/vendor/ \
    && cp node_modules/chart.js/dist/chart.umd.js static/vendor/
COPY . .
# Static files need no secrets: collect them with the base settings (production settings
# refuse to load without real ones, which the image never contains).
RUN DJANGO_SETTINGS_MODULE=livestream.settings.base python manage.py collectstatic --noinput
EXPOSE 8000 1935 8080
# --no-proxy-headers: the client's address comes from TRUSTED_PROXIES (livestream/clientaddr.py).
CMD ["uvicorn", "livestream.asgi:application", "--host", "0.0.0.0", "--port", "8000", "--workers", "2", "--no-access-log", "--ws-per-message-deflate", "false", "--ws-max-size", "8192", "--no-proxy-headers"]
