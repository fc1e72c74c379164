"""End to end: publish real RTMP, transcode on a real Celery worker, read HLS through the edge.

The live pipeline's acceptance: >= 3 renditions in the master at playback_url; every segment decodes;
the concatenated renditions have continuous, monotonic video and audio timestamps with no hole
longer than one frame; live during, offline after; replay with ENDLIST (keep_recordings) or
nothing left in S3 (no recordings); metadata matches the playlists.
"""

import time
from pathlib import Path

import pytest
from django.conf import settings

from accounts.models import User
from analytics.documents import IngestSample, SessionMetadata
from streams.models import SessionStatus, Stream, StreamSession
from streams.playback import playback_url, replay_url, session_prefix, stream_prefix
from tests.factories import make_stream
from tests.fixtures.pipeline import LiveStack
from tests.pipeline.media import decode_errors, download_rendition, extinf, largest_gap, packets, parse_master
from transcoding import storage

pytestmark = [pytest.mark.pipeline, pytest.mark.django_db(transaction=True)]

FRAME = 1 / 30


def test_publish_transcode_replay(live_stack, user, tmp_path: Path, settings):
    # Every rendition complete: on a loaded machine overload shedding would gap the top rungs by
    # design (tests/pipeline/test_overload.py covers that).
    settings.OVERLOAD_SHEDDING = False
    publish_transcode_replay(live_stack, user, tmp_path)


def publish_transcode_replay(live_stack: LiveStack, user: User, tmp_path: Path) -> StreamSession:
    """The acceptance run of the module doc (also on a Redis Cluster: test_redis_cluster.py);
    returns the ended session."""
    stream, key = make_stream(user, title="E2E", keep_recordings=True)
    publisher = live_stack.publish(key, duration_s=20)
    live_stack.wait_live(stream.pk)

    live = live_stack.wait_segments(stream.pk, 2)
    master = live_stack.get(playback_url(stream))
    assert master.status_code == 200
    assert master.headers["Content-Type"] == "application/vnd.apple.mpegurl"
    assert "max-age=1" in master.headers["Cache-Control"]
    assert master.headers["Access-Control-Allow-Origin"]
    variants = parse_master(master.text)
    assert len(variants) >= 3, master.text
    names = [v.uri.split("/")[-2] for v in variants]
    assert names[:3] == ["source", "480p", "360p"]
    for variant in variants:
        assert int(variant.attrs["BANDWIDTH"]) >= int(variant.attrs["AVERAGE-BANDWIDTH"]) > 0
        assert variant.attrs["CODECS"].startswith("avc1.6400"), variant.attrs
        assert variant.attrs["CODECS"].endswith(",mp4a.40.2")
        assert float(variant.attrs["FRAME-RATE"]) == pytest.approx(30, abs=0.01)
    assert {v.attrs["RESOLUTION"] for v in variants} >= {"1280x720", "854x480", "640x360"}
    segment_url = live["360p"].rsplit("/", 1)[0] + "/seg_000000.ts"
    seg = live_stack.get(segment_url)
    assert seg.headers["Content-Type"] == "video/mp2t"
    assert "immutable" in seg.headers["Cache-Control"]
    assert Stream.objects.get(pk=stream.pk).status == "live"

    assert publisher.wait(timeout=60) == 0, publisher.stderr.read() if publisher.stderr else ""
    live_stack.wait_live(stream.pk, live=False, timeout=15)
    session = live_stack.wait_session_ended(stream.pk, timeout=90)
    assert session.is_replay
    assert session.connections == 1
    assert 18 <= session.duration_s <= 22

    replay = live_stack.get(replay_url(session))
    assert replay.status_code == 200
    replay_variants = parse_master(replay.text)
    base = replay_url(session).rsplit("/", 1)[0]
    meta = SessionMetadata.objects.get(session_id=session.pk)
    counts = {r.name: r.segments for r in meta.renditions}
    for variant in replay_variants:
        name = variant.uri.split("/")[0]
        text, files = download_rendition(f"{base}/{variant.uri}", tmp_path / name)
        assert "#EXT-X-ENDLIST" in text
        assert "#EXT-X-PLAYLIST-TYPE:VOD" in text
        durations = extinf(text)
        assert 18.5 <= sum(durations) <= 21.5, (name, durations)
        target = int(text.split("#EXT-X-TARGETDURATION:")[1].split()[0])
        assert all(round(d) <= target for d in durations)
        assert counts[name] == len(files), (name, counts)
        for path in files:
            assert decode_errors(path) == "", path
        joined = tmp_path / f"{name}.ts"
        joined.write_bytes(b"".join(p.read_bytes() for p in files))
        # One continuous transport stream: no continuity-counter complaints, no holes.
        assert decode_errors(joined) == "", name
        series = packets(joined)
        for kind in ("video", "audio"):
            gap, monotonic = largest_gap(series[kind])
            assert monotonic, (name, kind)
            assert gap <= FRAME + 0.002, (name, kind, gap)
        # The playlist's durations cover the media (the first chunk may lead with audio).
        first = min(series["video"][0][0], series["audio"][0][0])
        last = max(dts + dur for kind in ("video", "audio") for dts, dur in series[kind][-1:])
        assert last - first == pytest.approx(sum(durations), abs=0.25)

    assert (meta.width, meta.height, meta.fps) == (1280, 720, 30)
    assert (meta.video_codec, meta.audio_codec, meta.audio_channels) == ("h264", "aac", 2)
    assert {r.name for r in meta.renditions} == set(counts)
    assert all(r.codecs for r in meta.renditions)
    assert meta.chunks == len(meta.transcode_ms) > 0
    assert IngestSample.objects(session_id=session.pk).count() >= 2
    return session


def test_without_recordings_nothing_is_left(live_stack, user):
    stream, key = make_stream(user, title="Ephemeral", keep_recordings=False)
    publisher = live_stack.publish(key, duration_s=6)
    live_stack.wait_live(stream.pk)
    live_stack.wait_segments(stream.pk, 1)
    session = StreamSession.objects.get(stream=stream)
    assert storage.list_keys(session_prefix(stream.pk, session.pk) + "/")
    assert publisher.wait(timeout=30) == 0
    ended = live_stack.wait_session_ended(stream.pk, timeout=60)
    assert ended.status == SessionStatus.ENDED
    assert not ended.is_replay
    # Nothing is left. (Polled briefly: a listing right after a delete may still name the last
    # object deleted; an object really left over stays and fails the test.)
    left = storage.list_keys(stream_prefix(stream.pk) + "/")
    deadline = time.monotonic() + 5
    while left and time.monotonic() < deadline:
        time.sleep(0.25)
        left = storage.list_keys(stream_prefix(stream.pk) + "/")
    assert left == []
    assert settings.RECONNECT_GRACE_SECONDS == 3
