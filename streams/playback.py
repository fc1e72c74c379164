"""Public URLs of a stream: RTMP, RTMPS and SRT ingest, HLS playback through the edge, watch page.

Object layout in the S3 bucket (the edge serves the bucket at its root):
``live/<stream_id>/master.m3u8`` is the stable live master of the current session; each
session writes ``live/<stream_id>/<session_id>/master.m3u8`` and
``live/<stream_id>/<session_id>/<rendition>/index.m3u8`` plus its segments. A finished
session kept as a replay is played from its own master. The directory thumbnail of a live
stream is ``live/<stream_id>/thumb.jpg``. Everything viewers fetch is under ``PUBLIC_PREFIX``,
the only part of the bucket that is anonymously readable (``storage.ensure_public_read``, the
compose stack's storage-init job).
"""

from urllib.parse import quote

from django.conf import settings
from django.urls import reverse

from streams.models import Stream, StreamSession

# Object keys viewers read through the edge (live and replay HLS, thumbnails) start with this.
PUBLIC_PREFIX = "live/"


def rtmp_url() -> str:
    return settings.RTMP_PUBLIC_URL


def rtmps_url() -> str:
    """The RTMPS "Server" URL (the key goes in OBS's "Stream Key"), ADR 0032."""
    return settings.RTMPS_PUBLIC_URL


def srt_url(key: str | None = None) -> str:
    """The SRT URL a streamer gives OBS or ffmpeg (``SRT_PUBLIC_URL``): the stream key as the
    stream id (``<stream key>`` where the key is not at hand: it is shown once), the latency
    (OBS and ffmpeg take it in microseconds) and, when the listener has one, the passphrase."""
    query = f"streamid={quote(key, safe='') if key else '<stream key>'}&latency={settings.SRT_LATENCY_MS * 1000}"
    if settings.SRT_PASSPHRASE:
        query += "&passphrase=<passphrase>"
    return f"{settings.SRT_PUBLIC_URL}?{query}"


def ingest_urls(key: str | None = None) -> dict[str, object]:
    """Where the owner publishes: RTMP and RTMPS server URLs (+ the key), the SRT URL."""
    return {
        "rtmp_url": rtmp_url(),
        "rtmps_url": rtmps_url(),
        "srt_url": srt_url(key),
        "srt_latency_ms": settings.SRT_LATENCY_MS,
        "srt_passphrase_required": bool(settings.SRT_PASSPHRASE),
    }


def stream_prefix(stream_id: int) -> str:
    return f"{PUBLIC_PREFIX}{stream_id}"


def session_prefix(stream_id: int, session_id: int) -> str:
    return f"{stream_prefix(stream_id)}/{session_id}"


def playback_url(stream: Stream) -> str:
    return f"{settings.HLS_EDGE_URL}/{stream_prefix(stream.pk)}/master.m3u8"


def replay_url(session: StreamSession) -> str:
    return f"{settings.HLS_EDGE_URL}/{session_prefix(session.stream_id, session.pk)}/master.m3u8"


def watch_url(stream: Stream) -> str:
    return settings.PUBLIC_WEB_URL + reverse("streams:watch", kwargs={"slug": stream.slug})


def embed_url(stream: Stream) -> str:
    return settings.PUBLIC_WEB_URL + reverse("streams:embed", kwargs={"slug": stream.slug})
