"""Public URLs of a stream: RTMP server, HLS playback through the edge, watch page.

Object layout in the S3 bucket (the edge serves the bucket at its root):
``live/<stream_id>/master.m3u8`` is the stable live master of the current session; each
session writes ``live/<stream_id>/<session_id>/master.m3u8`` and
``live/<stream_id>/<session_id>/<rendition>/index.m3u8`` plus its segments. A finished
session kept as a replay is played from its own master. The directory thumbnail of a live
stream is ``live/<stream_id>/thumb.jpg``. Everything viewers fetch is under ``PUBLIC_PREFIX``,
the only part of the bucket that is anonymously readable (``storage.ensure_public_read``, the
compose stack's storage-init job).
"""

from django.conf import settings
from django.urls import reverse

from streams.models import Stream, StreamSession

# Object keys viewers read through the edge (live and replay HLS, thumbnails) start with this.
PUBLIC_PREFIX = "live/"


def rtmp_url() -> str:
    return settings.RTMP_PUBLIC_URL


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
