"""More live streams than the workers can transcode in real time: the pipeline sheds the top
rungs, every stream's ``source`` rendition stays complete, and every rung comes back once the
load drops (transcoding/shedding.py).

Real processes: one prefork Celery worker (``--concurrency 1``) with the project's settings,
fed with real 720p chunks (ladder: source, 480p, 360p) for eight sessions at real-time pace,
one chunk per session and second; then one session alone. Checked against the input: every
chunk fed is published, with a source segment in S3; the shed ones are EXT-X-GAP entries of
their rung, without an object.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from celery import Celery
from django.conf import settings
from django.db import connection

from livestream import devstack, metrics
from livestream.redis import redis_client
from streams.playback import session_prefix, stream_prefix
from tests.pipeline.test_tasks import _make_chunks
from transcoding import assembler, shedding, state, storage

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parent.parent.parent
SESSIONS = [987_700 + n for n in range(8)]
STREAM_OF = {s: 98_770 + n for n, s in enumerate(SESSIONS)}
OVERLOADED_CHUNKS = 12  # per session, one a second
ALONE_CHUNKS = 20  # the first session alone afterwards


def _worker(tmp_path: Path, broker: str) -> subprocess.Popen[bytes]:
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "livestream.settings.test",
        "DATABASE_URL": (
            f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        ),
        "CELERY_BROKER_URL": broker,
        "TEST_CELERY_BROKER_URL": broker,
        "REDIS_URL": settings.REDIS_URL,
        "TEST_REDIS_URL": settings.REDIS_URL,
        "S3_ENDPOINT_URL": settings.S3_ENDPOINT_URL,
        "CHUNK_SECONDS": "1",
        "LIVE_DEADLINE_SECONDS": "60",  # the source must never miss it: a gap here is a bug
        "OVERLOAD_LATE_SECONDS": "1",
        "OVERLOAD_RESTORE_AFTER_CHUNKS": "3",
        "CELERY_TASK_ALWAYS_EAGER": "0",
        "PYTHONUNBUFFERED": "1",
    }
    log = (tmp_path / "worker.log").open("wb")
    bin_dir = Path(sys.executable).parent
    return subprocess.Popen(
        [str(bin_dir / "celery"), "-A", "livestream", "worker", "-n", f"overload{os.getpid()}@%h", "-Q", "transcode",
         "--pool", "prefork", "--concurrency", "1", "--without-gossip", "--without-mingle", "-l", "INFO"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


def test_overload_sheds_rungs_keeps_the_source_and_restores_them(
    tmp_path: Path, s3: str, transactional_db: None
) -> None:
    chunks = _make_chunks(tmp_path, "1280x720")
    base = settings.REDIS_URL.rsplit("/", 1)[0]
    broker = f"{base}/13"
    redis_client().flushdb()
    # A run that failed may have left tasks in this broker: they would mark future chunks as gaps.
    redis.Redis.from_url(broker).flushdb()
    for session in SESSIONS:
        state.start_epoch(session)
        state.remember_stream(session, STREAM_OF[session])
    sender = Celery("overload-sender")
    fed: dict[int, int] = dict.fromkeys(SESSIONS, 0)

    def feed(session: int) -> None:
        data, start, end = chunks[fed[session] % len(chunks)]
        seq = state.add_chunk(session, data=data, start=start, end=end, wall=time.time(), conn=1, disc=False)
        fed[session] += 1
        with sender.connection_for_write(broker) as connection:
            sender.send_task(
                "transcoding.tasks.transcode_chunk",
                args=(session, seq, 0, 1, state.epoch(session)),
                queue="transcode",
                connection=connection,
            )

    worker = _worker(tmp_path, broker)
    shed_seen: set[int] = set()
    try:
        devstack.wait_until(lambda: b"ready" in (tmp_path / "worker.log").read_bytes(), 60, "celery worker")
        for _ in range(OVERLOADED_CHUNKS):
            tick = time.monotonic()
            for session in SESSIONS:
                feed(session)
            shed_seen |= {int(k) for k in redis_client().hkeys(metrics.SHED_KEY)}
            time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
        alone = SESSIONS[0]
        for _ in range(ALONE_CHUNKS):
            tick = time.monotonic()
            feed(alone)
            shed_seen |= {int(k) for k in redis_client().hkeys(metrics.SHED_KEY)}
            time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
        devstack.wait_until(
            lambda: all(state.next_to_publish(s) >= fed[s] for s in SESSIONS), 90, "every chunk settled"
        )
        log = (tmp_path / "worker.log").read_text(errors="replace")
        assert worker.poll() is None, log[-3000:]

        shed_entries = 0
        for session in SESSIONS:
            entries = state.published(session)
            # The source is complete: every chunk fed is published, none is a gap, each has bytes.
            why = redis_client().hgetall(state.key(session, "gapwhy"))
            dropped = [line for line in log.splitlines() if "dropped" in line or "given up" in line]
            assert state.gap_count(session) == 0, (session, why, dropped[:10], log[-1500:])
            assert len(entries) == fed[session], session
            prefix = session_prefix(STREAM_OF[session], session)
            for entry in entries:
                assert entry.sizes["source"] > 0
                assert storage.get_bytes(f"{prefix}/source/{entry.name}") is not None
                for rung in ("480p", "360p"):
                    stored = storage.get_bytes(f"{prefix}/{rung}/{entry.name}")
                    assert (stored is None) == (entry.sizes[rung] == 0), (session, entry, rung)
            shed_entries += sum(1 for e in entries if e.sizes["480p"] == 0)
            # Playlists stay valid: a shed segment is a gap of its rung, never of the source.
            live = assembler.live_playlist(STREAM_OF[session], session, "480p", "live") or ""
            window = state.window(session).entries
            assert live.count("#EXT-X-GAP") == sum(1 for e in window if e.sizes["480p"] == 0)
            assert "#EXT-X-GAP" not in (assembler.live_playlist(STREAM_OF[session], session, "source", "live") or "")
        # Shedding happened, and was reported while it lasted (metrics; the dashboard reads the same state).
        assert shed_entries > 0
        assert shed_seen
        assert "overload: shedding 480p" in log
        # The load dropped: the session left alone has every rung again.
        assert shedding.status(alone) is None
        assert redis_client().hget(metrics.SHED_KEY, str(alone)) is None
        last = state.published(alone)[-3:]
        assert all(e.sizes["480p"] > 0 and e.sizes["360p"] > 0 for e in last), last
    finally:
        devstack.stop_process(worker, timeout=5)
        for session in SESSIONS:
            state.purge(session)
            storage.delete_prefix(stream_prefix(STREAM_OF[session]) + "/")
        redis_client().delete(metrics.SHED_KEY)
