"""Settings shared by every role (local, test, production).

Every value comes from an environment variable (django-environ; all listed in .env.example).
Local defaults are the README's addresses: web :8000, RTMP :1935, HLS edge :8080, S3 :8333,
PostgreSQL and Redis on 127.0.0.1. Production (``settings.production``) removes the defaults
of secrets.
"""

import re
import socket
from pathlib import Path
from urllib.parse import urlparse

import django_stubs_ext
import environ
from django.core.exceptions import ImproperlyConfigured

from livestream.dbpool import build_database_settings

# Lets runtime code subscript generic Django classes (ModelAdmin[Stream]) as the stubs do.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent.parent
env = environ.Env()
# A local .env is read when present; real deployments set the environment instead.
env.read_env(str(BASE_DIR / ".env"), overwrite=False)


def _validated_url(name: str, default: str, schemes: tuple[str, ...]) -> str:
    """Read a URL setting and fail at start-up (not at first use) when it is malformed."""
    value: str = env.str(name, default=default)
    parsed = urlparse(value)
    if parsed.scheme not in schemes or not parsed.netloc:
        raise ImproperlyConfigured(f"{name}={value!r} must be a {'/'.join(schemes)} URL")
    return value.rstrip("/")


# Development-only values of the secrets below: settings.production refuses each of them.
DEV_ONLY_SECRETS = {
    "DJANGO_SECRET_KEY": "local-dev-only-not-secret-5c1f0e9d",
    "S3_ACCESS_KEY": "livestream",
    "S3_SECRET_KEY": "livestream-local-secret",
    "SIMULCAST_KEY_SECRET": "local-dev-only-simulcast-key-secret-7b2e41",
    "HLS_PATH_SECRET": "local-dev-only-hls-path-secret-3d90a8",
}

# --- Core -------------------------------------------------------------------------------
# Never use the local default outside development: settings.production requires a real key.
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default=DEV_ONLY_SECRETS["DJANGO_SECRET_KEY"])
# Debug pages leak settings and stack traces: off unless explicitly enabled.
DEBUG = env.bool("DJANGO_DEBUG", default=False)
# Host names this site answers to.
ALLOWED_HOSTS: list[str] = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
# Origins trusted for CSRF on unsafe methods (scheme://host:port).
CSRF_TRUSTED_ORIGINS: list[str] = env.list(
    "DJANGO_CSRF_TRUSTED_ORIGINS", default=["http://127.0.0.1:8000", "http://localhost:8000"]
)

# --- Public URLs of the contracts --------------------------------------------------------
# Where browsers reach the web app (used in absolute links such as watch_url).
PUBLIC_WEB_URL = _validated_url("PUBLIC_WEB_URL", "http://127.0.0.1:8000", ("http", "https"))
# RTMP "Server" URL shown to streamers (without the key); publishers push to <url>/<key>.
RTMP_PUBLIC_URL = _validated_url("RTMP_PUBLIC_URL", "rtmp://127.0.0.1:1935/live", ("rtmp", "rtmps"))
# Base URL of the HLS edge cache (the CDN) that viewers fetch playlists and segments from.
HLS_EDGE_URL = _validated_url("HLS_EDGE_URL", "http://127.0.0.1:8080", ("http", "https"))
# Key of the HMAC that makes a session's HLS path unguessable (live/<stream>/<session>-<tag>,
# streams.playback.session_prefix): a private preview cannot be found by counting session ids.
# Production requires a real one. Changing it keeps existing sessions (their stored
# storage_prefix) playable; only sessions started afterwards get tags of the new key.
HLS_PATH_SECRET = env.str("HLS_PATH_SECRET", default=DEV_ONLY_SECRETS["HLS_PATH_SECRET"])

# --- Applications -------------------------------------------------------------------------
INSTALLED_APPS = [
    "daphne",
    "accounts.apps.AdminConfig",  # django.contrib.admin, with the login throttled (accounts/admin_site.py)
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "channels",
    "pgtrigger",
    "pghistory",
    "pghistory.admin",
    "livestream",
    "accounts",
    "streams",
    "transcoding",
    "chat",
    "analytics",
    "webhooks",
    "highlights",
    "clips",
    "simulcast",
]

MIDDLEWARE = [
    # First, so its process_exception runs last: a view failing on an unavailable database
    # answers 503 + Retry-After (livestream/unavailable.py).
    "livestream.unavailable.DatabaseUnavailableMiddleware",
    # Before SecurityMiddleware: X-Forwarded-Proto counts only from a trusted proxy.
    "livestream.clientaddr.ForwardedHeadersMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "pghistory.middleware.HistoryMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "livestream.urls"
ASGI_APPLICATION = "livestream.asgi.application"
WSGI_APPLICATION = "livestream.wsgi.application"
AUTH_USER_MODEL = "accounts.User"
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "streams:dashboard"
LOGOUT_REDIRECT_URL = "streams:directory"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Databases ----------------------------------------------------------------------------
# PostgreSQL holds accounts, streams, sessions, chat and the trigger-written change history.
DATABASES = {"default": env.db("DATABASE_URL", default="postgres://postgres:postgres@127.0.0.1:5432/livestream")}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
# Every process takes its connections from its own bounded pool (Django's, psycopg 3), never
# more than DATABASE_POOL_MAX; see docs/adr/0009-database-connections.md for the sums per
# deployment. The Procfile and compose give web processes WEB_DATABASE_POOL_MAX instead.
# 0 turns the pool off: a connection per request or task, closed after it (behind PgBouncer).
DATABASE_POOL_MAX = env.int("DATABASE_POOL_MAX", default=2)
# Connections a pool keeps open while idle (it shrinks back to this after DATABASE_POOL_MAX_IDLE_S).
DATABASE_POOL_MIN = env.int("DATABASE_POOL_MIN", default=1)
DATABASE_POOL_MAX_IDLE_S = env.float("DATABASE_POOL_MAX_IDLE_S", default=300.0)
# How long a request or task waits for a free connection (or for PostgreSQL to come back)
# before giving up: web requests then answer 503 with Retry-After (livestream/unavailable.py).
DATABASE_POOL_TIMEOUT_S = env.float("DATABASE_POOL_TIMEOUT_S", default=10.0)
# Seconds a connection attempt may take (an unreachable host fails instead of hanging).
DATABASE_CONNECT_TIMEOUT_S = env.int("DATABASE_CONNECT_TIMEOUT_S", default=5)
# Retry-After of the 503 answered while PostgreSQL is unavailable.
DATABASE_RETRY_AFTER_S = env.int("DATABASE_RETRY_AFTER_S", default=5)
# application_name of the connections (what pg_stat_activity shows for each process).
DATABASE_APPLICATION_NAME = env.str("DATABASE_APPLICATION_NAME", default="livestream")
DATABASES["default"] = build_database_settings(
    DATABASES["default"],
    pool_max=DATABASE_POOL_MAX,
    pool_min=DATABASE_POOL_MIN,
    pool_timeout_s=DATABASE_POOL_TIMEOUT_S,
    max_idle_s=DATABASE_POOL_MAX_IDLE_S,
    connect_timeout_s=DATABASE_CONNECT_TIMEOUT_S,
    application_name=DATABASE_APPLICATION_NAME,
)

# Redis of the live working set: pipeline state and raw chunks (transcoding/state.py), viewer
# presence, chat duplicate/slow-mode marks. Celery, Channels and the cache have URLs of their own.
REDIS_URL = _validated_url("REDIS_URL", "redis://127.0.0.1:6379/0", ("redis", "rediss"))
# REDIS_URL is a node of a Redis Cluster (redis-py's cluster client; database 0 only). Every key
# of a live session shares one hash slot, so the live working set shards by session.
REDIS_CLUSTER = env.bool("REDIS_CLUSTER", default=False)
if REDIS_CLUSTER and urlparse(REDIS_URL).path.strip("/") not in ("", "0"):
    raise ImproperlyConfigured(f"REDIS_URL={REDIS_URL!r}: a Redis Cluster has database 0 only")
# Django's cache (rate limits, cached sessions): plain Redis (Django's RedisCache does not speak
# Cluster), so it has its own URL.
CACHE_REDIS_URL = _validated_url("CACHE_REDIS_URL", "redis://127.0.0.1:6379/3", ("redis", "rediss"))
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": CACHE_REDIS_URL,
        "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="ls"),
    }
}
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"

# MongoDB (mongoengine): stream metadata and analytics. Unreachable -> recording is off, the
# platform keeps streaming (see livestream/mongo.py).
MONGODB_URI = env.str("MONGODB_URI", default="mongodb://127.0.0.1:27017/livestream")
# Seconds to wait for MongoDB at start-up before declaring metadata recording off.
MONGODB_TIMEOUT_S = env.float("MONGODB_TIMEOUT_S", default=1.5)
# Tests set this to use mongomock instead of a server (no MongoDB server is installable here).
MONGODB_MOCK = env.bool("MONGODB_MOCK", default=False)

# --- Channels -----------------------------------------------------------------------------
# Dedicated Redis DB for the channel layer (plain Redis: channels_redis does not speak Cluster).
# redis-py pools default to socket_timeout=5 and max_connections=100, which break the layer
# under load: both are set explicitly. A pooled connection idle for 10 s is checked before
# use, so a Redis restart costs no event.
CHANNEL_REDIS_URL = _validated_url("CHANNEL_REDIS_URL", "redis://127.0.0.1:6379/2", ("redis", "rediss"))
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {
            "hosts": [
                {
                    "address": CHANNEL_REDIS_URL,
                    "socket_timeout": None,
                    "max_connections": 10000,
                    "health_check_interval": 10,
                }
            ],
            "prefix": env.str("CHANNEL_PREFIX", default="ls"),
        },
    }
}

# --- Celery -------------------------------------------------------------------------------
# The broker: plain Redis (or AMQP); Celery's Redis transport does not speak Cluster.
CELERY_BROKER_URL = _validated_url("CELERY_BROKER_URL", "redis://127.0.0.1:6379/1", ("redis", "rediss", "amqp"))
# Results are not needed by the pipeline (state lives in Redis keys); keep none.
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_TASK_DEFAULT_QUEUE = "default"
# Webhook deliveries wait on receivers chosen by users: they get their own queue and worker
# pool (Procfile `webhooks`, compose `webhooks`) so a slow receiver never delays a transcode.
CELERY_TASK_ROUTES = {
    "transcoding.tasks.transcode_chunk": {"queue": "transcode"},
    "webhooks.tasks.*": {"queue": "webhooks"},
}
# A worker takes one task at a time so a long transcode never hides queued chunks.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Processes of a `celery worker` without --concurrency (compose; the Procfile passes the same
# variable). Each has its own database pool: part of the connection budget (docs/adr/0009).
CELERY_WORKER_CONCURRENCY = env.int("WORKER_CONCURRENCY", default=2)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Never give up on the broker: a worker waits out a Redis restart of any length (the default
# of 100 attempts ends the worker after a long outage) and reconnects by itself.
CELERY_BROKER_CONNECTION_RETRY = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
# A task (message) whose worker vanished is redelivered after this many seconds (Redis broker).
# It must exceed the longest countdown/ETA of any task (webhook retries wait up to
# WEBHOOK_RETRY_BACKOFF_MAX_S), so live chunks do not rely on it: their transcode lease
# (TRANSCODE_LEASE_SECONDS) lets the reconciler queue them again within the live deadline.
CELERY_VISIBILITY_TIMEOUT_S = env.int("CELERY_VISIBILITY_TIMEOUT_S", default=900)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": CELERY_VISIBILITY_TIMEOUT_S,
    # Reconnect instead of blocking for ever on a half-open socket after a Redis restart.
    "socket_timeout": 30,
    "socket_connect_timeout": 5,
    "health_check_interval": 10,
    "retry_on_timeout": True,
}
# A worker process is replaced after this many tasks (bounds leaks of long-lived processes:
# codec contexts, fragmented memory); 0 = never.
CELERY_WORKER_MAX_TASKS_PER_CHILD = env.int("CELERY_WORKER_MAX_TASKS_PER_CHILD", default=200) or None
# Workers keep running tasks while the broker is away; what they could not acknowledge is
# redelivered (tasks are idempotent).
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Runs tasks inline; unit tests of task logic only (integration tests use a real worker).
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {}

# --- S3 origin ----------------------------------------------------------------------------
# Endpoint of the S3 API (SeaweedFS locally; empty in production means AWS itself).
S3_ENDPOINT_URL = env.str("S3_ENDPOINT_URL", default="http://127.0.0.1:8333")
S3_REGION = env.str("S3_REGION", default="us-east-1")
# Credentials of the identity that writes segments (the local SeaweedFS config defines these).
S3_ACCESS_KEY = env.str("S3_ACCESS_KEY", default=DEV_ONLY_SECRETS["S3_ACCESS_KEY"])
S3_SECRET_KEY = env.str("S3_SECRET_KEY", default=DEV_ONLY_SECRETS["S3_SECRET_KEY"])
# Bucket holding HLS segments, playlists and recordings; the edge reads it anonymously.
S3_BUCKET = env.str("S3_BUCKET", default="livestream")

# --- RTMP ingest --------------------------------------------------------------------------
RTMP_BIND = env.str("RTMP_BIND", default="127.0.0.1")
RTMP_PORT = env.int("RTMP_PORT", default=1935)
# nginx-rtmp's statistics and control page (the ingest supervisor of this node reads it):
# RTMP_STAT_BIND:RTMP_STAT_PORT, a loopback address (one per node when several share a host).
RTMP_STAT_PORT = env.int("RTMP_STAT_PORT", default=1936)
RTMP_STAT_BIND = env.str("RTMP_STAT_BIND", default="127.0.0.1")
# This ingest node's id (docs/pipeline.md "Ingest nodes"): its nginx-rtmp callbacks carry it,
# its supervisor takes only its commands and registers it in Redis. Lowercase letters, digits
# and "-" (a Kubernetes pod name fits); empty = this host's name, lowercased.
INGEST_NODE_ID = env.str("INGEST_NODE_ID", default="")
# The /control URL other roles (the web) use to reach this node's nginx-rtmp; the node's
# supervisor registers it in Redis. Empty = RTMP_CONTROL_URL, else
# http://RTMP_STAT_BIND:RTMP_STAT_PORT/control (roles on the same host).
INGEST_NODE_CONTROL_URL = env.str("INGEST_NODE_CONTROL_URL", default="").rstrip("/")
# A node whose supervisor has not renewed its registration for this long is dead: its
# sessions can be taken over at once by a publish on another node.
INGEST_NODE_TTL_SECONDS = env.int("INGEST_NODE_TTL_SECONDS", default=3)
INGEST_NODE_ID = INGEST_NODE_ID or re.sub(r"[^a-z0-9-]", "-", socket.gethostname().lower())[:63].strip("-") or "node1"
if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", INGEST_NODE_ID):
    raise ImproperlyConfigured("INGEST_NODE_ID: lowercase letters, digits and '-', at most 63 characters")
# Shared secret nginx-rtmp sends with its callbacks (query string); empty disables the check.
RTMP_CALLBACK_SECRET = env.str("RTMP_CALLBACK_SECRET", default="")
# nginx-rtmp's control interface (drop a publisher when its stream is deleted or re-keyed):
# empty = http://127.0.0.1:RTMP_STAT_PORT/control, for a web role on the ingest host. Where
# they run apart (compose), nginx-rtmp also listens on RTMP_CONTROL_BIND:RTMP_CONTROL_PORT for
# /control only, answering requests that carry RTMP_CALLBACK_SECRET, and the web role sets
# RTMP_CONTROL_URL to it (e.g. http://rtmp:1937/control).
RTMP_CONTROL_URL = env.str("RTMP_CONTROL_URL", default="").rstrip("/")
RTMP_CONTROL_BIND = env.str("RTMP_CONTROL_BIND", default="")
RTMP_CONTROL_PORT = env.int("RTMP_CONTROL_PORT", default=1937)
# --- RTMPS and SRT ingest (docs/adr/0032-srt-and-rtmps-ingest.md) ---------------------------
# RTMPS: nginx's stream module ends TLS on RTMPS_BIND:RTMPS_PORT and passes the plain RTMP on
# to nginx-rtmp (deploy/nginx/rtmps.conf.template; 0 = no RTMPS listener). The certificate and
# its key are PEM files; empty locally = a self-signed pair made in VAR_DIR/tls by
# `manage.py devstack rtmps`; required in production.
RTMPS_BIND = env.str("RTMPS_BIND", default="127.0.0.1")
RTMPS_PORT = env.int("RTMPS_PORT", default=1943)
RTMPS_CERT_FILE = env.str("RTMPS_CERT_FILE", default="")
RTMPS_KEY_FILE = env.str("RTMPS_KEY_FILE", default="")
# RTMPS "Server" URL shown to streamers (without the key).
RTMPS_PUBLIC_URL = _validated_url("RTMPS_PUBLIC_URL", "rtmps://127.0.0.1:1943/live", ("rtmps",))
# SRT: `manage.py run_srt` listens on SRT_BIND:SRT_PORT (UDP; 0 = no SRT listener), takes the
# stream key from the SRT stream id and relays each publish into this node's nginx-rtmp.
SRT_BIND = env.str("SRT_BIND", default="127.0.0.1")
SRT_PORT = env.int("SRT_PORT", default=9998)
# Base of the SRT URL shown to streamers (srt://host:port; ?streamid=<key>&latency=... added).
SRT_PUBLIC_URL = _validated_url("SRT_PUBLIC_URL", "srt://127.0.0.1:9998", ("srt",))
# The listener's receive latency in ms (SRT uses the larger of both sides' values).
SRT_LATENCY_MS = env.int("SRT_LATENCY_MS", default=200)
# Optional SRT encryption passphrase (10-79 characters) every SRT publisher must then use.
SRT_PASSPHRASE = env.str("SRT_PASSPHRASE", default="")
if SRT_PASSPHRASE and not 10 <= len(SRT_PASSPHRASE) <= 79:
    raise ImproperlyConfigured("SRT_PASSPHRASE must be 10 to 79 characters long (or empty: no encryption)")
if not 20 <= SRT_LATENCY_MS <= 8000:
    raise ImproperlyConfigured(f"SRT_LATENCY_MS={SRT_LATENCY_MS!r} must be between 20 and 8000")
# SRT publishers relayed at once by one listener (more are refused at the handshake).
SRT_MAX_PUBLISHERS = env.int("SRT_MAX_PUBLISHERS", default=50)
# Where the SRT listener relays publishes (RTMP, without the key); empty = this node's
# nginx-rtmp, rtmp://RTMP_BIND:RTMP_PORT/live (127.0.0.1 when RTMP_BIND is a wildcard).
SRT_RELAY_RTMP_URL = env.str("SRT_RELAY_RTMP_URL", default="").rstrip("/")
EDGE_BIND = env.str("EDGE_BIND", default="127.0.0.1")
EDGE_PORT = env.int("EDGE_PORT", default=8080)
# Runtime files of the generated nginx configs, SeaweedFS data, logs.
VAR_DIR = Path(env.str("LIVESTREAM_VAR_DIR", default=str(BASE_DIR / "var")))

# --- Live pipeline ------------------------------------------------------------------------
# Chunk (and so segment) duration in seconds of a stream in the "normal" latency mode.
CHUNK_SECONDS = env.float("CHUNK_SECONDS", default=2.0)
# Chunk duration of a stream in the "low" latency mode (the default for new streams).
LOW_LATENCY_CHUNK_SECONDS = env.float("LOW_LATENCY_CHUNK_SECONDS", default=1.0)
for _name in ("CHUNK_SECONDS", "LOW_LATENCY_CHUNK_SECONDS"):
    if not 0.5 <= globals()[_name] <= 6.0:
        raise ImproperlyConfigured(f"{_name}={globals()[_name]!r} must be between 0.5 and 6 seconds")
# Low-latency HLS (ADR 0031): streams in the "low" latency mode publish CMAF with partial
# segments of at most LL_PART_SECONDS (PART-TARGET; 0.2-1.0 s); players stay PART-HOLD-BACK
# (3 x PART-TARGET) behind the newest part. Parts are kept in Redis LL_PART_TTL_SECONDS (the
# origin serves them from there; S3 keeps the full segments).
LL_PART_SECONDS = env.float("LL_PART_SECONDS", default=0.25)
if not 0.2 <= LL_PART_SECONDS <= 1.0:
    raise ImproperlyConfigured(f"LL_PART_SECONDS={LL_PART_SECONDS!r} must be between 0.2 and 1 second")
LL_PART_TTL_SECONDS = env.int("LL_PART_TTL_SECONDS", default=30)
# How long the origin holds a blocking playlist or preload-hinted part request (RFC 8216bis
# 6.2.5.2 asks for an answer within three target durations).
LL_HOLD_SECONDS = env.float("LL_HOLD_SECONDS", default=6.0)
# How far back a live viewer can seek (the DVR window of the live index.m3u8); 0 = the whole
# broadcast so far (an EVENT playlist whose size grows with the broadcast).
DVR_WINDOW_SECONDS = env.int("DVR_WINDOW_SECONDS", default=1800)
# How long a dropped publisher may come back and continue the same session.
RECONNECT_GRACE_SECONDS = env.int("RECONNECT_GRACE_SECONDS", default=30)
# Segments kept in a live media playlist's sliding window.
PLAYLIST_WINDOW = env.int("PLAYLIST_WINDOW", default=6)

# --- Quotas (streams/quotas.py) ---------------------------------------------------------------
# Streams one user may own; creating one more is refused (dashboard form error, API 403
# ``stream_limit_reached``). 0 = no limit. Operators override it per user in the admin.
MAX_STREAMS_PER_USER = env.int("MAX_STREAMS_PER_USER", default=10)
# Streams of one user that may be live at the same time; a publish beyond it is refused by
# on_publish with the reason in the log and on the stream's dashboard page. 0 = no limit.
MAX_LIVE_PER_USER = env.int("MAX_LIVE_PER_USER", default=2)

# --- Clips (clips/, docs/clips.md) ----------------------------------------------------------
# Longest clip in seconds (the last N seconds of a live stream, or a replay range).
CLIP_MAX_SECONDS = env.int("CLIP_MAX_SECONDS", default=60)
# Clips one user may create per minute (429 beyond) and per day (403 clip_quota_reached; 0 = no limit).
CLIP_RATE_PER_MINUTE = env.int("CLIP_RATE_PER_MINUTE", default=6)
CLIPS_PER_USER_PER_DAY = env.int("CLIPS_PER_USER_PER_DAY", default=100)

# --- Auth and security --------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Reverse proxies / load balancers whose X-Forwarded-For is believed (CIDRs, comma separated).
# Empty: the TCP peer is the client, whatever headers say (livestream/clientaddr.py).
TRUSTED_PROXIES: list[str] = env.list("TRUSTED_PROXIES", default=[])
# Failed logins allowed per (username, IP) and per IP within LOGIN_RATE_WINDOW_S.
LOGIN_RATE_LIMIT = env.int("LOGIN_RATE_LIMIT", default=5)
LOGIN_RATE_WINDOW_S = env.int("LOGIN_RATE_WINDOW_S", default=300)
# Sign-up attempts (page and API together) allowed per client address within the window.
SIGNUP_RATE_LIMIT = env.int("SIGNUP_RATE_LIMIT", default=10)
SIGNUP_RATE_WINDOW_S = env.int("SIGNUP_RATE_WINDOW_S", default=3600)
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # the watch page's JS reads it for chat moderation POSTs
X_FRAME_OPTIONS = "DENY"  # the embed view opts out explicitly
SECURE_CONTENT_TYPE_NOSNIFF = True

# --- REST API -----------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticatedOrReadOnly"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 20,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
        "rest_framework.filters.SearchFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # DRF's throttles with the client's address from livestream.clientaddr (TRUSTED_PROXIES).
    "DEFAULT_THROTTLE_CLASSES": [
        "livestream.throttles.AnonRateThrottle",
        "livestream.throttles.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env.str("API_THROTTLE_ANON", default="600/min"),
        "user": env.str("API_THROTTLE_USER", default="1200/min"),
        "auth": env.str("API_THROTTLE_AUTH", default="20/min"),
    },
    "EXCEPTION_HANDLER": "livestream.api.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Livestream API",
    "DESCRIPTION": "Streams, sessions and replays, chat history and moderation, analytics, webhooks.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
}

# --- I18N, static ---------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "var" / "staticfiles"
# Front-end packages from npm are copied into static/vendor/ by scripts/setup.sh.
STATICFILES_DIRS = [BASE_DIR / "static"]
# Serve files from app/static dirs directly too, so a missing collectstatic never breaks a page.
WHITENOISE_USE_FINDERS = True
FORMS_URLFIELD_ASSUME_HTTPS = True
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- Logging ------------------------------------------------------------------------------
# One readable line per event: time, level, logger, message, then key=value context.
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "line": {
            "()": "livestream.logging.KeyValueFormatter",
            "format": "%(asctime)s %(levelname)-5s %(name)s: %(message)s",
        }
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "line"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "botocore": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
        "pymongo": {"level": "WARNING"},
        # Per-task "received"/"succeeded" lines drown the pipeline's own per-chunk log lines
        # (periodic tasks fire every few seconds); failures still log at WARNING/ERROR.
        "celery.app.trace": {"level": "WARNING"},
        "celery.worker.strategy": {"level": "WARNING"},
    },
}

# --- Analytics ------------------------------------------------------------------------------
# Days to keep periodic samples (ingest health, viewer counts, chat stats) in MongoDB.
ANALYTICS_SAMPLE_RETENTION_DAYS = env.int("ANALYTICS_SAMPLE_RETENTION_DAYS", default=30)
# Days to keep player QoE events (startup, rebuffer, switches, errors) reported by watch pages.
ANALYTICS_EVENT_RETENTION_DAYS = env.int("ANALYTICS_EVENT_RETENTION_DAYS", default=14)
# Days to keep per-session metadata documents (codecs, ladder, counters); 0 keeps them forever.
ANALYTICS_SESSION_RETENTION_DAYS = env.int("ANALYTICS_SESSION_RETENTION_DAYS", default=365)
# Seconds between viewer-count samples of live streams (the beat task's period).
ANALYTICS_VIEWER_SAMPLE_S = env.int("ANALYTICS_VIEWER_SAMPLE_S", default=15)
# Player QoE reports: batches allowed per playback (one viewer id in one session) and per client
# address per minute.
ANALYTICS_QOE_BATCHES_PER_VIEWER_MIN = env.int("ANALYTICS_QOE_BATCHES_PER_VIEWER_MIN", default=30)
ANALYTICS_QOE_BATCHES_PER_IP_MIN = env.int("ANALYTICS_QOE_BATCHES_PER_IP_MIN", default=600)
# Reports are accepted for a session on air, and for this many seconds after it ended (the last
# batches of players that were watching); later ones are refused with 409.
ANALYTICS_QOE_ENDED_GRACE_S = env.int("ANALYTICS_QOE_ENDED_GRACE_S", default=300)
# Live health panel: warn when a rendition's published edge trails ingest by more than this.
ANALYTICS_LAG_WARN_S = env.float("ANALYTICS_LAG_WARN_S", default=6.0)
# ... or when this many transcode tasks wait in the queue.
ANALYTICS_QUEUE_WARN = env.int("ANALYTICS_QUEUE_WARN", default=10)
CELERY_BEAT_SCHEDULE["analytics-enforce-retention"] = {
    "task": "analytics.tasks.enforce_retention",
    "schedule": 3600.0,
}
CELERY_BEAT_SCHEDULE["analytics-sample-viewers"] = {
    "task": "analytics.tasks.sample_viewers",
    "schedule": float(ANALYTICS_VIEWER_SAMPLE_S),
}

# --- Webhooks -----------------------------------------------------------------------------
# Allow webhook URLs that resolve to loopback/private/link-local addresses. Off in production
# (SSRF: a streamer could make the server call internal services); local dev and tests set it.
WEBHOOK_ALLOW_PRIVATE = env.bool("WEBHOOK_ALLOW_PRIVATE", default=False)
# Seconds a receiver may stay silent (connecting, or between bytes of its answer) before the
# try counts as a timeout; the save-time DNS check of a URL is bounded by it too.
WEBHOOK_TIMEOUT_S = env.float("WEBHOOK_TIMEOUT_S", default=5.0)
# Hard bound on one try, from DNS resolution to the last byte read: a receiver that trickles its
# answer cannot hold a webhooks worker longer than this (webhooks/transport.py).
WEBHOOK_TOTAL_TIMEOUT_S = env.float("WEBHOOK_TOTAL_TIMEOUT_S", default=10.0)
# Retries after the first try (timeouts, connection errors, 5xx, 429); then the delivery fails.
WEBHOOK_MAX_RETRIES = env.int("WEBHOOK_MAX_RETRIES", default=6)
# Exponential backoff: retry n waits up to BACKOFF * 2^n seconds (full jitter), capped at MAX.
WEBHOOK_RETRY_BACKOFF_S = env.int("WEBHOOK_RETRY_BACKOFF_S", default=2)
WEBHOOK_RETRY_BACKOFF_MAX_S = env.int("WEBHOOK_RETRY_BACKOFF_MAX_S", default=600)
# Endpoints one user may register.
WEBHOOK_MAX_ENDPOINTS_PER_USER = env.int("WEBHOOK_MAX_ENDPOINTS_PER_USER", default=20)
# "Send test event" calls allowed per user (DRF rate syntax).
WEBHOOK_TEST_RATE = env.str("WEBHOOK_TEST_RATE", default="10/min")
# Delivery log rows (and their attempts) older than this many days are deleted daily.
WEBHOOK_LOG_RETENTION_DAYS = env.int("WEBHOOK_LOG_RETENTION_DAYS", default=30)
CELERY_BEAT_SCHEDULE["webhooks-prune-delivery-log"] = {
    "task": "webhooks.tasks.prune_delivery_log",
    "schedule": 24 * 3600.0,
}

# --- REST API schema (added with the webhooks/API work) --------------------------------------
# Every operation documents the shared error body (livestream.api.ErrorResponse) for the
# statuses it can return; choice sets with the same field name get distinct component names.
SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"] = [
    "drf_spectacular.hooks.postprocess_schema_enums",
    "livestream.api.add_error_responses",
]
# limit/offset like DRF's, but malformed values are a 400 rather than silently ignored.
REST_FRAMEWORK["DEFAULT_PAGINATION_CLASS"] = "livestream.api.StrictLimitOffsetPagination"
SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"] = {
    "StreamStatusEnum": "streams.models.StreamStatus",
    "SessionStatusEnum": "streams.models.SessionStatus",
    "DeliveryStatusEnum": "webhooks.models.DeliveryStatus",
    "WebhookEventEnum": "webhooks.models.Event",
}

# --- Chat -----------------------------------------------------------------------------------
# Longest accepted chat message, in characters.
CHAT_MAX_LENGTH = env.int("CHAT_MAX_LENGTH", default=500)
# Messages one user may send to one stream's chat per CHAT_RATE_WINDOW_S (fixed window, Redis).
CHAT_RATE_LIMIT = env.int("CHAT_RATE_LIMIT", default=20)
CHAT_RATE_WINDOW_S = env.int("CHAT_RATE_WINDOW_S", default=30)
# The same text from the same user within this many seconds is refused as a duplicate.
CHAT_DUPLICATE_WINDOW_S = env.int("CHAT_DUPLICATE_WINDOW_S", default=30)
# Messages sent to a socket when it joins (and the API's page size).
CHAT_HISTORY_SIZE = env.int("CHAT_HISTORY_SIZE", default=50)
# Seconds a replay chat message stays on screen as a WebVTT cue (chat.vtt export, ADR 0035).
CHAT_REPLAY_CUE_S = env.float("CHAT_REPLAY_CUE_S", default=5.0)
# Fan-out tick: chat messages arriving within this window go out as one frame (chat.batch).
CHAT_BATCH_TICK_MS = env.int("CHAT_BATCH_TICK_MS", default=100)
# Budget of chat frame writes per second per room and web process; bigger rooms stretch the
# tick to stay within it (more messages per frame), see chat/fanout.py.
CHAT_FANOUT_WRITES_PER_S = env.int("CHAT_FANOUT_WRITES_PER_S", default=10000)
# How often each web process re-reads viewer counts of its rooms and pushes changes.
CHAT_PRESENCE_POLL_S = env.float("CHAT_PRESENCE_POLL_S", default=1.0)
# Hostile or slow clients (docs/chat.md, docs/adr/0010-chat-backpressure.md). A socket is closed
# with code 4008 ("too slow") when the frames waiting for it in the server (its own queue plus
# the transport buffer) exceed CHAT_SEND_QUEUE_BYTES, or when its oldest waiting frame has
# waited CHAT_SEND_TIMEOUT_S; nobody else ever waits for it.
CHAT_SEND_QUEUE_BYTES = env.int("CHAT_SEND_QUEUE_BYTES", default=262144)
CHAT_SEND_TIMEOUT_S = env.float("CHAT_SEND_TIMEOUT_S", default=10.0)
# Kernel send buffer (SO_SNDBUF) of each chat socket; the kernel doubles it. Chat needs a few
# kB/s; left to autotuning a socket that stops reading absorbs ~3 MB before anyone notices.
# 0 keeps the kernel's default.
CHAT_SOCKET_SNDBUF = env.int("CHAT_SOCKET_SNDBUF", default=32768)
# Frames waiting in one room's outbox of a web process; beyond it frames are dropped (logged).
CHAT_ROOM_OUTBOX = env.int("CHAT_ROOM_OUTBOX", default=1000)
# Largest WebSocket message a client may send, in bytes (also uvicorn's --ws-max-size in the
# Procfile). A 500-character message fits even with every character JSON-escaped.
CHAT_MAX_FRAME_BYTES = env.int("CHAT_MAX_FRAME_BYTES", default=8192)
# Open chat/analytics sockets per client address (TRUSTED_PROXIES decides what that is; IPv6
# per /64), over all web processes; 0 = no cap. Raise it for audiences behind one big NAT.
CHAT_MAX_SOCKETS_PER_IP = env.int("CHAT_MAX_SOCKETS_PER_IP", default=50)

# --- Pipeline (transcoding) ---------------------------------------------------------------
# URL nginx-rtmp uses to reach Django's /internal/rtmp/* callbacks (the web process).
RTMP_CALLBACK_BASE_URL = _validated_url("RTMP_CALLBACK_BASE_URL", "http://127.0.0.1:8000", ("http", "https"))
# Renditions below the source height, "name:height:video_kbps:audio_kbps" (never upscaled; the
# source itself is always offered as a pass-through "source" rendition).
TRANSCODE_LADDER: list[str] = env.list(
    "TRANSCODE_LADDER", default=["1080p:1080:5000:128", "720p:720:2800:128", "480p:480:1400:128", "360p:360:800:96"]
)
# x264 preset. Threads per transcode (decoder and each encoder): 0 (default) shares the host's
# cores among the transcodes running on it when a task starts (transcoding/cores.py): 1 thread
# each when all cores are busy (measured fastest), all cores for a lone live stream's chunk.
X264_PRESET = env.str("X264_PRESET", default="veryfast")
X264_THREADS = env.int("X264_THREADS", default=0)
# Cores of this worker host shared by its transcodes (0: the CPUs this process may run on).
TRANSCODE_HOST_CORES = env.int("TRANSCODE_HOST_CORES", default=0)
# A chunk not transcoded this many seconds after ingest is dropped and becomes a gap.
LIVE_DEADLINE_SECONDS = env.float("LIVE_DEADLINE_SECONDS", default=15.0)
# Overload (transcoding/shedding.py): shed the top rungs while transcoding falls behind.
OVERLOAD_SHEDDING = env.bool("OVERLOAD_SHEDDING", default=True)
# A chunk that waited longer than this for a worker (or took longer to transcode than it
# lasts) is late: one more rung is shed for the following chunks.
OVERLOAD_LATE_SECONDS = env.float("OVERLOAD_LATE_SECONDS", default=2.0)
# Chunks on time in a row before one shed rung is restored.
OVERLOAD_RESTORE_AFTER_CHUNKS = env.int("OVERLOAD_RESTORE_AFTER_CHUNKS", default=5)
# Lifetime of raw chunk bytes and pipeline state in Redis.
CHUNK_TTL_SECONDS = env.int("CHUNK_TTL_SECONDS", default=300)
PIPELINE_STATE_TTL_SECONDS = env.int("PIPELINE_STATE_TTL_SECONDS", default=86400)
# nginx-rtmp records every publish here (record all, record_lock on) and the segmenter reads the
# growing file, so a broadcast keeps its first frame (docs/adr/0014-ingest-from-the-first-frame.md).
# nginx-rtmp and the ingest must see the same directory (compose: a shared volume). Read parts
# are released as the broadcast goes (hole punching); a recording is deleted once ingested.
RTMP_RECORD_DIR = Path(env.str("RTMP_RECORD_DIR", default=str(VAR_DIR / "rtmp-record")))
# How long a recording that stopped growing is followed when nginx-rtmp's record_lock is not
# seen (normally the end of a publish is the lock's release).
SEGMENTER_RW_TIMEOUT_S = env.float("SEGMENTER_RW_TIMEOUT_S", default=5.0)
# Source caps: a publish above them is refused at its first probe with the reason in the log and
# on the stream's dashboard. Width and height cap the long and the short side (a portrait
# 1080x1920 phone stream passes the default). Bitrate: average over 10 s of media, audio
# included. The defaults admit 1440p60; 4K operators raise them (3840/2160, ~40000 kbit/s)
# along with their transcoding capacity.
SOURCE_MAX_WIDTH = env.int("SOURCE_MAX_WIDTH", default=2560)
SOURCE_MAX_HEIGHT = env.int("SOURCE_MAX_HEIGHT", default=1440)
SOURCE_MAX_FPS = env.float("SOURCE_MAX_FPS", default=60.0)
SOURCE_MAX_KBPS = env.int("SOURCE_MAX_KBPS", default=20000)
# Chunks are cut at IDR keyframes only, so they last one keyframe interval when that is longer
# than CHUNK_SECONDS (OBS's "auto" is 250 frames, 8.3 s at 30 fps; the dashboard then advises
# 1-2 s). A publish whose chunk grows past either bound (no keyframe) is ended with the reason.
CHUNK_MAX_SECONDS = env.float("CHUNK_MAX_SECONDS", default=20.0)
CHUNK_MAX_MB = env.int("CHUNK_MAX_MB", default=64)
# Progressive transcoding: a chunk's task starts when the chunk starts and is fed its bytes as
# the segmenter writes them, so it finishes ~0.1 s after the chunk ends instead of ~0.6 s. Each
# such task holds a worker process for about a chunk's duration: run more worker processes than
# cores when many streams share a machine (threads per transcode adapt, transcoding/cores.py).
PROGRESSIVE_TRANSCODE = env.bool("PROGRESSIVE_TRANSCODE", default=True)
# Sources whose audio is not AAC get it encoded once, by the segmenter, at this bitrate.
SEGMENTER_AUDIO_KBPS = env.int("SEGMENTER_AUDIO_KBPS", default=128)
# Ingest doctor (transcoding/doctor.py, ADR 0034): analyse each live source beside its segmenter;
# findings over the last INGEST_DOCTOR_WINDOW_SECONDS of media, refreshed every N chunks.
INGEST_DOCTOR = env.bool("INGEST_DOCTOR", default=True)
INGEST_DOCTOR_EVERY_CHUNKS = env.int("INGEST_DOCTOR_EVERY_CHUNKS", default=3)
INGEST_DOCTOR_WINDOW_SECONDS = env.float("INGEST_DOCTOR_WINDOW_SECONDS", default=20.0)
# Seconds between IngestSample health documents while live.
INGEST_SAMPLE_SECONDS = env.float("INGEST_SAMPLE_SECONDS", default=5.0)
# Tasks per chunk. 1 (default): one task decodes the chunk once and encodes every rendition
# (measured: 1.6x less CPU than a decode per rendition). N > 1 splits the ladder's renditions
# over N tasks (each decodes the chunk) so a big ladder spreads over many machines and one
# chunk's wall time drops, at the cost of N decodes.
TRANSCODE_TASKS_PER_CHUNK = env.int("TRANSCODE_TASKS_PER_CHUNK", default=1)
# Hard limit of one chunk's transcode (ffmpeg is killed after it).
TRANSCODE_TIMEOUT_S = env.float("TRANSCODE_TIMEOUT_S", default=60.0)

# --- Pipeline fault tolerance (docs/pipeline.md "Faults", ADR 0013) ------------------------
# A live session whose segmenter sent no heartbeat for this long is considered gone (nginx-rtmp
# or the ingest node died, on_publish_done was lost): stream offline, then finalised.
INGEST_SILENCE_SECONDS = env.float("INGEST_SILENCE_SECONDS", default=10.0)
# A publish with the right key takes over a live session whose ingest has been silent this long
# (or whose segmenter ended) instead of being refused as "already live".
INGEST_TAKEOVER_SECONDS = env.float("INGEST_TAKEOVER_SECONDS", default=3.0)
# Period of the reconciler (Celery beat): silent ingests, lost finalisations, lapsed leases.
RECONCILE_INTERVAL_SECONDS = env.float("RECONCILE_INTERVAL_SECONDS", default=2.0)
# A segmenter that ends while its publisher is connected is restarted, at most this many times
# a minute; then the publisher is dropped (it reconnects through on_publish).
SEGMENTER_MAX_RESTARTS = env.int("SEGMENTER_MAX_RESTARTS", default=5)
# When ffmpeg has exited and Redis is unreachable, the segmenter keeps its last chunks on disk
# this long waiting for Redis.
INGEST_OUTAGE_WAIT_S = env.float("INGEST_OUTAGE_WAIT_S", default=30.0)
# A transcode task holds a lease on its chunk, refreshed while it runs; when its worker dies the
# lease lapses after this long and the reconciler queues the chunk again.
TRANSCODE_LEASE_SECONDS = env.float("TRANSCODE_LEASE_SECONDS", default=4.0)
# Retries (backoff 0.5 s doubling to 4 s) of a chunk whose publishing failed (S3 or Redis
# unreachable); the retry only uploads the outputs kept in Redis, it never transcodes again.
TRANSCODE_PUBLISH_RETRIES = env.int("TRANSCODE_PUBLISH_RETRIES", default=12)
CELERY_BEAT_SCHEDULE["pipeline-reconcile-live-sessions"] = {
    "task": "transcoding.tasks.reconcile_live_sessions",
    "schedule": RECONCILE_INTERVAL_SECONDS,
}

# --- Viewer (watch page, directory) -------------------------------------------------------
# Seconds between refreshes of the directory thumbnails of live streams (Celery beat).
THUMBNAIL_REFRESH_S = env.float("THUMBNAIL_REFRESH_S", default=20.0)
# The thumbnail tasks live outside tasks.py (transcoding/thumbnails.py): import them explicitly.
CELERY_IMPORTS = [*globals().get("CELERY_IMPORTS", []), "transcoding.thumbnails"]
CELERY_BEAT_SCHEDULE["viewer-refresh-thumbnails"] = {
    "task": "transcoding.thumbnails.refresh_thumbnails",
    "schedule": THUMBNAIL_REFRESH_S,
}

# --- Metrics (livestream/metrics.py, docs/operations.md, docs/adr/0020-metrics.md) ----------
# Who may read the web role's GET /metrics: these networks (the client address of
# livestream.clientaddr, so X-Forwarded-For counts only from TRUSTED_PROXIES) ...
METRICS_ALLOWED_NETWORKS: list[str] = env.list("METRICS_ALLOWED_NETWORKS", default=["127.0.0.0/8", "::1/128"])
# ... or anyone sending "Authorization: Bearer <METRICS_TOKEN>" (empty: no token accepted).
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# Other roles (Celery workers, beat, ingest, change follower) serve their metrics here (0: off).
METRICS_BIND = env.str("METRICS_BIND", default="127.0.0.1")
METRICS_PORT = env.int("METRICS_PORT", default=0)
# Each role's processes write their values under METRICS_DIR/<role> (prometheus-client's
# multiprocess mode); PROMETHEUS_MULTIPROC_DIR, when set, is used as is instead.
METRICS_DIR = env.str("METRICS_DIR", default=str(BASE_DIR / "var" / "metrics"))
# A live session without a new segment for this long counts in livestream_live_stalled_sessions.
METRICS_STALL_SECONDS = env.float("METRICS_STALL_SECONDS", default=10.0)

# --- Highlight suggestions (highlights/, docs/highlights.md, ADR 0037) ---------------------
# Measure each chunk's EBU R128 loudness in the transcode worker (after it is published).
HIGHLIGHTS_LOUDNESS = env.bool("HIGHLIGHTS_LOUDNESS", default=True)
# Seconds between scoring runs of the live broadcasts (Celery beat, default queue).
HIGHLIGHTS_INTERVAL_SECONDS = env.float("HIGHLIGHTS_INTERVAL_SECONDS", default=10.0)
# A moment is offered when its peak segment scores at least this (sum of capped robust z-scores).
HIGHLIGHTS_MIN_SCORE = env.float("HIGHLIGHTS_MIN_SCORE", default=4.0)
# Segments per suggested window (centred on the peak), and most suggestions per broadcast.
HIGHLIGHTS_WINDOW_SEGMENTS = env.int("HIGHLIGHTS_WINDOW_SEGMENTS", default=3)
HIGHLIGHTS_MAX_PER_SESSION = env.int("HIGHLIGHTS_MAX_PER_SESSION", default=5)
# No suggestion while live before this many segments make a baseline (the final run has no minimum).
HIGHLIGHTS_MIN_SEGMENTS = env.int("HIGHLIGHTS_MIN_SEGMENTS", default=8)
# Weights of the three signals in the score.
HIGHLIGHTS_WEIGHT_CHAT = env.float("HIGHLIGHTS_WEIGHT_CHAT", default=1.0)
HIGHLIGHTS_WEIGHT_LOUDNESS = env.float("HIGHLIGHTS_WEIGHT_LOUDNESS", default=1.0)
HIGHLIGHTS_WEIGHT_JOINS = env.float("HIGHLIGHTS_WEIGHT_JOINS", default=1.0)
# How long the per-segment loudness stays in Redis after the last write, and a run's lock.
HIGHLIGHTS_SIGNAL_TTL_S = env.int("HIGHLIGHTS_SIGNAL_TTL_S", default=6 * 3600)
HIGHLIGHTS_LOCK_S = env.int("HIGHLIGHTS_LOCK_S", default=60)
# Sessions that ended less than this long ago get their final scoring.
HIGHLIGHTS_FINAL_WITHIN_S = env.int("HIGHLIGHTS_FINAL_WITHIN_S", default=3600)
CELERY_BEAT_SCHEDULE["highlights-score-sessions"] = {
    "task": "highlights.tasks.score_sessions",
    "schedule": HIGHLIGHTS_INTERVAL_SECONDS,
}
# --- Simulcast (simulcast/, docs/adr/0033-simulcast.md) ------------------------------------
# Secret the restream targets' stream keys are encrypted with at rest (Fernet, key derived by
# SHA-256). Production requires a real one; changing it makes the stored keys unreadable.
SIMULCAST_KEY_SECRET = env.str("SIMULCAST_KEY_SECRET", default=DEV_ONLY_SECRETS["SIMULCAST_KEY_SECRET"])
# Rotation: the secrets used before (comma-separated) still decrypt stored keys until
# `manage.py rotate_simulcast_keys` re-encrypted them with SIMULCAST_KEY_SECRET.
SIMULCAST_KEY_SECRET_PREVIOUS = env.list("SIMULCAST_KEY_SECRET_PREVIOUS", default=[])
# rtmps:// targets: the certificate authorities their certificates are verified against (chain
# and host name; a target that fails is reported "not trusted"). The system's bundle by default.
SIMULCAST_TLS_CA_FILE = env.str("SIMULCAST_TLS_CA_FILE", default="/etc/ssl/certs/ca-certificates.crt")
# Allow target URLs on loopback/private addresses (as WEBHOOK_ALLOW_PRIVATE). Off in production.
SIMULCAST_ALLOW_PRIVATE = env.bool("SIMULCAST_ALLOW_PRIVATE", default=False)
# Restream targets one stream may have.
SIMULCAST_MAX_TARGETS = env.int("SIMULCAST_MAX_TARGETS", default=5)
# A failing relay is retried after 2, 4, 8 ... seconds, at most this long apart.
SIMULCAST_RETRY_MIN_S = env.float("SIMULCAST_RETRY_MIN_S", default=2.0)
SIMULCAST_RETRY_MAX_S = env.float("SIMULCAST_RETRY_MAX_S", default=60.0)
# How often the ingest supervisor re-reads the targets of its live streams (added, removed,
# disabled or edited targets take effect within this).
SIMULCAST_REFRESH_S = env.float("SIMULCAST_REFRESH_S", default=2.0)
