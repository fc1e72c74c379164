"""Overload shedding (transcoding/shedding.py) against real Redis and S3: one rung more per
late chunk (highest first, never the source), one back after enough chunks on time; a shed
rung's segment is an EXT-X-GAP in its playlist with no object, the source stays complete; the
owner's dashboard and the metrics say what is shed and why."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from livestream import metrics
from livestream.redis import redis_client
from streams.playback import session_prefix, stream_prefix
from tests.pipeline.test_assembler import ts
from transcoding import assembler, shedding, state, storage
from transcoding.ladder import Rendition

SESSION, STREAM = 987_640, 98_764
LADDER = [
    Rendition("source", 1280, 720, 0, 128, copy=True),
    Rendition("480p", 854, 480, 1400, 128),
    Rendition("720p", 1280, 720, 2800, 128),
    Rendition("360p", 640, 360, 800, 96),
]


@pytest.fixture
def session(s3: str, settings) -> Iterator[assembler.Layout]:
    from tests.pipeline.test_units import SOURCE_720

    settings.OVERLOAD_LATE_SECONDS = 2.0
    settings.OVERLOAD_RESTORE_AFTER_CHUNKS = 3
    state.start_epoch(SESSION)
    state.remember_stream(SESSION, STREAM)
    state.decide_ladder(SESSION, LADDER)
    state.store_source(SESSION, SOURCE_720, conn=1)
    yield assembler.Layout(stream_prefix(STREAM), session_prefix(STREAM, SESSION), SESSION)
    storage.delete_prefix(stream_prefix(STREAM) + "/")
    redis_client().hdel(metrics.SHED_KEY, str(SESSION))


def test_sheddable_rungs_are_the_encoded_ones_highest_first():
    assert shedding.sheddable(LADDER) == ["720p", "480p", "360p"]


def test_late_chunks_shed_one_rung_each_and_calm_ones_restore_them(session):
    def late() -> set[str]:
        return shedding.plan(SESSION, LADDER, waited_s=3.0)

    def calm() -> set[str]:
        return shedding.plan(SESSION, LADDER, waited_s=0.2)

    assert calm() == set()
    assert shedding.status(SESSION) is None
    assert late() == {"720p"}
    assert late() == {"720p", "480p"}
    assert late() == {"720p", "480p", "360p"}
    assert late() == {"720p", "480p", "360p"}  # never the source
    status = shedding.status(SESSION)
    assert status is not None
    assert status["rungs"] == ["720p", "480p", "360p"]
    assert "3.0 s behind real time" in str(status["why"])
    shed_hash = redis_client().hget(metrics.SHED_KEY, str(SESSION))
    assert shed_hash is not None
    assert b"360p" in shed_hash
    # A split ladder's other parts read the level without observing.
    assert shedding.plan(SESSION, LADDER, waited_s=0.0, observe=False) == {"720p", "480p", "360p"}
    assert calm() == {"720p", "480p", "360p"}
    assert calm() == {"720p", "480p", "360p"}
    assert calm() == {"720p", "480p"}  # the third on time: the lowest shed rung is back
    assert late() == {"720p", "480p", "360p"}  # late again: the calm count starts over
    for _ in range(3 * 3):
        calm()
    assert calm() == set()
    assert shedding.status(SESSION) is None
    assert redis_client().hget(metrics.SHED_KEY, str(SESSION)) is None
    # A transcode slower than the chunk lasts sheds too (a heavy source), and does not count as calm.
    shedding.transcoded(SESSION, LADDER, elapsed_s=4.5, duration_s=2.0)
    shedding.transcoded(SESSION, LADDER, elapsed_s=3.5, duration_s=2.0)  # within the late margin
    shedding.transcoded(SESSION, LADDER, elapsed_s=0.9, duration_s=0.1)  # the last, short chunk
    assert shedding.plan(SESSION, LADDER, waited_s=0.0, observe=False) == {"720p"}


def test_disabled_shedding_sheds_nothing(session, settings):
    settings.OVERLOAD_SHEDDING = False
    assert shedding.plan(SESSION, LADDER, waited_s=60) == set()


def test_a_shed_rung_is_a_gap_in_its_playlist_and_writes_no_object(session, client):
    full = {r.name: ts() for r in LADDER}
    shed = {**full, "720p": b"", "480p": b""}
    for outputs in (full, shed, full):
        seq = state.add_chunk(SESSION, data=b"x", start=0.0, end=2.0, wall=time.time(), conn=1, disc=False)
        state.store_outputs(SESSION, seq, outputs, 5)
    assembler.advance(session)
    entries = state.published(SESSION)
    assert [e.seq for e in entries] == [0, 1, 2]
    assert entries[1].sizes["720p"] == 0
    assert entries[1].sizes["source"] > 0
    prefix = session.session_prefix
    assert storage.get_bytes(f"{prefix}/720p/seg_000001.ts") is None
    assert storage.get_bytes(f"{prefix}/720p/seg_000002.ts") is not None
    for n in range(3):
        assert storage.get_bytes(f"{prefix}/source/seg_{n:06d}.ts") is not None
    text = client.get(f"/internal/origin/{prefix}/720p/live.m3u8").content.decode()
    lines = text.splitlines()
    assert lines[lines.index("seg_000001.ts") - 1] == "#EXT-X-GAP"
    assert lines[lines.index("seg_000002.ts") - 1].startswith("#EXTINF:")
    source = client.get(f"/internal/origin/{prefix}/source/live.m3u8").content.decode()
    assert "#EXT-X-GAP" not in source
    # The shed segment does not lower the rung's measured bitrate (it counts 2 segments, not 3).
    assert state.rates(SESSION)["720p"].seconds == pytest.approx(4.0)
    # The replay written at the end keeps the gap.
    assembler.advance(session, final=True, force=True)
    replay = (storage.get_bytes(f"{prefix}/720p/index.m3u8") or b"").decode().splitlines()
    assert replay[replay.index("seg_000001.ts") - 1] == "#EXT-X-GAP"


@pytest.mark.django_db
def test_the_owner_dashboard_says_which_rungs_are_shed_and_why(session, client):
    from django.utils import timezone

    from streams.models import StreamSession
    from tests.factories import UserFactory, make_stream

    owner = UserFactory()
    stream, _ = make_stream(owner)
    live = StreamSession.objects.create(stream=stream, started_at=timezone.now())
    state.remember_stream(live.pk, stream.pk)
    state.decide_ladder(live.pk, LADDER)
    try:
        client.force_login(owner)
        page = client.get(f"/dashboard/streams/{stream.pk}/").content.decode()
        assert 'id="overload"' not in page
        shedding.plan(live.pk, LADDER, waited_s=4.0)
        page = client.get(f"/dashboard/streams/{stream.pk}/").content.decode()
        assert "Transcoding is behind: 720p paused" in page
        assert "4.0 s behind real time" in page
    finally:
        state.purge(live.pk)
        redis_client().hdel(metrics.SHED_KEY, str(live.pk))
