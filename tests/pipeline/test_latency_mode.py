"""A stream in the low latency mode is cut into ~1 s chunks (LOW_LATENCY_CHUNK_SECONDS) from a
publisher with 1 s keyframes: real RTMP, segmenter, worker; durations read from the published
log in Redis while live, and from the replay at the end."""

import statistics
from pathlib import Path

import pytest

from streams.models import StreamSession
from streams.playback import replay_url
from tests.factories import make_stream
from tests.pipeline.media import extinf
from transcoding import state

pytestmark = [pytest.mark.pipeline, pytest.mark.django_db(transaction=True)]


def test_a_low_latency_stream_is_cut_into_one_second_chunks(live_stack, user, settings, tmp_path: Path):
    settings.CHUNK_SECONDS = 2.0
    settings.LOW_LATENCY_CHUNK_SECONDS = 1.0
    stream, key = make_stream(user, title="Low", latency_mode="low", keep_recordings=True)
    publisher = live_stack.publish(key, duration_s=10)  # golive: keyframes every second
    live_stack.wait_live(stream.pk)
    live_stack.wait_segments(stream.pk, 4)
    session = StreamSession.objects.filter(stream=stream).latest("started_at")
    live = [e.duration for e in state.published(session.pk)]
    assert len(live) >= 4
    assert publisher.wait(timeout=60) == 0, publisher.stderr.read() if publisher.stderr else ""
    session = live_stack.wait_session_ended(stream.pk, timeout=90)
    durations = extinf(live_stack.get(replay_url(session).rsplit("/", 1)[0] + "/source/index.m3u8").text)
    # Every chunk but the last is one GOP: 1 s (the first may carry audio before the first keyframe).
    assert 9 <= len(durations) <= 12, durations
    assert statistics.median(durations) == pytest.approx(1.0, abs=0.1), durations
    assert all(0.8 <= d <= 1.2 for d in durations[1:-1]), durations
    assert all(0.8 <= d <= 1.2 for d in live[1:]), live
