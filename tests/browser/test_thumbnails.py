"""Directory thumbnails (transcoding/thumbnails.py) against real S3, Redis and ffmpeg: the newest
segment of the smallest rendition becomes live/<stream>/thumb.jpg; bad input writes nothing."""

import subprocess
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from livestream.redis import redis_client
from streams.models import SessionStatus, Stream, StreamSession, StreamStatus
from streams.playback import prefix_of
from tests.factories import make_stream
from transcoding import playlists, state, storage, thumbnails
from transcoding.ladder import Rendition

pytestmark = pytest.mark.django_db


def _segment(path: Path, size: str) -> bytes:
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30",
         "-t", "1", "-c:v", "libx264", "-preset", "ultrafast", "-f", "mpegts", str(path)],
        check=True, timeout=60,
    )  # fmt: skip
    return path.read_bytes()


def _live_session(stream: Stream) -> StreamSession:
    Stream.objects.filter(pk=stream.pk).update(status=StreamStatus.LIVE)
    stream.refresh_from_db()
    return StreamSession.objects.create(stream=stream, started_at=timezone.now(), status=SessionStatus.LIVE)


def _publish(session: StreamSession, seqs: list[int]) -> None:
    state.decide_ladder(
        session.pk,
        [
            Rendition("source", 1280, 720, 0, 128, copy=True),
            Rendition("360p", 640, 360, 800, 96),
        ],
    )
    for index, seq in enumerate(seqs):
        entry = playlists.Entry(index, seq, 2.0, 0.0, disc=False)
        redis_client().rpush(state.key(session.pk, "published"), entry.to_json())


def _head(key: str) -> dict[str, object] | None:
    s3 = storage.client()
    try:
        return dict(s3.head_object(Bucket=settings.S3_BUCKET, Key=key))
    except s3.exceptions.ClientError:
        return None


def test_thumbnail_from_newest_segment_of_smallest_rendition(s3: str, tmp_path: Path) -> None:
    stream, _ = make_stream()
    session = _live_session(stream)
    storage.delete_key(thumbnails.thumbnail_key(stream.pk))
    assert thumbnails.make_thumbnail(session.pk) == "no segment yet"

    _publish(session, [0, 1])
    prefix = prefix_of(session)
    storage.put_segment(f"{prefix}/360p/seg_000001.ts", _segment(tmp_path / "small.ts", "640x360"))
    storage.put_segment(f"{prefix}/source/seg_000001.ts", b"not the one to use")
    assert thumbnails.newest_segment_key(session) == f"{prefix}/360p/seg_000001.ts"

    assert thumbnails.make_thumbnail(session.pk) == "updated"
    head = _head(thumbnails.thumbnail_key(stream.pk))
    assert head is not None
    assert head["ContentType"] == "image/jpeg"
    image = storage.get_bytes(thumbnails.thumbnail_key(stream.pk))
    assert image is not None
    assert image[:2] == b"\xff\xd8"
    (tmp_path / "thumb.jpg").write_bytes(image)
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=width,height", "-of", "csv=p=0",
         str(tmp_path / "thumb.jpg")],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    assert probe.stdout.strip() == "320,180"
    assert thumbnails.thumbnail_url(stream.pk).endswith(f"/live/{stream.pk}/thumb.jpg")


def test_undecodable_segment_or_offline_stream_writes_nothing(s3: str) -> None:
    stream, _ = make_stream()
    session = _live_session(stream)
    storage.delete_key(thumbnails.thumbnail_key(stream.pk))
    _publish(session, [0])
    storage.put_segment(f"{prefix_of(session)}/360p/seg_000000.ts", b"\x47" * 1880)
    assert thumbnails.make_thumbnail(session.pk) == "undecodable"
    assert _head(thumbnails.thumbnail_key(stream.pk)) is None

    Stream.objects.filter(pk=stream.pk).update(status=StreamStatus.OFFLINE)
    assert thumbnails.make_thumbnail(session.pk) == "not live"
    assert thumbnails.make_thumbnail(999_999_999) == "not live"


def test_a_private_preview_writes_its_thumbnail_under_its_session_only(s3: str, tmp_path: Path) -> None:
    """ADR 0034: ``live/<stream>/thumb.jpg`` is guessable; a preview's goes under its session's
    unguessable prefix until it goes public, then the stable one is written."""
    stream, _ = make_stream()
    session = _live_session(stream)
    StreamSession.objects.filter(pk=session.pk).update(is_preview=True)
    Stream.objects.filter(pk=stream.pk).update(in_preview=True)
    storage.delete_key(thumbnails.thumbnail_key(stream.pk))
    _publish(session, [0])
    storage.put_segment(f"{prefix_of(session)}/360p/seg_000000.ts", _segment(tmp_path / "small.ts", "640x360"))

    assert thumbnails.make_thumbnail(session.pk) == "updated"
    assert _head(thumbnails.thumbnail_key(stream.pk)) is None
    own = f"{prefix_of(session)}/thumb.jpg"
    assert (storage.get_bytes(own) or b"")[:2] == b"\xff\xd8"

    StreamSession.objects.filter(pk=session.pk).update(went_public_at=timezone.now())
    Stream.objects.filter(pk=stream.pk).update(in_preview=False)
    assert thumbnails.make_thumbnail(session.pk) == "updated"
    assert _head(thumbnails.thumbnail_key(stream.pk)) is not None
    storage.delete_prefix(f"{prefix_of(session)}/")


def test_refresh_enqueues_one_task_per_live_session() -> None:
    live, _ = make_stream()
    _live_session(live)
    offline, _ = make_stream()
    StreamSession.objects.create(stream=offline, started_at=timezone.now(), status=SessionStatus.ENDED)
    assert thumbnails.refresh_thumbnails() == 1
