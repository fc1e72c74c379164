"""settings.production refuses to start with missing, placeholder, development or short
secrets (a clear ImproperlyConfigured naming the variable, never its value), and turns on
HTTPS-only cookies, HSTS and the redirect. Each case loads the settings in a fresh process,
as a real deployment does."""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SETUP = (
    "import django, json; django.setup(); from django.conf import settings as s; "
    "print(json.dumps({n: getattr(s, n) for n in ("
    "'SECURE_HSTS_SECONDS', 'SECURE_HSTS_INCLUDE_SUBDOMAINS', 'SESSION_COOKIE_SECURE', "
    "'CSRF_COOKIE_SECURE', 'SECURE_SSL_REDIRECT', 'SECURE_REDIRECT_EXEMPT', 'DEBUG', "
    "'SECURE_CONTENT_TYPE_NOSNIFF', 'SESSION_COOKIE_HTTPONLY')}))"
)


def good_env() -> dict[str, str]:
    return {
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(48),
        "S3_ACCESS_KEY": "livestream-app",
        "S3_SECRET_KEY": secrets.token_urlsafe(40),
        "RTMP_CALLBACK_SECRET": secrets.token_urlsafe(24),
        "SIMULCAST_KEY_SECRET": secrets.token_urlsafe(32),
        "HLS_PATH_SECRET": secrets.token_urlsafe(32),
        "DATABASE_URL": f"postgres://livestream:{secrets.token_hex(16)}@127.0.0.1:5432/livestream",
        "RTMPS_CERT_FILE": "/etc/livestream/tls/fullchain.pem",
        "RTMPS_KEY_FILE": "/etc/livestream/tls/privkey.pem",
    }


def run(code: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter with production settings and only ``env`` configured."""
    base = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "DJANGO_SETTINGS_MODULE": "livestream.settings.production",
        "MONGODB_TIMEOUT_S": "0.2",
        "LOG_LEVEL": "ERROR",
    }
    return subprocess.run(
        [sys.executable, *code], env={**base, **env}, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture(autouse=True)
def _no_local_env_file():
    # base.py reads ROOT/.env for variables the environment lacks: it would fill the gaps.
    if (ROOT / ".env").exists():
        pytest.skip("a local .env would supply the variables these cases leave out")


def test_real_secrets_start_and_turn_on_https_protections():
    done = run(["-c", SETUP], good_env())
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["SECURE_HSTS_SECONDS"] >= 31536000
    assert loaded["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is True
    assert loaded["SESSION_COOKIE_SECURE"] is True
    assert loaded["CSRF_COOKIE_SECURE"] is True
    assert loaded["SECURE_SSL_REDIRECT"] is True
    assert loaded["SESSION_COOKIE_HTTPONLY"] is True
    assert loaded["DEBUG"] is False
    # nginx-rtmp's callbacks and load-balancer probes come over plain HTTP inside the network.
    assert set(loaded["SECURE_REDIRECT_EXEMPT"]) == {r"^internal/", r"^healthz$"}


def test_deploy_checklist_passes():
    done = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], good_env())
    assert done.returncode == 0, done.stdout + done.stderr


PLACEHOLDER = "is a placeholder or development value"
TOO_SHORT = "is too short"


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("DJANGO_SECRET_KEY", None, "DJANGO_SECRET_KEY is required in production"),
        ("DJANGO_SECRET_KEY", "", "DJANGO_SECRET_KEY is required in production"),
        ("DJANGO_SECRET_KEY", "change-me-in-.env", PLACEHOLDER),  # the old compose default
        ("DJANGO_SECRET_KEY", "local-dev-only-not-secret-5c1f0e9d", PLACEHOLDER),  # base.py's
        ("DJANGO_SECRET_KEY", "django-insecure-" + "k3x9" * 12, PLACEHOLDER),  # startproject's
        ("DJANGO_SECRET_KEY", "Placeholder-" + secrets.token_hex(20), PLACEHOLDER),
        ("DJANGO_SECRET_KEY", secrets.token_hex(10), TOO_SHORT),  # 20 characters
        ("DJANGO_SECRET_KEY", "ab" * 30, "too repetitive"),
        ("S3_ACCESS_KEY", None, "S3_ACCESS_KEY is required"),
        ("S3_ACCESS_KEY", "livestream", PLACEHOLDER),  # base.py's and the old compose default
        ("S3_ACCESS_KEY", "minioadmin", PLACEHOLDER),  # MinIO's default administrator
        ("S3_ACCESS_KEY", "AKIAIOSFODNN7EXAMPLE", PLACEHOLDER),  # AWS's documented example
        ("S3_SECRET_KEY", None, "S3_SECRET_KEY is required"),
        ("S3_SECRET_KEY", "change-me-minio-secret", PLACEHOLDER),
        ("S3_SECRET_KEY", "livestream-local-secret", PLACEHOLDER),
        ("S3_SECRET_KEY", secrets.token_hex(12), TOO_SHORT),  # 24 characters
        ("RTMP_CALLBACK_SECRET", None, "RTMP_CALLBACK_SECRET is required"),
        ("RTMP_CALLBACK_SECRET", "change-me-callback-secret", PLACEHOLDER),
        ("RTMP_CALLBACK_SECRET", "Xy7-kQ2p", TOO_SHORT),
        ("RTMP_CALLBACK_SECRET", secrets.token_hex(12) + ";rewrite", "may only use letters"),
        ("DATABASE_URL", "postgres://postgres:postgres@127.0.0.1:5432/livestream", "DATABASE_URL"),
        ("REDIS_URL", "redis://:changeme@127.0.0.1:6379/0", "REDIS_URL has a placeholder"),
        ("CELERY_BROKER_URL", "redis://:change-me-now@127.0.0.1:6379/1", "CELERY_BROKER_URL has a placeholder"),
        ("MONGODB_URI", "mongodb://livestream:changeme@127.0.0.1:27017/livestream", "MONGODB_URI has a placeholder"),
        ("RTMPS_CERT_FILE", None, "RTMPS_CERT_FILE and RTMPS_KEY_FILE"),
        ("RTMPS_KEY_FILE", "", "RTMPS_CERT_FILE and RTMPS_KEY_FILE"),
        ("DJANGO_DEBUG", "true", "DJANGO_DEBUG must be off"),
        ("DJANGO_ALLOWED_HOSTS", "*", "not '*'"),
        ("WEBHOOK_ALLOW_PRIVATE", "true", "WEBHOOK_ALLOW_PRIVATE must be off"),
        ("SIMULCAST_KEY_SECRET", None, "SIMULCAST_KEY_SECRET is required"),
        ("SIMULCAST_KEY_SECRET", "local-dev-only-simulcast-key-secret-7b2e41", PLACEHOLDER),
        ("SIMULCAST_KEY_SECRET", secrets.token_hex(12), TOO_SHORT),
        ("HLS_PATH_SECRET", None, "HLS_PATH_SECRET is required"),
        ("HLS_PATH_SECRET", "local-dev-only-hls-path-secret-3d90a8", PLACEHOLDER),
        ("HLS_PATH_SECRET", secrets.token_hex(12), TOO_SHORT),
        ("SIMULCAST_ALLOW_PRIVATE", "true", "SIMULCAST_ALLOW_PRIVATE must be off"),
    ],
)
def test_bad_configuration_is_refused_at_startup(name, value, says):
    env = good_env()
    if value is None:
        env.pop(name, None)
    else:
        env[name] = value
    done = run(["-c", "import django; django.setup()"], env)
    assert done.returncode != 0, f"{name}={value!r} was accepted"
    assert "ImproperlyConfigured" in done.stderr
    message = done.stderr.strip().splitlines()[-1]
    assert says in message, message
    if value and not name.endswith(("_URL", "_URI")) and len(value) >= 8:
        assert value not in message  # the refusal never echoes the secret


def test_every_role_refuses_the_same_way():
    """Web, workers, ingest and the rest all load these settings through manage.py/celery."""
    env = {**good_env(), "S3_SECRET_KEY": "change-me-minio-secret"}
    done = run(["manage.py", "check"], env)
    assert done.returncode != 0
    assert "S3_SECRET_KEY is a placeholder" in done.stderr
    done = run(["-m", "celery", "-A", "livestream", "report"], env)
    assert done.returncode != 0
    assert "S3_SECRET_KEY is a placeholder" in done.stderr
