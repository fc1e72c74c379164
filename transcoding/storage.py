"""The only module that talks to the S3 origin (SeaweedFS locally, any S3 in production).

Every other module reads and writes objects through the functions here (``put_segment``,
``put_playlist``, ``put_image``, ``get_bytes``, ``list_keys``, ``delete_*``); ``client()`` is
for this module and for tests that inspect the bucket directly."""

import json
import logging
import posixpath
import time
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from django.conf import settings

from livestream import metrics

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from pathlib import Path

    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef


@cache
def client() -> "S3Client":
    s3 = boto3.client(
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
    return metrics.instrument_s3(s3)  # request time and errors (livestream/metrics.py)


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


def viewer_read_policy(bucket: str) -> dict[str, object]:
    """The bucket policy that lets anonymous clients (the edge, as a CDN reads a public origin)
    GET objects under ``playback.PUBLIC_PREFIX`` only: live and replay HLS, thumbnails.
    Listing, writes and every other prefix stay private. The compose stack's storage-init job
    (deploy/minio/init.sh) applies the same statement."""
    from streams.playback import PUBLIC_PREFIX

    statement = {
        "Sid": "ViewersReadHls",
        "Effect": "Allow",
        "Principal": {"AWS": ["*"]},
        "Action": ["s3:GetObject"],
        "Resource": [f"arn:aws:s3:::{bucket}/{PUBLIC_PREFIX}*"],
    }
    return {"Version": "2012-10-17", "Statement": [statement]}


def ensure_public_read() -> bool:
    """Apply ``viewer_read_policy`` to the bucket (replacing any earlier policy, such as a
    whole-bucket read). Returns False, with a warning, when the identity may not set bucket
    policies (a least-privileged app user: the storage administrator sets it) or the gateway
    has none."""
    policy = json.dumps(viewer_read_policy(settings.S3_BUCKET))
    try:
        client().put_bucket_policy(Bucket=settings.S3_BUCKET, Policy=policy)
    except client().exceptions.ClientError as exc:
        logger.warning("bucket policy not set (%s); make sure the edge can read the bucket", exc)
        return False
    return True


PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
SEGMENT_TYPE = "video/mp2t"
# CMAF (low-latency sessions): media segments and parts, and each rendition's init section.
CMAF_SEGMENT_TYPE = "video/iso.segment"
CMAF_INIT_TYPE = "video/mp4"
# Playlists change every chunk; segments never change once written (idempotent keys).
PLAYLIST_CACHE = "public, max-age=1"
SEGMENT_CACHE = "public, max-age=31536000, immutable"


def put_segment(key: str, data: bytes) -> None:
    """Write a media segment (same key, same bytes: a retried task overwrites harmlessly)."""
    client().put_object(
        Bucket=settings.S3_BUCKET, Key=key, Body=data, ContentType=segment_type(key), CacheControl=SEGMENT_CACHE
    )


def segment_type(name: str) -> str:
    """The media type of a segment, part or init section, by its name."""
    if name.endswith(".m4s"):
        return CMAF_SEGMENT_TYPE
    return CMAF_INIT_TYPE if name.endswith(".mp4") else SEGMENT_TYPE


def put_playlist(key: str, text: str) -> None:
    client().put_object(
        Bucket=settings.S3_BUCKET,
        Key=key,
        Body=text.encode("utf-8"),
        ContentType=PLAYLIST_TYPE,
        CacheControl=PLAYLIST_CACHE,
    )


def put_image(key: str, data: bytes, *, content_type: str, cache: str) -> None:
    """Write a picture (a stream's thumbnail) with its type and ``Cache-Control``."""
    client().put_object(Bucket=settings.S3_BUCKET, Key=key, Body=data, ContentType=content_type, CacheControl=cache)


def get_bytes(key: str) -> bytes | None:
    s3 = client()
    try:
        return s3.get_object(Bucket=settings.S3_BUCKET, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None


def list_keys(prefix: str) -> list[str]:
    s3 = client()
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=settings.S3_BUCKET, Prefix=prefix):
        keys.extend(obj["Key"] for obj in page.get("Contents", []))
    return keys


def delete_prefix(prefix: str) -> int:
    """Delete every object under ``prefix`` (must end with "/"); returns how many went."""
    if not prefix.endswith("/"):
        raise ValueError("prefix must end with '/' so a sibling's objects are never matched")
    return delete_keys(list_keys(prefix))


def delete_keys(keys: list[str]) -> int:
    """Delete these objects, 1000 per request; returns how many."""
    for start in range(0, len(keys), 1000):
        batch: list[ObjectIdentifierTypeDef] = [{"Key": k} for k in keys[start : start + 1000]]
        client().delete_objects(Bucket=settings.S3_BUCKET, Delete={"Objects": batch, "Quiet": True})
    return len(keys)


def delete_key(key: str) -> None:
    client().delete_object(Bucket=settings.S3_BUCKET, Key=key)


LOG_TYPE = "application/x-ndjson"


def put_log(key: str, body: bytes) -> None:
    """A checkpoint of a session's published log (JSON lines; the assembler rewrites the current
    part, bounded in size, and never an earlier one)."""
    client().put_object(Bucket=settings.S3_BUCKET, Key=key, Body=body, ContentType=LOG_TYPE, CacheControl="no-store")


def put_batch(
    prefix: str, segments: list[tuple[str, bytes]], logs: list[tuple[str, bytes]], playlists: list[tuple[str, str]]
) -> None:
    """One pass of the assembler, keys relative to the session's ``prefix`` (``../`` is the
    stream's): segments and log parts in parallel, then the playlists in their order (media
    playlists before the masters that point at them). Raises on the first failure (nothing of
    the pass is committed; a later pass writes the same bytes again)."""

    def at(name: str) -> str:
        return posixpath.normpath(f"{prefix}/{name}")

    work = [(put_segment, at(k), b) for k, b in segments] + [(put_log, at(k), b) for k, b in logs]
    if work:
        with ThreadPoolExecutor(max_workers=min(8, len(work))) as pool:
            for future in [pool.submit(fn, k, b) for fn, k, b in work]:
                future.result()
    for name, text in playlists:
        put_playlist(at(name), text)


def read_log(prefix: str) -> list[str]:
    """Every line of the published log's checkpoint under ``prefix`` (``<session>/log/``), parts
    in order (a session's recovery after Redis lost it)."""
    lines: list[str] = []
    for name in sorted(list_keys(prefix)):
        raw = get_bytes(name) or b""
        lines += [line for line in raw.decode().splitlines() if line.strip()]
    return lines


def put_file(key: str, path: "Path", *, content_type: str, cache: str = SEGMENT_CACHE) -> None:
    """Upload a local file (multipart when large): a clip's MP4 (``clips/tasks.py``). Callers
    use a key of its own per content: objects are never written again with other bytes."""
    client().upload_file(
        str(path),
        settings.S3_BUCKET,
        key,
        ExtraArgs={"ContentType": content_type, "CacheControl": cache},
    )


def download_file(key: str, path: "Path") -> bool:
    """Download an object into a local file; False when there is no such object."""
    s3 = client()
    try:
        s3.download_file(settings.S3_BUCKET, key, str(path))
    except s3.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
            return False
        raise
    return True
