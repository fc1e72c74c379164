"""Public URLs of a stream: RTMP, RTMPS and SRT ingest, HLS playback through the edge, watch page.

Object layout in the S3 bucket (the edge serves the bucket at its root):
``live/<stream_id>/master.m3u8`` is the stable live master of the current public session; each
session writes under its own prefix ``live/<stream_id>/<session_id>-<tag>/``:
``master.m3u8``, ``<rendition>/index.m3u8`` plus its segments (``session_prefix``). ``<tag>`` is
the first 16 hex digits of HMAC-SHA256(``HLS_PATH_SECRET``, ``"<stream_id>/<session_id>"``):
session ids are sequential, so without it anybody could count their way to a session nobody
was given, such as a private preview (ADR 0034, "Privacy of the preview"). The edge and the live
origin accept session paths of this form only, and the origin checks the tag
(``valid_tag``). A session keeps the prefix it was created with (``StreamSession.storage_prefix``):
rotating the secret never moves an existing replay, so code that has a session at hand uses
``prefix_of(session)``. A finished session kept as a replay is played from its own master.
The directory thumbnail of a live stream is ``live/<stream_id>/thumb.jpg``. While a session is a
private preview neither the stable master nor ``thumb.jpg`` is written: the owner plays the
session's own master (``live_url``), whose path only the owner is told. Everything viewers
fetch is under ``PUBLIC_PREFIX``, the only part of the bucket that is anonymously readable
(``storage.ensure_public_read``, the compose stack's storage-init job).
"""

import hashlib
import hmac
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


# The hex digits of the HMAC a session's directory carries (``<session_id>-<tag>``).
TAG_LENGTH = 16


def path_tag(stream_id: int, session_id: int) -> str:
    """The unguessable part of a session's path: HMAC-SHA256 keyed with ``HLS_PATH_SECRET``."""
    digest = hmac.new(settings.HLS_PATH_SECRET.encode(), f"{stream_id}/{session_id}".encode(), hashlib.sha256)
    return digest.hexdigest()[:TAG_LENGTH]


def valid_tag(stream_id: int, session_id: int, tag: str) -> bool:
    """Whether ``tag`` is the session's (constant-time comparison)."""
    return hmac.compare_digest(tag.encode(), path_tag(stream_id, session_id).encode())


def session_dir(stream_id: int, session_id: int) -> str:
    """``<session_id>-<tag>``: the session's directory under its stream's prefix."""
    return f"{session_id}-{path_tag(stream_id, session_id)}"


def session_prefix(stream_id: int, session_id: int) -> str:
    """``live/<stream_id>/<session_id>-<tag>``, where a new session writes its objects."""
    return f"{stream_prefix(stream_id)}/{session_dir(stream_id, session_id)}"


def prefix_of(session: StreamSession) -> str:
    """Where the session's objects are: the prefix stored at its creation (a rotated
    ``HLS_PATH_SECRET`` does not move it), else the one the current secret gives."""
    return session.storage_prefix or session_prefix(session.stream_id, session.pk)


def playback_url(stream: Stream) -> str:
    """The stable live master: what the public player, the API and webhooks give viewers."""
    return f"{settings.HLS_EDGE_URL}/{stream_prefix(stream.pk)}/master.m3u8"


def replay_url(session: StreamSession) -> str:
    """The session's own master (a replay's VOD master; a private preview's live master)."""
    return f"{settings.HLS_EDGE_URL}/{prefix_of(session)}/master.m3u8"


def live_url(stream: Stream, session: StreamSession | None) -> str:
    """What the player of ``stream`` plays: the stable master, or while ``session`` (the one on
    air) is a private preview, its own master: the stable one is not written then (ADR 0034),
    and only those who may see the preview (its owner, staff) are given this URL."""
    if stream.in_preview and session is not None and session.is_preview and session.went_public_at is None:
        return replay_url(session)
    return playback_url(stream)


def watch_url(stream: Stream) -> str:
    return settings.PUBLIC_WEB_URL + reverse("streams:watch", kwargs={"slug": stream.slug})


def embed_url(stream: Stream) -> str:
    return settings.PUBLIC_WEB_URL + reverse("streams:embed", kwargs={"slug": stream.slug})
