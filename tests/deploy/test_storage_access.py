"""Least-privilege storage: the compose stack's storage-init job (deploy/minio/init.sh) gives
the app a user that can do exactly the platform's object operations in its bucket, and makes
only ``live/`` anonymously readable; ``init_storage`` applies the same viewer policy, and the
app runs with a user that may not manage buckets or policies.

No MinIO server is installable here: the job runs against a stand-in ``mc`` that records what
it is asked to do, and the policies are checked against every S3 operation the platform
really performs. The Python side runs against a real SeaweedFS with an administrator and a
bucket-scoped app identity (it enforces both identities and bucket policies).
"""

import fnmatch
import json
import random
import shutil
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from django.core.management import CommandError, call_command

from livestream import devstack
from streams.playback import PUBLIC_PREFIX
from transcoding import storage

ROOT = Path(__file__).resolve().parents[2]
INIT = ROOT / "deploy" / "minio" / "init.sh"
BUCKET = "livestream"

STUB_MC = textwrap.dedent(
    """\
    #!/bin/sh
    printf '%s\\n' "$*" >> "$MC_DIR/calls"
    case "$1 $2 $3" in
      "admin policy create") cp "$6" "$MC_DIR/app-policy.json" ;;
      "admin policy attach")
        if [ -e "$MC_DIR/attached" ]; then
          echo "mc: <ERROR> The specified policy change is already in effect." >&2
          exit 1
        fi
        : > "$MC_DIR/attached" ;;
    esac
    if [ "$1 $2" = "anonymous set-json" ]; then cp "$3" "$MC_DIR/viewer-read.json"; fi
    exit 0
    """
)

# IAM action each S3 API operation of the platform needs (AWS's "actions defined by Amazon S3").
OPERATION_ACTIONS = {
    "HeadBucket": ("s3:ListBucket", "bucket"),
    "ListObjectsV2": ("s3:ListBucket", "bucket"),
    "GetObject": ("s3:GetObject", "object"),
    "HeadObject": ("s3:GetObject", "object"),
    "PutObject": ("s3:PutObject", "object"),
    "DeleteObject": ("s3:DeleteObject", "object"),
    "DeleteObjects": ("s3:DeleteObject", "object"),
    "GetBucketLocation": ("s3:GetBucketLocation", "bucket"),
}


def job_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    (bindir / "mc").write_text(STUB_MC)
    (bindir / "mc").chmod(0o755)
    env = {
        "PATH": f"{bindir}:/usr/bin:/bin",
        "MC_DIR": str(tmp_path),
        "TMPDIR": str(tmp_path),
        "MINIO_ROOT_USER": "storage-admin",
        "MINIO_ROOT_PASSWORD": "admin-Pw-7f3a9c1e55d04b2c",
        "S3_ACCESS_KEY": "livestream-app",
        "S3_SECRET_KEY": "app-Sk-0b8e6d2f94a14c7e9d3b",
        "S3_BUCKET": BUCKET,
        "S3_ENDPOINT_URL": "http://minio:9000",
    }
    return {**env, **overrides}


def run_job(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(INIT)], env=env, capture_output=True, text=True, timeout=30, check=False)


def allowed(policy: dict, action: str, resource: str) -> bool:
    """Whether an identity policy's Allow statements grant ``action`` on ``resource`` (no Deny
    statements are used here; wildcards as IAM matches them)."""
    for statement in policy["Statement"]:
        if statement["Effect"] != "Allow":
            continue
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        if any(fnmatch.fnmatchcase(action, a) for a in actions) and any(
            fnmatch.fnmatchcase(resource, r) for r in resources
        ):
            return True
    return False


# --- the storage-init job -------------------------------------------------------------------
def test_storage_init_creates_bucket_app_user_and_viewer_read(tmp_path):
    env = job_env(tmp_path)
    done = run_job(env)
    assert done.returncode == 0, done.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[0] == f"alias set origin http://minio:9000 {env['MINIO_ROOT_USER']} {env['MINIO_ROOT_PASSWORD']}"
    assert f"mb --ignore-existing origin/{BUCKET}" in calls
    assert f"admin user add origin livestream-app {env['S3_SECRET_KEY']}" in calls
    assert "admin policy attach origin livestream-app --user livestream-app" in calls
    # The administrator's password is used for the alias only; it is in no policy or user.
    assert sum(env["MINIO_ROOT_PASSWORD"] in call for call in calls) == 1

    app = json.loads((tmp_path / "app-policy.json").read_text())
    grants = {
        (action, resource)
        for statement in app["Statement"]
        for action in statement["Action"]
        for resource in statement["Resource"]
    }
    assert grants == {
        ("s3:GetObject", f"arn:aws:s3:::{BUCKET}/*"),
        ("s3:PutObject", f"arn:aws:s3:::{BUCKET}/*"),
        ("s3:DeleteObject", f"arn:aws:s3:::{BUCKET}/*"),
        ("s3:ListBucket", f"arn:aws:s3:::{BUCKET}"),
        ("s3:GetBucketLocation", f"arn:aws:s3:::{BUCKET}"),
    }
    for forbidden in ("s3:CreateBucket", "s3:DeleteBucket", "s3:PutBucketPolicy", "s3:GetBucketPolicy", "admin:*"):
        assert not allowed(app, forbidden, f"arn:aws:s3:::{BUCKET}"), forbidden
    assert not allowed(app, "s3:GetObject", "arn:aws:s3:::another-bucket/x")

    viewer = json.loads((tmp_path / "viewer-read.json").read_text())
    # The very statement init_storage applies (transcoding/storage.py).
    assert viewer == storage.viewer_read_policy(BUCKET)
    assert allowed(viewer, "s3:GetObject", f"arn:aws:s3:::{BUCKET}/{PUBLIC_PREFIX}12/34/360p/seg_000001.ts")
    assert not allowed(viewer, "s3:GetObject", f"arn:aws:s3:::{BUCKET}/private/x")
    assert not allowed(viewer, "s3:ListBucket", f"arn:aws:s3:::{BUCKET}")

    again = run_job(env)  # every `compose up` runs it: the attach of an existing user is fine
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize("missing", ["MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "S3_ACCESS_KEY", "S3_SECRET_KEY"])
def test_storage_init_refuses_to_run_without_its_credentials(tmp_path, missing):
    env = job_env(tmp_path)
    del env[missing]
    done = run_job(env)
    assert done.returncode != 0
    assert missing in done.stderr
    assert not (tmp_path / "calls").exists()


def test_the_app_never_gets_the_administrator(tmp_path):
    done = run_job(job_env(tmp_path, S3_ACCESS_KEY="storage-admin"))
    assert done.returncode != 0
    assert "must differ from MINIO_ROOT_USER" in done.stderr


def test_the_app_policy_covers_every_s3_operation_the_platform_performs(s3, tmp_path):
    """Record the API operations of the storage module's whole surface, then check each
    against the policy the job grants the app user."""
    assert run_job(job_env(tmp_path)).returncode == 0
    app = json.loads((tmp_path / "app-policy.json").read_text())
    seen: list[str] = []
    client = storage.client()
    handler = client.meta.events.register("before-call.s3", lambda model, **_: seen.append(model.name))
    try:
        storage.check_bucket()
        storage.put_segment("live/0/0/360p/seg_000000.ts", b"\x47" * 188)
        storage.put_playlist("live/0/0/360p/live.m3u8", "#EXTM3U\n")
        assert storage.get_bytes("live/0/0/360p/live.m3u8") == b"#EXTM3U\n"
        assert storage.get_bytes("live/0/0/missing.m3u8") is None
        storage.delete_key("live/0/0/360p/live.m3u8")
        assert storage.delete_prefix("live/0/") == 1
    finally:
        client.meta.events.unregister("before-call.s3", handler)
    assert set(seen) >= {"HeadBucket", "PutObject", "GetObject", "ListObjectsV2", "DeleteObject", "DeleteObjects"}
    for operation in seen:
        assert operation in OPERATION_ACTIONS, f"{operation}: add its IAM action here and to deploy/minio/init.sh"
        action, kind = OPERATION_ACTIONS[operation]
        resource = f"arn:aws:s3:::{BUCKET}" + ("/live/0/x" if kind == "object" else "")
        assert allowed(app, action, resource), f"{operation} needs {action}"


# --- init_storage against a SeaweedFS with an administrator and a scoped app identity -------
ADMIN = ("storage-admin", "admin-secret-5b7c1e0f9a2d4c6e")
APP = ("livestream-app", "app-secret-8d2a6f4b1c9e7a3d")


def _weed_port() -> int:
    """A free port P whose gRPC companion P + 10000 (SeaweedFS's convention) is free and valid:
    an ephemeral port above 55535 would make SeaweedFS fail to start."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 30000)
        if not devstack.port_open(port) and not devstack.port_open(port + 10000):
            return port
    raise RuntimeError("no free port pair for SeaweedFS")


@contextmanager
def _scoped_seaweedfs(workdir: Path) -> Iterator[str]:
    port = _weed_port()
    endpoint = f"http://127.0.0.1:{port}"
    config = workdir / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "admin",
                        "credentials": [{"accessKey": ADMIN[0], "secretKey": ADMIN[1]}],
                        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                    },
                    {
                        "name": "app",
                        "credentials": [{"accessKey": APP[0], "secretKey": APP[1]}],
                        "actions": [f"Read:{BUCKET}", f"Write:{BUCKET}", f"List:{BUCKET}"],
                    },
                    # No anonymous identity: only the bucket policy may let viewers in.
                ]
            }
        )
    )
    argv = [
        devstack.weed_binary(),
        "mini",
        f"-dir={workdir / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-webdav=false",
        "-admin.ui=false",
        f"-s3.port={port}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
    ]
    (workdir / "data").mkdir(parents=True, exist_ok=True)
    log = workdir / "weed.log"
    with devstack.running(argv, log):
        try:
            devstack.wait_until(lambda: devstack.port_open(port), 60, "scoped SeaweedFS")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; its log ends: {log.read_text(errors='replace')[-1500:]}") from None
        yield endpoint


@contextmanager
def _as(settings, endpoint: str, identity: tuple[str, str]) -> Iterator[None]:
    settings.S3_ENDPOINT_URL = endpoint
    settings.S3_BUCKET = BUCKET
    settings.S3_ACCESS_KEY, settings.S3_SECRET_KEY = identity
    storage.client.cache_clear()
    try:
        yield
    finally:
        storage.client.cache_clear()


def test_least_privileged_app_and_viewer_read_of_live_only(settings):
    # Not under pytest's basetemp: concurrent pytest runs of other users rotate those away.
    workdir = Path(tempfile.mkdtemp(prefix="scoped-s3-"))
    try:
        _check_least_privilege(settings, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _check_least_privilege(settings, workdir: Path) -> None:
    with _scoped_seaweedfs(workdir) as endpoint:
        # The app alone cannot set the store up: no bucket creation, no policies.
        with _as(settings, endpoint, APP), pytest.raises(CommandError, match="bucket"):
            call_command("init_storage", check=True, timeout=3)
        # The administrator runs init_storage once (the storage-init job's role).
        with _as(settings, endpoint, ADMIN):
            call_command("init_storage", timeout=30)
            call_command("init_storage", timeout=30)  # idempotent
        with _as(settings, endpoint, APP):
            call_command("init_storage", check=True, timeout=30)
            with pytest.raises(CommandError, match="could not set the bucket policy"):
                call_command("init_storage", timeout=10)
            storage.put_playlist("live/7/8/360p/live.m3u8", "#EXTM3U\n")
            storage.put_segment("private/notes.ts", b"\x47" * 188)
            storage.put_segment("bench-probe/x.ts", b"\x47" * 188)
            try:
                base = f"{endpoint}/{BUCKET}"
                viewer = requests.get(f"{base}/live/7/8/360p/live.m3u8", timeout=5)
                assert viewer.status_code == 200
                assert viewer.text == "#EXTM3U\n"
                assert requests.get(f"{base}/private/notes.ts", timeout=5).status_code == 403
                assert requests.get(f"{base}/bench-probe/x.ts", timeout=5).status_code == 403
                assert requests.get(f"{base}/", timeout=5).status_code == 403  # no listing
                assert requests.get(f"{base}/?prefix=live/", timeout=5).status_code == 403
                assert requests.put(f"{base}/live/7/8/evil.ts", data=b"x", timeout=5).status_code == 403
            finally:
                storage.delete_keys(storage.list_keys(""))
