"""Fault tests: the live pipeline keeps going through every single fault (docs/pipeline.md "Faults").

Each test runs the whole stack as real processes (``process_stack``: prefork Celery worker,
beat, ingest supervisor, web, nginx-rtmp, edge, its own SeaweedFS and Redis), publishes the
golive test pattern, causes one fault mid-broadcast, and asserts the outcome:

- the live playlist keeps advancing, or resumes within the bound stated in the test;
- no published object was overwritten with different bytes (ETags of every object, every 0.5 s);
- every segment of the recording decodes, its timestamps increase (across segments too, except
  where the playlist says a discontinuity);
- the stream ends offline and its session ends;
- the same key can publish again within 10 s.

Bounds (docs/pipeline.md "Faults"), with the fixture's timings (INGEST_SILENCE_SECONDS=8,
RECONCILE_INTERVAL_SECONDS=1, grace 3 s, 2 s chunks).
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from pathlib import Path

import pytest

from streams.models import SessionStatus, StreamSession
from streams.playback import stream_prefix
from tests.factories import make_stream
from tests.fixtures.stack import (
    ObjectWatch,
    ProcessStack,
    cmdline,
    latest_session,
    live_source_url,
    playlist_count,
    stream_status,
    wait_for,
)
from tests.pipeline.media import decode_errors, packets, segment_uris
from transcoding import state

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]

RESUME_BOUND_S = 20.0  # the live playlist lists new segments again within this after a fault
OFFLINE_BOUND_S = 15.0  # a publisher gone without on_publish_done: offline within this


def _advances(url: str, by: int, timeout: float) -> float:
    """Seconds until the live playlist lists ``by`` more segments than now."""
    start = playlist_count(url)
    return wait_for(lambda: playlist_count(url) >= max(start, 0) + by, timeout, f"{by} new segments at {url}")


def _source_segments_decode(stack: ProcessStack, session: StreamSession, tmp: Path) -> int:
    """Every segment of the recording's source rendition decodes; video timestamps increase
    within each segment, and across segments unless a discontinuity is declared."""
    from transcoding import storage

    text = storage.get_bytes(f"{session.storage_prefix}/source/index.m3u8")
    assert text is not None, "no recording"
    playlist = text.decode()
    assert "#EXT-X-ENDLIST" in playlist
    lines = playlist.splitlines()
    disc_before: set[str] = set()
    for i, line in enumerate(lines):
        if line == "#EXT-X-DISCONTINUITY":
            disc_before.add(next(x for x in lines[i:] if x and not x.startswith("#")))
    last_dts = None
    uris = segment_uris(playlist)
    assert uris
    tmp.mkdir(parents=True, exist_ok=True)
    for uri in uris:
        data = storage.get_bytes(f"{session.storage_prefix}/source/{uri}")
        assert data, uri
        path = tmp / uri
        path.write_bytes(data)
        complaints = decode_errors(path)
        assert "error" not in complaints.lower(), (uri, complaints)
        video = [dts for dts, _ in packets(path).get("video", [])]
        assert video, uri
        assert all(b > a for a, b in itertools.pairwise(video)), f"{uri}: video DTS not increasing"
        if last_dts is not None and uri not in disc_before:
            assert video[0] > last_dts, f"{uri}: starts before the previous segment ended (no discontinuity)"
        last_dts = video[-1]
    return len(uris)


def _ends_and_publishes_again(stack: ProcessStack, stream_id: int, key: str, publisher) -> None:
    """The broadcast's publisher ends by itself (never dropped: exit code 0); the stream goes
    offline, its session ends, and the same key is accepted again within 10 s."""
    assert publisher.wait(timeout=90) == 0, "the publisher was dropped"
    wait_for(lambda: stream_status(stream_id) == "offline", OFFLINE_BOUND_S, "stream offline")
    wait_for(lambda: latest_session(stream_id).status == SessionStatus.ENDED, 60, "session ended")
    again = stack.publish_accepted(key, within_s=10, duration_s=3)
    wait_for(lambda: stream_status(stream_id) == "live", 10, "live again")
    again.wait(timeout=30)


def _no_dead_roles(stack: ProcessStack) -> None:
    assert stack.dead_roles() == [], f"processes died: {stack.dead_roles()}"


def test_redis_restart_during_a_broadcast(process_stack: ProcessStack, user, tmp_path):
    stack = process_stack
    stream, key = make_stream(user)
    publisher = stack.publish(key, duration_s=26)
    wait_for(lambda: stream_status(stream.pk) == "live", 20, "live")
    session = latest_session(stream.pk)
    url = live_source_url(stack, stream.pk)
    _advances(url, 2, 30)
    with ObjectWatch(stream_prefix(stream.pk) + "/") as watch:
        stack.restart_redis(down_s=3)  # every key is lost: state, broker queues, client maps
        time.sleep(5)
        # Every process rides it out (the Celery worker included: livestream/celery.py,
        # tests/pipeline/test_broker_restart.py); none is restarted by the test.
        assert stack.dead_roles() == [], f"processes died: {stack.dead_roles()}"
        resumed = _advances(url, 2, RESUME_BOUND_S)
        _ends_and_publishes_again(stack, stream.pk, key, publisher)
    _no_dead_roles(stack)
    assert watch.overwritten == [], watch.overwritten
    assert resumed < RESUME_BOUND_S
    count = _source_segments_decode(stack, StreamSession.objects.get(pk=session.pk), tmp_path)
    assert count >= 6  # ~26 s of 2 s chunks, minus the outage window


def test_ingest_supervisor_killed(process_stack: ProcessStack, user, tmp_path):
    stack = process_stack
    stream, key = make_stream(user)
    publisher = stack.publish(key, duration_s=30)
    wait_for(lambda: stream_status(stream.pk) == "live", 20, "live")
    session = latest_session(stream.pk)
    url = live_source_url(stack, stream.pk)
    _advances(url, 2, 30)
    with ObjectWatch(stream_prefix(stream.pk) + "/") as watch:
        segmenters = [pid for pid in stack.children("ingest") if "ffmpeg" in cmdline(pid)]
        assert segmenters
        stack.kill("ingest")
        # Parent-death signal: the segmenter's ffmpeg ends with its supervisor.
        wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in segmenters), 5, "segmenter ffmpeg gone")
        stack.start("ingest")  # what make run's respawn / compose's restart policy do
        resumed = _advances(url, 2, RESUME_BOUND_S)
        assert publisher.poll() in (None, 0), "the publisher was never dropped"
        _ends_and_publishes_again(stack, stream.pk, key, publisher)
    assert watch.overwritten == [], watch.overwritten
    assert resumed < RESUME_BOUND_S
    _source_segments_decode(stack, StreamSession.objects.get(pk=session.pk), tmp_path)
    _no_dead_roles(stack)


def test_segmenter_ffmpeg_killed_while_the_publisher_stays(process_stack: ProcessStack, user, tmp_path):
    stack = process_stack
    stream, key = make_stream(user)
    publisher = stack.publish(key, duration_s=26)
    wait_for(lambda: stream_status(stream.pk) == "live", 20, "live")
    session = latest_session(stream.pk)
    url = live_source_url(stack, stream.pk)
    _advances(url, 2, 30)
    with ObjectWatch(stream_prefix(stream.pk) + "/") as watch:
        segmenters = [pid for pid in stack.children("ingest") if "ffmpeg" in cmdline(pid)]
        assert segmenters
        os.kill(segmenters[0], signal.SIGKILL)
        resumed = _advances(url, 2, RESUME_BOUND_S)
        assert publisher.poll() in (None, 0), "the publisher was never dropped"
        assert stream_status(stream.pk) == "live" or publisher.poll() == 0
        _ends_and_publishes_again(stack, stream.pk, key, publisher)
    assert watch.overwritten == [], watch.overwritten
    assert resumed < RESUME_BOUND_S
    _source_segments_decode(stack, StreamSession.objects.get(pk=session.pk), tmp_path)
    _no_dead_roles(stack)


def test_nginx_rtmp_killed(process_stack: ProcessStack, user, tmp_path):
    stack = process_stack
    stream, key = make_stream(user)
    publisher = stack.publish(key, duration_s=60)
    wait_for(lambda: stream_status(stream.pk) == "live", 20, "live")
    session = latest_session(stream.pk)
    url = live_source_url(stack, stream.pk)
    _advances(url, 2, 30)
    with ObjectWatch(stream_prefix(stream.pk) + "/") as watch:
        stack.kill_nginx_rtmp()  # -9: no on_publish_done ever comes
        publisher.wait(timeout=20)
        offline = wait_for(
            lambda: stream_status(stream.pk) == "offline", OFFLINE_BOUND_S, "offline without on_publish_done"
        )
        stack.start("rtmp")
        time.sleep(0.5)
        again = stack.publish_accepted(key, within_s=10, duration_s=5)
        wait_for(lambda: stream_status(stream.pk) == "live", 10, "live again")
        again.wait(timeout=40)
        wait_for(lambda: stream_status(stream.pk) == "offline", OFFLINE_BOUND_S, "offline")
        wait_for(lambda: latest_session(stream.pk).status == SessionStatus.ENDED, 60, "session ended")
    assert offline < OFFLINE_BOUND_S
    assert watch.overwritten == [], watch.overwritten
    for done in StreamSession.objects.filter(stream=stream):
        wait_for(lambda done=done: StreamSession.objects.get(pk=done.pk).status == SessionStatus.ENDED, 60, "ended")
    _source_segments_decode(stack, StreamSession.objects.get(pk=session.pk), tmp_path / "first")
    _no_dead_roles(stack)


def test_worker_killed_mid_transcode(process_stack: ProcessStack, user, tmp_path):
    stack = process_stack
    stream, key = make_stream(user)
    publisher = stack.publish(key, duration_s=30)
    wait_for(lambda: stream_status(stream.pk) == "live", 20, "live")
    session = latest_session(stream.pk)
    url = live_source_url(stack, stream.pk)
    _advances(url, 2, 30)
    with ObjectWatch(stream_prefix(stream.pk) + "/") as watch:
        # Progressive transcoding keeps a task running through each chunk: kill the pool's
        # processes mid-transcode (the worker's main process replaces them).
        pool = stack.children("worker")
        assert pool
        for pid in pool:
            os.kill(pid, signal.SIGKILL)
        advanced = _advances(url, 3, RESUME_BOUND_S)
        # Then the whole worker, restarted like a crashed process: the transcode leases lapse
        # and the reconciler queues their chunks again.
        stack.kill("worker")
        time.sleep(1)
        stack.start("worker")
        resumed = _advances(url, 2, RESUME_BOUND_S + 10)
        _ends_and_publishes_again(stack, stream.pk, key, publisher)
    assert watch.overwritten == [], watch.overwritten
    assert advanced < RESUME_BOUND_S
    assert resumed < RESUME_BOUND_S + 10
    _source_segments_decode(stack, StreamSession.objects.get(pk=session.pk), tmp_path)
    _no_dead_roles(stack)


def test_s3_outage_costs_no_segment(process_stack: ProcessStack, user, tmp_path):
    stack = process_stack
    stream, key = make_stream(user)
    publisher = stack.publish(key, duration_s=30)
    wait_for(lambda: stream_status(stream.pk) == "live", 20, "live")
    session = latest_session(stream.pk)
    url = live_source_url(stack, stream.pk)
    _advances(url, 2, 30)
    with ObjectWatch(stream_prefix(stream.pk) + "/") as watch:
        stack.stop_s3()
        time.sleep(10)
        stack.start_s3()
        resumed = _advances(url, 2, RESUME_BOUND_S)
        assert state.gap_count(session.pk) == 0, "chunks produced during the S3 outage became gaps"
        _ends_and_publishes_again(stack, stream.pk, key, publisher)
    assert watch.overwritten == [], watch.overwritten
    assert resumed < RESUME_BOUND_S
    from transcoding import storage

    playlist = storage.get_bytes(f"{session.storage_prefix}/source/index.m3u8")
    assert playlist is not None
    assert b"#EXT-X-DISCONTINUITY" not in playlist, "the outage must not leave a hole in the recording"
    _source_segments_decode(stack, StreamSession.objects.get(pk=session.pk), tmp_path)
    _no_dead_roles(stack)
