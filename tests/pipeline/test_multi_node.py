"""Two ingest nodes on one machine (``multi_node_stack``: node-a on 127.0.0.2, node-b on
127.0.0.3, each its own nginx-rtmp and ingest supervisor; two prefork Celery worker processes;
one web app and one edge; shared PostgreSQL, Redis and S3), docs/pipeline.md "Ingest nodes".

One stream publishes to each node (a pre-encoded file with every frame's number drawn into it,
published in real time); both play through the edge. Then node A's processes are killed by
PID: stream B keeps advancing, stream A's session waits (not ended) and its key publishes on
node B at once, where its segments advance again. Finally re-keying stream B drops its
publisher through node B's registered control URL, and only that one.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import requests

from streams import services as stream_services
from streams.models import SessionStatus, Stream, StreamSession
from tests.factories import make_stream
from tests.fixtures.stack import MultiNodeStack, latest_session, playlist_count, stream_status, wait_for
from tests.pipeline.media import Source, decode_segment, parse_master, publish_file, segment_uris, source_file
from transcoding import state

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]

# Small and cheap to transcode (two streams on two cores), long enough for the whole test.
SOURCE = Source("multi-node-360p", 640, 360, 30, 800, seconds=100)
TAKEOVER_BOUND_S = 10.0  # A's key is accepted on node B within this after node A is killed


def _media_url(stack: MultiNodeStack, stream_id: int) -> str:
    """The master playlist at the edge; returns the source rendition's live playlist URL."""
    found: list[str] = []

    def ready() -> bool:
        try:
            response = requests.get(f"{stack.edge_url}/live/{stream_id}/master.m3u8", timeout=3)
        except requests.RequestException:
            return False
        if response.status_code != 200:
            return False
        variants = parse_master(response.text)
        if not variants:
            return False
        found[:] = [f"{stack.edge_url}/live/{stream_id}/{v.uri}" for v in variants if "/source/" in v.uri]
        return bool(found)

    wait_for(ready, 60, f"the master playlist of stream {stream_id} at the edge")
    return found[0]


def _advances(url: str, by: int, timeout: float) -> float:
    start = max(playlist_count(url), 0)
    return wait_for(lambda: playlist_count(url) >= start + by, timeout, f"{by} new segments at {url}")


def _last_segment_frames(url: str, tmp: Path) -> list[int]:
    """Download the newest segment of a live media playlist through the edge, decode it on its
    own and return the frame numbers drawn into its frames."""
    playlist = requests.get(url, timeout=5)
    assert playlist.status_code == 200, url
    uris = segment_uris(playlist.text)
    assert uris, playlist.text
    segment = requests.get(f"{url.rsplit('/', 1)[0]}/{uris[-1]}", timeout=10)
    assert segment.status_code == 200
    assert segment.headers["Content-Type"] == "video/mp2t"
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / uris[-1].replace("/", "_")
    path.write_bytes(segment.content)
    decoded = decode_segment(path, SOURCE)
    assert decoded.first_is_key, uris[-1]
    assert len(decoded.numbers) >= SOURCE.fps, decoded.numbers  # 2 s chunks, 1 s GOPs: at least a second
    assert decoded.numbers == list(range(decoded.numbers[0], decoded.numbers[0] + len(decoded.numbers)))
    return decoded.numbers


def _publish_until_taken_over(url: str, path: Path, session_id: int, within_s: float) -> subprocess.Popen[bytes]:
    """Publish again and again until the session is live on its next connection (a refused
    publish exits at once; a loaded machine may take seconds to start ffmpeg, so acceptance is
    read from the database, not from the publisher still running)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        proc = publish_file(url, path)
        while proc.poll() is None and time.monotonic() < deadline:
            session = StreamSession.objects.get(pk=session_id)
            if session.connections >= 2 and session.status == SessionStatus.LIVE:
                return proc
            time.sleep(0.1)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        time.sleep(0.2)
    raise AssertionError(f"publish to {url} did not take session {session_id} over within {within_s} s")


def test_two_ingest_nodes_and_losing_one(multi_node_stack: MultiNodeStack, user, tmp_path):
    stack = multi_node_stack
    node_a, node_b = stack.nodes["node-a"], stack.nodes["node-b"]
    media = source_file(SOURCE)
    stream_a, key_a = make_stream(user, title="On node A")
    stream_b, key_b = make_stream(user, title="On node B")
    publishers: list[subprocess.Popen[bytes]] = []
    try:
        publishers.append(pub_a := publish_file(f"{node_a.rtmp_url}/{key_a}", media))
        publishers.append(pub_b := publish_file(f"{node_b.rtmp_url}/{key_b}", media))
        wait_for(lambda: stream_status(stream_a.pk) == "live" and stream_status(stream_b.pk) == "live", 20, "both live")
        session_a, session_b = latest_session(stream_a.pk), latest_session(stream_b.pk)
        # Each publish is received, queued and segmented on its own node.
        assert state.ingest_node(session_a.pk, 1) == "node-a"
        assert state.ingest_node(session_b.pk, 1) == "node-b"
        wait_for(
            lambda: (
                set(state.node_heartbeats("node-a")) == {(session_a.pk, 1)}
                and set(state.node_heartbeats("node-b")) == {(session_b.pk, 1)}
            ),
            15,
            "each node's supervisor segmenting its own publish",
        )

        # Both play through the edge: master, media playlist, segments that decode.
        url_a, url_b = _media_url(stack, stream_a.pk), _media_url(stack, stream_b.pk)
        _advances(url_a, 2, 40)
        _advances(url_b, 2, 40)
        _last_segment_frames(url_a, tmp_path / "a")
        before_kill_b = _last_segment_frames(url_b, tmp_path / "b")

        # Node A is lost: its nginx-rtmp and its supervisor, SIGKILLed by PID.
        killed_at = time.monotonic()
        pids = stack.kill_node("node-a")
        wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids), 5, "node A's processes gone")
        assert pub_a.wait(timeout=20) != 0  # its publisher lost the connection
        count_b = playlist_count(url_b)

        # Node A's registration lapses within INGEST_NODE_TTL_SECONDS; its session waits for
        # a reconnect (not ended), stream B is untouched.
        wait_for(lambda: not state.node_is_alive("node-a"), 6, "node A's registration lapsed")
        assert state.nodes() == ["node-b"]
        assert StreamSession.objects.get(pk=session_a.pk).status in (SessionStatus.LIVE, SessionStatus.RECONNECTING)
        assert stream_status(stream_b.pk) == "live"

        # A's key publishes on node B at once: the same session resumes on a new connection there.
        remaining = TAKEOVER_BOUND_S - (time.monotonic() - killed_at)
        again = _publish_until_taken_over(f"{node_b.rtmp_url}/{key_a}", media, session_a.pk, remaining)
        publishers.append(again)
        taken_over_s = time.monotonic() - killed_at
        assert stream_status(stream_a.pk) == "live"
        resumed = StreamSession.objects.get(pk=session_a.pk)
        assert (resumed.status, resumed.connections) == (SessionStatus.LIVE, 2)
        assert state.ingest_node(session_a.pk, 2) == "node-b"
        wait_for(lambda: (session_a.pk, 2) in state.node_heartbeats("node-b"), 10, "node B segmenting stream A")

        # Stream B kept advancing through the loss of node A; stream A advances again from node B.
        wait_for(lambda: playlist_count(url_b) >= count_b + 3, 30, "stream B advancing after the kill")
        after_kill_b = _last_segment_frames(url_b, tmp_path / "b-after")
        assert after_kill_b[0] > before_kill_b[-1]  # later frames of the same, uninterrupted publish
        assert StreamSession.objects.get(pk=session_b.pk).connections == 1
        _advances(url_a, 2, 60)
        _last_segment_frames(url_a, tmp_path / "a-after")
        assert stream_status(stream_b.pk) == "live"

        # Re-keying stream B drops its publisher through node B's registered control URL; A's
        # publisher on the same node stays.
        stream_services.regenerate_key(Stream.objects.get(pk=stream_b.pk))
        pub_b.wait(timeout=10)
        assert pub_b.returncode != 0
        assert again.poll() is None
    finally:
        for proc in publishers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert taken_over_s < TAKEOVER_BOUND_S
