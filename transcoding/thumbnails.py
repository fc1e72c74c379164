"""Directory thumbnails: one small JPEG per live stream, cut from its newest segment.

The object ``live/<stream_id>/thumb.jpg`` sits next to the stream's stable live master, so the
edge serves it like the playlists (short cache) and deleting the stream's prefix removes it.
The directory page links it directly and hides the image when it is missing (a stream that has
just gone live). A private preview (ADR 0034) never writes it: its guessable path would show the
preview to anybody; the preview's thumbnail goes under its session's unguessable prefix
(``<session prefix>/thumb.jpg``, deleted with the session's objects) instead.

``refresh_thumbnails`` (Celery beat, every THUMBNAIL_REFRESH_S) enqueues one
``make_thumbnail(session_id)`` per live session; that task reads the newest published segment of
the smallest rendition from S3 (bytes travel through S3, never a local path shared with the
ingest), decodes its first frame with ffmpeg and PUTs the JPEG. Idempotent: the same segment
gives the same object; a session that is not live any more is skipped.
"""

import logging

from celery import shared_task
from django.conf import settings

from streams.models import SessionStatus, StreamSession, StreamStatus
from streams.playback import prefix_of, stream_prefix
from streams.sessions import private_preview
from transcoding import ffmpeg, state, storage

logger = logging.getLogger(__name__)

THUMBNAIL_NAME = "thumb.jpg"
THUMBNAIL_TYPE = "image/jpeg"
THUMBNAIL_CACHE = "public, max-age=10"
THUMBNAIL_WIDTH = 320
FFMPEG_TIMEOUT_S = 20


def thumbnail_key(stream_id: int) -> str:
    return f"{stream_prefix(stream_id)}/{THUMBNAIL_NAME}"


def thumbnail_url(stream_id: int) -> str:
    return f"{settings.HLS_EDGE_URL}/{thumbnail_key(stream_id)}"


def session_thumbnail_key(session: StreamSession) -> str:
    """A session's own thumbnail, under its unguessable prefix (a private preview's)."""
    return f"{prefix_of(session)}/{THUMBNAIL_NAME}"


def frame_from_segment(segment: bytes, *, width: int = THUMBNAIL_WIDTH) -> bytes:
    """The first video frame of a segment (MPEG-TS, or CMAF after its init section) as a JPEG
    ``width`` pixels wide.

    Raises ``ValueError`` when ffmpeg cannot decode a frame or times out (its stderr is logged)."""
    try:
        image = ffmpeg.run_bytes(
            ffmpeg.jpeg_frame_args(width, container="mp4" if segment[4:8] == b"ftyp" else "mpegts"),
            input=segment,
            timeout=FFMPEG_TIMEOUT_S,
            context={},
            failure_level=None,
        )
    except ffmpeg.FFmpegError as exc:
        image, stderr = b"", exc.stderr
    else:
        stderr = ""
    if not image:
        logger.warning("thumbnail: ffmpeg could not decode a frame", extra={"ctx": {"stderr": stderr[-500:]}})
        raise ValueError("no decodable video frame in the segment")
    return image


def newest_segment_keys(session: StreamSession) -> list[str]:
    """S3 keys of the newest published segment of the session's smallest rendition: for a
    low-latency session (CMAF) its init section first, then the segment; empty before the first
    segment is out. One bounded read of the published log (its last entry)."""
    entries = state.published_tail(session.pk, 1)
    ladder = state.ladder(session.pk)
    if not entries or not ladder:
        return []
    smallest = min(ladder, key=lambda r: r.height)
    prefix = prefix_of(session)
    entry, base = entries[-1], f"{prefix}/{smallest.name}"
    init = entry.init(smallest.name)
    return ([f"{base}/{init}"] if init else []) + [f"{base}/{entry.name}"]


def newest_segment_key(session: StreamSession) -> str | None:
    """S3 key of the newest published segment of the session's smallest rendition, or None."""
    keys = newest_segment_keys(session)
    return keys[-1] if keys else None


@shared_task(
    acks_late=True,
    autoretry_for=(ConnectionError, TimeoutError),
    retry_backoff=True,
    max_retries=2,
    soft_time_limit=40,
    time_limit=60,
)
def make_thumbnail(session_id: int) -> str:
    """Cut and upload the thumbnail of a live session's stream. Returns what happened."""
    session = StreamSession.objects.select_related("stream").filter(pk=session_id).first()
    if session is None or session.status == SessionStatus.ENDED or session.stream.status != StreamStatus.LIVE:
        return "not live"
    keys = newest_segment_keys(session)
    if not keys:
        return "no segment yet"
    parts = [storage.get_bytes(key) for key in keys]  # CMAF: the init section, then the segment
    if any(part is None for part in parts):
        return "segment missing"
    segment = b"".join(part for part in parts if part is not None)
    extra = {"stream": session.stream_id, "session": session.pk}
    try:
        image = frame_from_segment(segment)
    except ValueError:
        logger.warning("thumbnail skipped", extra=extra)
        return "undecodable"
    # Read from the row just loaded: a preview made public since gets the stable one next round.
    key = session_thumbnail_key(session) if private_preview(session) else thumbnail_key(session.stream_id)
    storage.put_image(key, image, content_type=THUMBNAIL_TYPE, cache=THUMBNAIL_CACHE)
    logger.info("thumbnail updated", extra=extra)
    return "updated"


@shared_task(soft_time_limit=20, time_limit=30)
def refresh_thumbnails() -> int:
    """Enqueue ``make_thumbnail`` for every live session; returns how many."""
    ids = list(
        StreamSession.objects.exclude(status=SessionStatus.ENDED)
        .filter(stream__status=StreamStatus.LIVE)
        .values_list("pk", flat=True)
    )
    for session_id in ids:
        make_thumbnail.delay(session_id)
    return len(ids)
