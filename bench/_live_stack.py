"""The platform's live path for benchmarks, outside pytest: the same pieces as the pipeline's
``live_stack`` test fixture (tests/fixtures/pipeline.py), on free ports.

- the bench bucket made anonymously readable if the gateway refuses anonymous reads;
- the web app under uvicorn (nginx-rtmp's on_publish callbacks, against the bench database);
- nginx-rtmp (``devstack.rtmp_config``) and the edge cache (``devstack.edge_config``) in front
  of the S3 origin (SeaweedFS; started here if none answers at S3_ENDPOINT_URL);
- the ingest supervisor (``transcoding.ingest.serve``) in a thread and a real Celery worker
  (``devstack.pipeline_worker``, 2 threads, queues transcode + default) in this process.

Settings are patched in this process for the run (ports, edge URL, callback secret) and
``CHUNK_SECONDS`` per measurement (``LiveStack.set_chunk``), then restored.
"""

import os
import secrets
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings

from livestream import devstack

ROOT = Path(__file__).resolve().parents[1]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (our own edge)
            return int(response.status), response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return int(exc.code), ""
    except (urllib.error.URLError, OSError):
        return 0, ""


@dataclass
class LiveStack:
    rtmp_url: str
    edge_url: str
    workdir: Path
    saved: dict[str, Any] = field(default_factory=dict)
    web_url: str = ""  # the site under uvicorn (watch pages, the chat socket, callbacks)

    def set_chunk(self, seconds: float) -> None:
        settings.CHUNK_SECONDS = seconds

    def new_stream(self, title: str, owner: str = "bench-g2g", mode: str | None = None) -> tuple[int, str]:
        """A fresh stream (own session, own playlists) and the RTMP URL to publish it to.
        ``mode``: its latency mode (``low``: LL-HLS, ADR 0031); by default the one whose chunk
        is CHUNK_SECONDS (the web process computes a stream's chunk from its mode: 1 s chunks
        are the low mode's LOW_LATENCY_CHUNK_SECONDS, others the normal mode's CHUNK_SECONDS)."""
        from accounts.models import User
        from streams import services

        user, _ = User.objects.get_or_create(username=owner, defaults={"email": f"{owner}@example.com"})
        if mode is None:
            mode = "low" if settings.CHUNK_SECONDS <= settings.LOW_LATENCY_CHUNK_SECONDS else "normal"
        created = services.create_stream(user, title=title, keep_recordings=False, latency_mode=mode)
        return created.stream.pk, f"{self.rtmp_url}/{created.key}"

    def watch_url(self, stream_id: int) -> str:
        """The stream's watch page on this stack's site (player + chat socket)."""
        from streams.models import Stream

        return self.web_url + Stream.objects.get(pk=stream_id).get_absolute_url()

    def session_id(self, stream_id: int) -> int | None:
        """The stream's latest session (None before the first publish)."""
        from streams.models import StreamSession

        return StreamSession.objects.filter(stream_id=stream_id).order_by("-pk").values_list("pk", flat=True).first()

    def playback_url(self, stream_id: int) -> str:
        return f"{self.edge_url}/live/{stream_id}/master.m3u8"

    def media_playlist_url(self, stream_id: int) -> str:
        """The first rendition's live media playlist at the edge (from the master)."""
        base = f"{self.edge_url}/live/{stream_id}/"
        _, master = _get(base + "master.m3u8")
        uris = [line for line in master.splitlines() if line and not line.startswith("#")]
        if not uris:
            raise RuntimeError(f"no variants in the master of stream {stream_id}")
        return base + uris[0]

    def wait_playable(self, stream_id: int, *, timeout: float = 60, segments: int = 2) -> None:
        """Until the edge serves the master and every rendition lists ``segments`` segments."""
        base = f"{self.edge_url}/live/{stream_id}/"
        seen: dict[str, object] = {}

        def ready() -> bool:
            status, master = _get(base + "master.m3u8")
            uris = [line for line in master.splitlines() if line and not line.startswith("#")]
            seen["master"] = status
            if status != 200 or not uris:
                return False
            for uri in uris:
                status, text = _get(base + uri)
                seen[uri] = (status, text.count("#EXTINF"))
                if status != 200 or text.count("#EXTINF") < segments:
                    return False
            return True

        try:
            devstack.wait_until(ready, timeout, f"stream {stream_id} playable at the edge")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; last seen {seen}") from None


def _ensure_anonymous_read() -> None:
    """The edge reads the bucket without credentials (as a CDN reads a public origin). A gateway
    whose config does not list the bench bucket for anonymous reads answers 403: then grant
    s3:GetObject with a bucket policy (storage.ensure_public_read)."""
    from transcoding import storage

    probe = "bench-probe/anonymous.m3u8"
    storage.put_playlist(probe, "#EXTM3U\n")
    url = f"{settings.S3_ENDPOINT_URL.rstrip('/')}/{settings.S3_BUCKET}/{probe}"
    try:
        if _get(url)[0] == 403:
            storage.ensure_public_read()
    finally:
        storage.delete_key(probe)


def _ensure_database() -> None:
    """Create the bench database if missing (asked of PostgreSQL directly: the pool would wait
    its whole timeout for a database that does not exist), then migrate it."""
    import psycopg
    from django.core.management import call_command
    from psycopg import sql

    db = settings.DATABASES["default"]
    with psycopg.connect(
        host=db["HOST"], port=db["PORT"], user=db["USER"], password=db["PASSWORD"], dbname="postgres", autocommit=True
    ) as admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db["NAME"],)).fetchone() is None:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db["NAME"])))
    call_command("migrate", verbosity=0, interactive=False)


@contextmanager
def stack(workdir: Path | None = None) -> Iterator[LiveStack]:
    from transcoding import ingest

    var = workdir or Path(tempfile.mkdtemp(prefix="g2g-stack-"))
    var.mkdir(parents=True, exist_ok=True)
    var.chmod(0o755)  # nginx workers run unprivileged when started as root
    rtmp_port, edge_port, web_port = devstack.free_port(), devstack.free_port(), devstack.free_port()
    stat_port = devstack.free_port()
    secret = secrets.token_urlsafe(16)
    patch = {
        "RTMP_PORT": rtmp_port,
        "RTMP_STAT_PORT": stat_port,
        "RTMP_PUBLIC_URL": f"rtmp://127.0.0.1:{rtmp_port}/live",
        "HLS_EDGE_URL": f"http://127.0.0.1:{edge_port}",
        "RTMP_CALLBACK_SECRET": secret,
        "CHUNK_SECONDS": settings.CHUNK_SECONDS,
        "RTMP_RECORD_DIR": var / "record",
    }
    saved = {name: getattr(settings, name) for name in patch}
    for name, value in patch.items():
        setattr(settings, name, value)
    stop = threading.Event()
    supervisor = threading.Thread(target=ingest.serve, args=(stop,), name="ingest-supervisor", daemon=True)
    try:
        with ExitStack() as running:
            _ensure_database()
            running.enter_context(devstack.s3_gateway(var / "s3"))
            _ensure_anonymous_read()
            env = {
                **os.environ,
                "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "livestream.settings.bench"),
                "RTMP_CALLBACK_SECRET": secret,
                "RTMP_PORT": str(rtmp_port),
                "RTMP_PUBLIC_URL": patch["RTMP_PUBLIC_URL"],
                "HLS_EDGE_URL": patch["HLS_EDGE_URL"],
            }
            web = [sys.executable, "-m", "uvicorn", "livestream.asgi:application", "--host", "127.0.0.1",
                   "--port", str(web_port), "--no-access-log", "--log-level", "warning"]  # fmt: skip
            running.enter_context(devstack.running(web, var / "web.log", env=env, cwd=ROOT))
            rtmp_cmd, edge_cmd = devstack.loopback_nginx_commands(
                var,
                rtmp_port=rtmp_port,
                stat_port=stat_port,
                edge_port=edge_port,
                callback_base=f"http://127.0.0.1:{web_port}",
                secret=secret,
                origin=settings.S3_ENDPOINT_URL,
            )
            running.enter_context(devstack.running(rtmp_cmd, var / "rtmp.log", cwd=ROOT))
            running.enter_context(devstack.running(edge_cmd, var / "edge.log", cwd=ROOT))
            devstack.wait_until(
                lambda: (
                    devstack.port_open(web_port) and devstack.port_open(rtmp_port) and devstack.port_open(edge_port)
                ),
                30,
                "stack",
            )
            devstack.purge_broker()
            supervisor.start()
            running.enter_context(devstack.pipeline_worker())
            yield LiveStack(patch["RTMP_PUBLIC_URL"], patch["HLS_EDGE_URL"], var, saved, f"http://127.0.0.1:{web_port}")
    finally:
        stop.set()
        if supervisor.is_alive():
            supervisor.join(timeout=15)
        for name, value in saved.items():
            setattr(settings, name, value)
