"""Unit tests of the pipeline's pure parts and of the callback views (no live stack needed)."""

import subprocess
import time
from pathlib import Path

import pytest
from django.test import Client, override_settings
from django.utils import timezone

from streams import sessions
from streams.models import SessionStatus, Stream, StreamSession
from tests.factories import make_stream
from transcoding import ffmpeg, mpegts, playlists
from transcoding.golive import BITS, PublishOptions, clock_strip_filter, decode_clock_boxes, publish_args, read_clock
from transcoding.ladder import Rendition, SourceInfo, ladder_for

SOURCE_720 = SourceInfo("h264", "High", 1280, 720, 30.0, 2_500_000, "aac", "LC", 2, "stereo", 48000, 128_000)


@override_settings(
    TRANSCODE_LADDER=["1080p:1080:5000:128", "720p:720:2800:128", "480p:480:1400:128", "360p:360:800:96"]
)
def test_ladder_never_upscales_and_keeps_aspect():
    ladder = ladder_for(SOURCE_720)
    assert [r.name for r in ladder] == ["source", "480p", "360p"]
    assert (ladder[0].width, ladder[0].height, ladder[0].copy) == (1280, 720, True)
    assert (ladder[1].width, ladder[1].height) == (854, 480)
    assert (ladder[2].width, ladder[2].height) == (640, 360)
    small = SourceInfo(**{**SOURCE_720.__dict__, "width": 426, "height": 240})
    assert [r.name for r in ladder_for(small)] == ["source"]


def test_segmenter_arguments_read_the_feed_keep_its_keyframe_flags_and_timestamps():
    args = ffmpeg.segmenter_args(Path("/t"), 2.0)
    assert args[args.index("-i") - 2 : args.index("-i") + 2] == ["-f", "flv", "-i", "pipe:0"]
    assert "+noparse" in args[args.index("-fflags") + 1]  # the feed's IDR-only keyframe flags count
    assert "-copyts" in args
    assert args[args.index("-reset_timestamps") + 1] == "0"
    assert args[args.index("-segment_time") + 1] == "2"
    assert args[args.index("-c") + 1] == "copy"
    assert args[-1] == "/t/chunk_%06d.ts"
    # A source whose audio is not AAC: video still copied, audio encoded once here.
    encoding = ffmpeg.segmenter_args(Path("/t"), 2.0, audio_kbps=96)
    assert "-c" not in encoding
    assert encoding[encoding.index("-c:v") + 1] == "copy"
    assert encoding[encoding.index("-c:a") + 1 : encoding.index("-c:a") + 4] == ["aac", "-b:a", "96k"]


def _ts(tmp_path: Path, seconds: int, name: str) -> bytes:
    out = tmp_path / name
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-f", "lavfi", "-i", "sine",
         "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-f", "mpegts", str(out)],
        check=True, timeout=60,
    )  # fmt: skip
    return out.read_bytes()


def test_continuity_counters_continue_across_segments(tmp_path):
    a, b = _ts(tmp_path, 1, "a.ts"), _ts(tmp_path, 1, "b.ts")
    assert not mpegts.counters_ok(a + b)  # independently muxed: counters restart
    fixed_a, nxt = mpegts.continue_counters(a, {})
    fixed_b, _ = mpegts.continue_counters(b, nxt)
    assert mpegts.counters_ok(fixed_a + fixed_b)
    assert mpegts.continue_counters(b, nxt)[0] == fixed_b  # idempotent
    assert mpegts.avc_codec_string(a) == "avc1.42c00d"  # ultrafast: constrained baseline, level 1.3
    with pytest.raises(ValueError, match="TS packets"):
        mpegts.payload_counts(a[:-1])


def _entries(n: int, *, disc_at: int | None = None) -> list[playlists.Entry]:
    return [
        playlists.Entry(i, i + 10, 2.0 if i else 2.4, 1_764_000_000 + 2 * i, disc=i == disc_at, sizes={"360p": 200_000})
        for i in range(n)
    ]


def test_live_window_media_sequence_and_discontinuity_sequence():
    entries = _entries(10, disc_at=2)
    text = playlists.render_media(entries, 4, 1, target=3, kind="live", ended=False)
    lines = text.splitlines()
    assert lines[:5] == [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        "#EXT-X-TARGETDURATION:3",
        "#EXT-X-MEDIA-SEQUENCE:4",
        "#EXT-X-DISCONTINUITY-SEQUENCE:1",
    ]
    assert text.count("#EXTINF:") == 6
    assert "seg_000014.ts" in text
    assert "seg_000013.ts" not in text
    assert "#EXT-X-ENDLIST" not in text
    assert "#EXT-X-PROGRAM-DATE-TIME:2025-11-24T16:00:08.000Z" in text
    vod = playlists.render_media(entries, 0, 0, target=3, kind="event", ended=True)
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in vod
    assert vod.rstrip().endswith("#EXT-X-ENDLIST")
    assert vod.count("#EXT-X-DISCONTINUITY\n") == 1


def test_target_duration_rounds_per_rfc():
    assert playlists.target_duration(_entries(3), 2) == 2  # 2.4 rounds to 2
    longer = [playlists.Entry(0, 0, 2.5, 0, disc=False)]
    assert playlists.target_duration(longer, 2) == 3


def test_master_lists_bandwidth_codecs_resolution_framerate():
    renditions = [Rendition("source", 1280, 720, 2500, 128, copy=True), Rendition("360p", 640, 360, 800, 96)]
    text = playlists.render_master(
        renditions, _entries(3), {"source": "avc1.640028", "360p": "avc1.64001e"}, SOURCE_720, uri="{name}/live.m3u8"
    )
    assert (
        '#EXT-X-STREAM-INF:BANDWIDTH=800000,AVERAGE-BANDWIDTH=750000,RESOLUTION=640x360,CODECS="avc1.64001e,mp4a.40.2",'
        'FRAME-RATE=30.000,NAME="360p"\n360p/live.m3u8'
    ) in text
    assert 'RESOLUTION=1280x720,CODECS="avc1.640028,mp4a.40.2"' in text


def test_clock_boxes_roundtrip():
    value = 1_764_000_123_456 % 2**BITS
    bits = [(value >> (BITS - 1 - k)) & 1 for k in range(BITS)]
    assert decode_clock_boxes(bits) == value
    args = publish_args(PublishOptions(url="rtmp://h/live/k", clock_boxes=True, duration_s=5))
    graph = args[args.index("-filter_complex") + 1]
    assert clock_strip_filter(30) in graph
    assert "overlay=0:0" in graph
    assert args[-1] == "rtmp://h/live/k"


def test_clock_strip_carries_the_wall_clock_of_each_frame_through_h264(tmp_path):
    out = tmp_path / "clock.ts"
    graph = f"testsrc2=size=640x360:rate=30[main];{clock_strip_filter(30)}[clock];[main][clock]overlay=0:0:shortest=1"
    before = int(time.time() * 1000)
    subprocess.run(
        ["ffmpeg", "-v", "error", "-filter_complex", graph, "-frames:v", "3", "-c:v", "libx264", "-preset", "veryfast",
         "-pix_fmt", "yuv420p", str(out)],
        check=True, timeout=60,
    )  # fmt: skip
    after = int(time.time() * 1000)
    stamped = read_clock(str(out), width=1280)  # boxes at full size (the strip is not scaled here)
    # The wall clock when the frame was drawn, not launch time + frame time.
    assert stamped is not None
    assert before % 2**BITS <= stamped <= after % 2**BITS
    assert read_clock(str(tmp_path / "missing.ts")) is None


# --- callback views ---------------------------------------------------------------------------
@pytest.mark.django_db
@override_settings(RTMP_CALLBACK_SECRET="s3cret")
def test_callbacks_need_the_secret_and_are_csrf_exempt(user, django_capture_on_commit_callbacks, ingest_node):
    _stream, key = make_stream(user)
    client = Client(enforce_csrf_checks=True)
    form = {"call": "publish", "name": key, "addr": "10.0.0.1", "clientid": "7"}
    assert client.post(f"/internal/rtmp/on_publish?node={ingest_node}", form).status_code == 403
    assert client.post(f"/internal/rtmp/on_publish?node={ingest_node}&secret=wrong", form).status_code == 403
    assert not StreamSession.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/internal/rtmp/on_publish?node={ingest_node}&secret=s3cret", form)
    assert response.status_code == 302
    session = StreamSession.objects.get()
    assert response["Location"] == f"s{session.pk}c1"
    assert client.get(f"/internal/rtmp/on_publish?node={ingest_node}&secret=s3cret").status_code == 405
    done = client.post(
        f"/internal/rtmp/on_publish_done?node={ingest_node}&secret=s3cret", {**form, "call": "publish_done"}
    )
    assert done.status_code == 200
    session.refresh_from_db()
    assert session.status == SessionStatus.RECONNECTING
    assert Stream.objects.get().status == "offline"


@pytest.mark.django_db
@override_settings(RTMP_CALLBACK_SECRET="s3cret")
def test_malformed_callbacks_get_clear_errors(user, ingest_node):
    client = Client()
    on_publish = f"/internal/rtmp/on_publish?node={ingest_node}&secret=s3cret"
    assert client.post(on_publish, {"call": "play", "name": "x"}).status_code == 400
    response = client.post(on_publish, {"call": "publish", "name": "x" * 500, "clientid": "1"})
    assert response.status_code == 403
    assert b"malformed" in response.content
    # An unknown client id on publish_done changes nothing.
    done = f"/internal/rtmp/on_publish_done?node={ingest_node}&secret=s3cret"
    assert client.post(done, {"name": "k", "clientid": "99"}).status_code == 200


# --- session state machine -----------------------------------------------------------------------
@pytest.mark.django_db
@override_settings(RECONNECT_GRACE_SECONDS=30)
def test_session_lifecycle_resume_and_supersede(user, django_capture_on_commit_callbacks):
    _stream, key = make_stream(user, keep_recordings=True)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        grant = sessions.start_publish(key)
    assert len(callbacks) == 1  # stream.live is sent only after commit
    assert (grant.connection, grant.resumed) == (1, False)
    with pytest.raises(sessions.PublishRefused, match="already live"):
        sessions.start_publish(key)
    assert sessions.disconnect(grant.session.pk, connection=2) is None  # stale connection: no-op
    assert sessions.disconnect(grant.session.pk, connection=1) is not None
    again = sessions.start_publish(key)
    assert (again.session.pk, again.connection, again.resumed) == (grant.session.pk, 2, True)
    sessions.disconnect(grant.session.pk, connection=2)
    # Grace period over: the next publish supersedes the waiting session.
    StreamSession.objects.filter(pk=grant.session.pk).update(disconnected_at=timezone.now() - timezone.timedelta(60))
    third = sessions.start_publish(key)
    assert third.session.pk != grant.session.pk
    assert third.superseded == (grant.session.pk,)
    assert StreamSession.objects.get(pk=grant.session.pk).status == SessionStatus.ENDING
    ended = sessions.end_session(grant.session.pk, duration_s=12.0)
    assert ended is not None
    assert ended.is_replay
    assert ended.status == SessionStatus.ENDED


def test_a_window_renders_alone_as_the_whole_log_would():
    """Each entry carries the discontinuity tags before it, so the live window renders from its
    own entries exactly as from the whole log (media and discontinuity sequence included)."""
    from transcoding import hls

    entries = hls.with_dseq([*_entries(12, disc_at=2), playlists.Entry(0, 30, 2.0, 1_764_000_100, disc=True)])
    for start in range(len(entries)):
        before = sum(1 for e in entries[:start] if e.disc and e.index)
        whole = hls.render_media(entries, start, before, target=3, kind="live", ended=False)
        assert hls.render_window(entries[start:], target=3, ended=False) == whole, start
