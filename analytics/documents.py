"""MongoDB documents (mongoengine) for stream metadata and analytics.

Writers: the live pipeline (``SessionMetadata``, ``IngestSample``), presence
(``ViewerSample``), the watch page's player reports (``PlaybackEvent``) and chat
(``ChatStats``). Readers: ``analytics.aggregations``. Postgres ids are stored as plain ints
(``stream_id``, ``session_id``); there are no cross-store foreign keys.
"""

from datetime import UTC, datetime

import mongoengine as me


def _now() -> datetime:
    return datetime.now(UTC)


class RenditionInfo(me.EmbeddedDocument):
    name = me.StringField(required=True)  # "source", "720p", ...
    width = me.IntField()
    height = me.IntField()
    video_bitrate = me.IntField()  # bits/s
    audio_bitrate = me.IntField()
    codecs = me.StringField()  # RFC 6381, e.g. "avc1.64001f,mp4a.40.2"
    segments = me.IntField(default=0)
    gaps = me.IntField(default=0)


class SessionMetadata(me.Document):
    """One broadcast: the probed source, the ladder and per-session counters."""

    stream_id = me.IntField(required=True)
    session_id = me.IntField(required=True, unique=True)
    started_at = me.DateTimeField(default=_now)
    ended_at = me.DateTimeField()
    # Probed source
    video_codec = me.StringField()
    video_profile = me.StringField()
    width = me.IntField()
    height = me.IntField()
    fps = me.FloatField()
    video_bitrate = me.IntField()
    audio_codec = me.StringField()
    audio_channels = me.IntField()
    audio_layout = me.StringField()
    audio_sample_rate = me.IntField()
    audio_bitrate = me.IntField()
    # Counters
    chunks = me.IntField(default=0)
    gaps = me.IntField(default=0)
    reconnects = me.IntField(default=0)
    transcode_ms = me.ListField(me.IntField())  # per chunk, wall time of its task
    renditions = me.EmbeddedDocumentListField(RenditionInfo)
    duration_s = me.FloatField(default=0)

    meta = {
        "collection": "session_metadata",
        "indexes": ["stream_id", ("stream_id", "-started_at"), "started_at"],
    }


class IngestSample(me.Document):
    """Periodic health of the ingest and the transcoders while live."""

    stream_id = me.IntField(required=True)
    session_id = me.IntField(required=True)
    at = me.DateTimeField(default=_now)
    bitrate = me.IntField()  # bits/s received
    fps = me.FloatField()
    keyframe_interval_s = me.FloatField()
    # Totals for the session so far (cumulative, like the pipeline's gap count): a rise between
    # two samples is what happened in between.
    dropped_chunks = me.IntField(default=0)
    late_chunks = me.IntField(default=0)
    lag_s = me.DictField()  # rendition -> seconds the published edge trails ingest
    queue_depth = me.IntField()

    meta = {"collection": "ingest_samples", "indexes": [("session_id", "at"), ("stream_id", "at"), "at"]}


class ViewerSample(me.Document):
    """Concurrent viewers of a live stream at ``at`` (start of a sampling period).

    ``interval_s`` is the period the sample stands for, so ``viewers * interval_s`` is the watch
    time it contributes. One sample per (stream, period): the sampler upserts on that pair.
    """

    stream_id = me.IntField(required=True)
    session_id = me.IntField()
    at = me.DateTimeField(default=_now)
    viewers = me.IntField(default=0)
    interval_s = me.FloatField(default=15.0)
    per_rendition = me.DictField()  # rendition -> viewers whose player reported it lately

    meta = {
        "collection": "viewer_samples",
        "indexes": [("session_id", "at"), {"fields": ("stream_id", "at"), "unique": True}, "at"],
    }


class PlaybackEvent(me.Document):
    """A player-side event reported by the watch page (startup, rebuffer, switch, error)."""

    stream_id = me.IntField(required=True)
    session_id = me.IntField()
    viewer_id = me.StringField(max_length=64)  # random per page load, not a user id
    kind = me.StringField(required=True, max_length=32)
    at = me.DateTimeField(default=_now)
    rendition = me.StringField(max_length=32)
    value = me.FloatField()  # seconds (startup, stall, latency) where it applies
    detail = me.StringField(max_length=500)

    meta = {
        "collection": "playback_events",
        "indexes": [("session_id", "kind"), ("stream_id", "at"), ("kind", "at"), "at"],
    }


class ChatStats(me.Document):
    """Chat activity of a stream during one sampling period starting at ``at``."""

    stream_id = me.IntField(required=True)
    session_id = me.IntField()
    at = me.DateTimeField(default=_now)
    interval_s = me.FloatField(default=15.0)
    messages = me.IntField(default=0)
    chatters = me.IntField(default=0)
    deleted = me.IntField(default=0)

    meta = {
        "collection": "chat_stats",
        "indexes": [("session_id", "at"), {"fields": ("stream_id", "at"), "unique": True}, "at"],
    }
