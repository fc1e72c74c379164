"""Platform-level checks: compose file validity, health endpoint, S3 origin reachable."""

import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

from transcoding import storage

ROOT = Path(__file__).resolve().parent.parent


def test_docker_compose_is_valid_against_the_compose_spec():
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(ROOT / "docker-compose.yml"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_defines_the_production_like_stack():
    import yaml

    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for name in ("postgres", "redis", "mongo", "minio", "rtmp", "edge", "web", "worker"):
        assert name in services, name
    uri = services["web"]["environment"]["MONGODB_URI"]  # not interpolated: ${...} still in it
    assert uri.startswith("mongodb://")
    assert "@mongo:27017/livestream" in uri


@pytest.mark.django_db
def test_healthz_reports_components(s3):
    response = Client().get("/healthz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["checks"]["postgresql"]
    assert body["checks"]["redis"]
    assert body["checks"]["s3 origin"]


@pytest.mark.django_db
def test_health_page_is_staff_only(user):
    assert Client().get("/health/").status_code == 302


def test_s3_round_trip(s3):
    s3_client = storage.client()
    from django.conf import settings

    s3_client.put_object(Bucket=settings.S3_BUCKET, Key="tests/hello.txt", Body=b"hi", ContentType="text/plain")
    assert s3_client.get_object(Bucket=settings.S3_BUCKET, Key="tests/hello.txt")["Body"].read() == b"hi"
    s3_client.delete_object(Bucket=settings.S3_BUCKET, Key="tests/hello.txt")


def test_init_storage_makes_objects_readable_without_credentials(s3):
    import requests
    from django.conf import settings
    from django.core.management import call_command

    call_command("init_storage", timeout=10)
    call_command("init_storage", timeout=10)  # idempotent
    storage.put_playlist("live/0/public.m3u8", "#EXTM3U\n")
    try:
        response = requests.get(f"{settings.S3_ENDPOINT_URL}/{settings.S3_BUCKET}/live/0/public.m3u8", timeout=5)
        assert response.status_code == 200
        assert response.text == "#EXTM3U\n"
        # Reading is public; listing the bucket is not.
        assert requests.get(f"{settings.S3_ENDPOINT_URL}/{settings.S3_BUCKET}/", timeout=5).status_code == 403
    finally:
        storage.delete_key("live/0/public.m3u8")
