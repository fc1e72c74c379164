"""Directory thumbnails: one small JPEG per live stream, cut from its newest segment.

The object ``live/<stream_id>/thumb.jpg`` sits next to the stream's stable live master, so the
edge serves it like the playlists (short cache). The directory page links it directly and hides
the image when it is missing (a stream that has just gone live).
"""

from django.conf import settings

from streams.playback import stream_prefix

THUMBNAIL_NAME = "thumb.jpg"


def thumbnail_key(stream_id: int) -> str:
    return f"{stream_prefix(stream_id)}/{THUMBNAIL_NAME}"


def thumbnail_url(stream_id: int) -> str:
    return f"{settings.HLS_EDGE_URL}/{thumbnail_key(stream_id)}"
