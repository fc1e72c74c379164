"""Production: secrets have no defaults and are checked at start-up; HTTPS only (secure
cookies, HSTS, redirect to HTTPS); debug pages and private webhook targets refused.

Every process that loads these settings stops with ``ImproperlyConfigured`` (naming the
variable, never echoing its value) when a secret is missing, shorter than its minimum, too
repetitive, or looks like a placeholder or a development default (docs/deployment.md).
"""

import re
from urllib.parse import urlparse

from django.core.exceptions import ImproperlyConfigured

from livestream.settings.base import *  # noqa: F403
from livestream.settings.base import (
    ALLOWED_HOSTS,
    DATABASES,
    DEBUG,
    DEV_ONLY_SECRETS,
    SIMULCAST_ALLOW_PRIVATE,
    WEBHOOK_ALLOW_PRIVATE,
    env,
)

# Substrings that mark a value someone meant to replace (compared case-insensitively).
PLACEHOLDER_MARKERS = (
    "change-me",
    "changeme",
    "change_me",
    "placeholder",
    "insecure",
    "not-secret",
    "dev-only",
    "example",
    "replace-me",
    "your-secret",
)
# Values published in documentation or used as defaults by this project and its images.
KNOWN_VALUES = {
    *(value.lower() for value in DEV_ONLY_SECRETS.values()),
    "minioadmin",
    "postgres",
    "password",
    "secret",
    "livestream",
    "build",
}
# Characters a secret may use where it travels in a URL or an nginx config (callback secret).
URL_SAFE = re.compile(r"[A-Za-z0-9._~-]+")
GENERATE_HINT = "generate one with: python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"


def _looks_placeholder(value: str) -> bool:
    lowered = value.lower()
    return lowered in KNOWN_VALUES or any(marker in lowered for marker in PLACEHOLDER_MARKERS)


def required_secret(name: str, *, min_length: int, url_safe: bool = False) -> str:
    """The environment variable ``name``, or ImproperlyConfigured saying what is wrong."""
    value: str = env.str(name, default="")
    if not value:
        raise ImproperlyConfigured(f"{name} is required in production ({GENERATE_HINT})")
    if _looks_placeholder(value):
        raise ImproperlyConfigured(f"{name} is a placeholder or development value: set a real secret ({GENERATE_HINT})")
    if len(value) < min_length:
        raise ImproperlyConfigured(
            f"{name} is too short ({len(value)} characters, at least {min_length}; {GENERATE_HINT})"
        )
    if len(set(value)) < min(8, min_length):
        raise ImproperlyConfigured(f"{name} is too repetitive to be a secret ({GENERATE_HINT})")
    if url_safe and not URL_SAFE.fullmatch(value):
        raise ImproperlyConfigured(f"{name} may only use letters, digits and . _ ~ - (it travels in a URL)")
    return value


# --- Secrets ------------------------------------------------------------------------------
SECRET_KEY = required_secret("DJANGO_SECRET_KEY", min_length=32)
# The app's own S3 identity (least privilege: object read/write/delete in its bucket), never
# the store's administrator (docs/deployment.md).
S3_ACCESS_KEY = required_secret("S3_ACCESS_KEY", min_length=3)
S3_SECRET_KEY = required_secret("S3_SECRET_KEY", min_length=32)
# nginx-rtmp's callbacks carry it; without it only loopback callers would be trusted.
RTMP_CALLBACK_SECRET = required_secret("RTMP_CALLBACK_SECRET", min_length=16, url_safe=True)
# Encrypts the restream targets' stream keys at rest (simulcast/crypto.py).
SIMULCAST_KEY_SECRET = required_secret("SIMULCAST_KEY_SECRET", min_length=32)
# Keys the HMAC tag of each session's HLS path (streams.playback.session_prefix, ADR 0034).
HLS_PATH_SECRET = required_secret("HLS_PATH_SECRET", min_length=32)
# Optional bearer token of the web's /metrics (ADR 0020): when set, a real secret.
METRICS_TOKEN = required_secret("METRICS_TOKEN", min_length=32) if env.str("METRICS_TOKEN", default="") else ""

# RTMPS (ADR 0032): a real certificate and key (PEM paths); no self-signed fallback here.
# RTMPS_PORT=0 runs no RTMPS listener and needs neither.
if env.int("RTMPS_PORT", default=1943) and not (
    env.str("RTMPS_CERT_FILE", default="") and env.str("RTMPS_KEY_FILE", default="")
):
    raise ImproperlyConfigured(
        "RTMPS_CERT_FILE and RTMPS_KEY_FILE (PEM certificate chain and key) are required in production "
        "(or RTMPS_PORT=0: no RTMPS listener)"
    )

_db_password = DATABASES["default"].get("PASSWORD") or ""
if _db_password and _looks_placeholder(_db_password):
    raise ImproperlyConfigured("DATABASE_URL has a placeholder or default password: set a real one")
# Redis and MongoDB URLs may carry no password (a deployment on a private network that relies on
# network policy), but a password they carry must not be a placeholder.
for _name in ("REDIS_URL", "CACHE_REDIS_URL", "CELERY_BROKER_URL", "CHANNEL_REDIS_URL", "MONGODB_URI"):
    _password = urlparse(env.str(_name, default="")).password or ""
    if _password and _looks_placeholder(_password):
        raise ImproperlyConfigured(f"{_name} has a placeholder or default password: set a real one")
if DEBUG:
    raise ImproperlyConfigured("DJANGO_DEBUG must be off in production (debug pages show settings and code)")
if "*" in ALLOWED_HOSTS:
    raise ImproperlyConfigured("DJANGO_ALLOWED_HOSTS must list the site's host names, not '*'")
if WEBHOOK_ALLOW_PRIVATE:
    raise ImproperlyConfigured("WEBHOOK_ALLOW_PRIVATE must be off in production (SSRF)")
if SIMULCAST_ALLOW_PRIVATE:
    raise ImproperlyConfigured("SIMULCAST_ALLOW_PRIVATE must be off in production (SSRF)")
if urlparse(env.str("S3_ENDPOINT_URL", default="")).username:
    raise ImproperlyConfigured("S3_ENDPOINT_URL must not carry credentials; use S3_ACCESS_KEY/S3_SECRET_KEY")

# --- HTTPS --------------------------------------------------------------------------------
# TLS ends at the reverse proxy / load balancer in front of the web role, which sets
# X-Forwarded-Proto (and must strip a client's own).
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Cookies only over HTTPS. Turn off only to try the stack on http://localhost.
SESSION_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=True)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
# Plain-HTTP requests are redirected to HTTPS, except nginx-rtmp's callbacks and load-balancer
# probes, which come over the private network (a redirect would make nginx-rtmp rename the
# publish to the redirect's target).
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
SECURE_REDIRECT_EXEMPT = [r"^internal/", r"^healthz$"]
# HSTS: browsers use HTTPS only for this host for a year (sent on HTTPS responses only).
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=365 * 24 * 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
# Preloading is a commitment browsers ship with: opt in once HTTPS works everywhere.
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=False)
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
# `manage.py check --deploy` passes with these settings; preload stays a deliberate opt-in.
SILENCED_SYSTEM_CHECKS = ["security.W021"]
