"""Every source a streamer really sends works (docs/pipeline.md), through the real live stack: nginx-rtmp,
the segmenter, a Celery worker, SeaweedFS and the edge.

The source matrix publishes pre-encoded files (``media.SOURCES``, cached) with stream copy, as
the encoder made them, and checks the replay of every rendition against what the publisher
sent: each frame carries its number, so decoding every segment on its own from its first byte
must give back exactly frames 0..N-1, in order (the first frame the publisher sent is in the
first segment, the last in the last, none missing, none twice), each segment must start with an
IDR and its SPS/PPS and decode without a complaint, and there is no gap or discontinuity.
Also: a source above the caps is refused with the reason on the dashboard, and a publish that
never sends another keyframe is ended with the reason.
"""

import threading
import time
from pathlib import Path

import pytest

from streams.models import SessionStatus, Stream, StreamSession
from streams.playback import replay_url, session_prefix
from tests.factories import make_stream
from tests.pipeline.media import (
    SOURCES,
    Source,
    decode_errors,
    decode_segment,
    download_rendition,
    extinf,
    largest_gap,
    packets,
    parse_master,
    publish_file,
    source_file,
)
from transcoding import storage
from transcoding.ladder import SourceInfo, ladder_for
from transcoding.segmenter import Segmenter

pytestmark = [pytest.mark.pipeline, pytest.mark.django_db(transaction=True)]

# Two encoded rungs keep the matrix's CPU bounded (the copied source is always there).
LADDER = ["720p:720:2000:96", "360p:360:600:64"]
IDR, SPS, PPS = 5, 7, 8


@pytest.fixture
def matrix_settings(settings):
    settings.TRANSCODE_LADDER = LADDER
    # What is measured here is completeness, not speed: a slow shared CI machine must not turn a
    # chunk into a gap.
    settings.LIVE_DEADLINE_SECONDS = 90.0
    return settings


@pytest.mark.parametrize("name", list(SOURCES))
def test_source_matrix(name, live_stack, user, matrix_settings, tmp_path: Path):
    source = SOURCES[name]
    path = source_file(source)
    stream, key = make_stream(user, title=name, keep_recordings=True)
    publisher = publish_file(f"{live_stack.rtmp_url}/{key}", path)
    assert publisher.wait(timeout=60) == 0, publisher.stderr.read() if publisher.stderr else ""
    session = live_stack.wait_session_ended(stream.pk, timeout=120)
    assert session.is_replay

    master = live_stack.get(replay_url(session))
    assert master.status_code == 200, master.text
    variants = parse_master(master.text)
    names = [v.uri.split("/")[0] for v in variants]
    probe = SourceInfo("h264", "High", source.width, source.height, source.fps, 0, "", "", 0, "", 0, 0)
    assert names == [r.name for r in ladder_for(probe)], master.text
    for variant in variants:
        codecs = variant.attrs["CODECS"]
        assert ("mp4a.40.2" in codecs) == bool(source.audio), codecs
        assert float(variant.attrs["FRAME-RATE"]) == pytest.approx(source.fps, abs=0.01)

    base = replay_url(session).rsplit("/", 1)[0]
    for variant in variants:
        rendition = variant.uri.split("/")[0]
        text, files = download_rendition(f"{base}/{variant.uri}", tmp_path / rendition)
        assert "#EXT-X-ENDLIST" in text
        assert "#EXT-X-DISCONTINUITY" not in text, (rendition, text)
        assert [f.name for f in files] == [f"seg_{i:06d}.ts" for i in range(len(files))], text
        numbers: list[int] = []
        for segment in files:
            decoded = decode_segment(segment, source)
            where = (rendition, segment.name)
            assert {IDR, SPS, PPS} <= set(decoded.first_nals), (*where, decoded.first_nals)
            assert decoded.first_is_key, where
            assert decode_errors(segment) == "", where
            numbers += decoded.numbers
        # Every frame the publisher sent, first and last included, once, in order.
        assert numbers == list(range(source.frames)), (rendition, _summary(numbers, source))
        assert sum(extinf(text)) == pytest.approx(source.seconds, abs=0.25), (rendition, extinf(text))

        joined = tmp_path / f"{rendition}.ts"
        joined.write_bytes(b"".join(p.read_bytes() for p in files))
        assert decode_errors(joined) == "", rendition
        series = packets(joined)
        kinds = ("video", "audio") if source.audio else ("video",)
        assert set(series) == set(kinds), (rendition, set(series))
        for kind in kinds:
            gap, monotonic = largest_gap(series[kind])
            assert monotonic, (rendition, kind)
            assert gap <= 1 / source.fps + 0.002, (rendition, kind, gap)
        if source.audio:
            audio = series["audio"]
            span = audio[-1][0] + audio[-1][1] - audio[0][0]
            assert span == pytest.approx(source.seconds, abs=0.1), (rendition, span)

    # Keyframes further apart than segments should last: the dashboard advises 1-2 s.
    problem = Stream.objects.get(pk=stream.pk).publish_problem
    if name == "obs-auto-keyframes":
        assert "keyframe every 8.3 s" in problem, problem
        assert "keyframe interval to 1-2 s" in problem
    elif name == "non-idr-keyframes":
        assert "keyframe every 3.0 s" in problem, problem
        assert "not IDR frames (open GOP)" in problem
    else:
        assert problem == "", problem


def _summary(numbers: list[int], source: Source) -> str:
    missing = sorted(set(range(source.frames)) - set(numbers))
    return f"{len(numbers)} frames, first {numbers[:3]}, last {numbers[-3:]}, missing {missing[:10]}"


def test_a_source_above_the_caps_is_refused_with_the_reason(live_stack, user, settings, caplog):
    settings.SOURCE_MAX_WIDTH, settings.SOURCE_MAX_HEIGHT = 1280, 720
    stream, key = make_stream(user, title="Too big", keep_recordings=True)
    publisher = publish_file(f"{live_stack.rtmp_url}/{key}", source_file(SOURCES["1080p30-8M-noisy"]))
    # Refused at the first probe (the first chunk, ~2 s): the publisher is dropped long before
    # its 11 s are over.
    assert publisher.wait(timeout=30) != 0
    session = live_stack.wait_session_ended(stream.pk, timeout=60)
    problem = Stream.objects.get(pk=stream.pk).publish_problem
    assert "resolution 1920x1080 is above this platform's maximum of 1280x720" in problem, problem
    assert "publish ended by the ingest: resolution 1920x1080" in caplog.text
    assert session.status == SessionStatus.ENDED
    # Nothing was published for it, and no chunk silently became a gap.
    assert storage.list_keys(session_prefix(stream.pk, session.pk) + "/") == []


NO_KEYFRAMES = Source(
    "one-keyframe",
    640,
    360,
    30,
    800,
    seconds=10,
    video_args=("-tune", "zerolatency", "-g", "100000", "-keyint_min", "100000", "-sc_threshold", "0"),
)


def test_a_publish_without_keyframes_is_ended_with_the_reason(live_stack, user, settings):
    settings.CHUNK_MAX_SECONDS = 4.0
    stream, key = make_stream(user, title="No keyframes", keep_recordings=True)
    publisher = publish_file(f"{live_stack.rtmp_url}/{key}", source_file(NO_KEYFRAMES))
    assert publisher.wait(timeout=30) != 0  # dropped after ~4 s of its 10
    session = live_stack.wait_session_ended(stream.pk, timeout=60)
    problem = Stream.objects.get(pk=stream.pk).publish_problem
    assert "no keyframe (IDR) for more than 4 s" in problem, problem
    assert "keyframe interval to 2 s" in problem
    # What came before the limit was published: one chunk, bounded, from the first frame.
    text = live_stack.get(replay_url(session).rsplit("/", 1)[0] + "/source/index.m3u8").text
    durations = extinf(text)
    assert len(durations) == 1, text
    assert 3.5 <= durations[0] <= 4.5, durations


def _segmenter(session_id: int) -> Segmenter | None:
    return next(
        (t for t in threading.enumerate() if isinstance(t, Segmenter) and t.session_id == session_id and t.is_alive()),
        None,
    )


def test_a_restarted_segmenter_continues_from_the_recording(live_stack, user, matrix_settings, tmp_path):
    """The segmenter's ffmpeg dies mid-broadcast while the publisher goes on; a segmenter started
    again for the connection (by the supervisor, or here) continues where the chunk being written
    started in the recording: every frame is in the replay once, at most one discontinuity."""
    source = SOURCES["b-frames"]
    stream, key = make_stream(user, title="Restart", keep_recordings=True)
    publisher = publish_file(f"{live_stack.rtmp_url}/{key}", source_file(source))
    live_stack.wait_segments(stream.pk, 2)
    session = StreamSession.objects.get(stream=stream)
    first = _segmenter(session.pk)
    assert first is not None
    assert first.proc is not None
    first.proc.kill()
    first.join(timeout=10)
    time.sleep(2)  # a supervisor that restarts segmenters has started one by now
    if _segmenter(session.pk) is None:
        Segmenter(session_id=session.pk, stream_id=stream.pk, conn=1, name=first.input_name).start()
    assert publisher.wait(timeout=60) == 0
    session = live_stack.wait_session_ended(stream.pk, timeout=120)
    base = replay_url(session).rsplit("/", 1)[0]
    for rendition in ("source", "360p"):
        text, files = download_rendition(f"{base}/{rendition}/index.m3u8", tmp_path / rendition)
        assert text.count("#EXT-X-DISCONTINUITY") <= 1, text
        numbers: list[int] = []
        for segment in files:
            decoded = decode_segment(segment, source)
            assert {IDR, SPS, PPS} <= set(decoded.first_nals), (rendition, segment.name)
            numbers += decoded.numbers
        assert numbers == list(range(source.frames)), (rendition, _summary(numbers, source))
        assert sum(extinf(text)) == pytest.approx(source.seconds, abs=0.25), (rendition, extinf(text))
