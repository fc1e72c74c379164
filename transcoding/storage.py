"""The only module that talks to the S3 origin (SeaweedFS locally, any S3 in production)."""

import logging
import time
from functools import cache
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from django.conf import settings

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@cache
def client() -> "S3Client":
    return boto3.client(
        "s3",
        endpoint_url=settings.S3_ENDPOINT_URL or None,
        region_name=settings.S3_REGION,
        aws_access_key_id=settings.S3_ACCESS_KEY,
        aws_secret_access_key=settings.S3_SECRET_KEY,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=3,
            read_timeout=10,
            max_pool_connections=32,
        ),
    )


def check_bucket() -> None:
    client().head_bucket(Bucket=settings.S3_BUCKET)


def ensure_bucket() -> None:
    """Create the bucket when missing (idempotent)."""
    s3 = client()
    try:
        s3.head_bucket(Bucket=settings.S3_BUCKET)
    except s3.exceptions.ClientError:
        s3.create_bucket(Bucket=settings.S3_BUCKET)


def wait_and_ensure_bucket(timeout_s: float = 60) -> None:
    """Wait for the origin to accept writes, then make sure the bucket exists."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            ensure_bucket()
        except Exception as exc:
            if time.monotonic() > deadline:
                raise
            logger.debug("S3 not ready yet: %s", exc)
            time.sleep(0.5)
        else:
            logger.info("S3 origin ready", extra={"ctx": {"bucket": settings.S3_BUCKET}})
            return
