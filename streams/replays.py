"""Replays (finished sessions kept as VOD): deletion by the owner, and the technical metadata
of sessions as recorded in MongoDB by the pipeline.

Deleting a replay keeps the ``StreamSession`` row (history, analytics refer to it) but turns
``is_replay`` off, and after commit asks the pipeline to delete the session's objects from the
object store (``transcoding.tasks.purge_session_objects``).
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import transaction

from streams.models import SessionStatus, StreamSession

logger = logging.getLogger(__name__)


class ReplayNotDeletableError(Exception):
    """The session is not a finished replay (still live, or already deleted)."""


def delete_replay(session: StreamSession) -> None:
    """Withdraw a finished session's replay and purge its stored HLS objects after commit.

    Locks the session row so a concurrent delete does not enqueue two purges; raises
    ``ReplayNotDeletableError`` unless the session is ended and still a replay.
    """
    with transaction.atomic():
        locked = StreamSession.objects.select_for_update().get(pk=session.pk)
        if locked.status != SessionStatus.ENDED or not locked.is_replay:
            raise ReplayNotDeletableError
        locked.is_replay = False
        locked.save(update_fields=["is_replay", "updated_at"])
        session_id = locked.pk
        stream_id = locked.stream_id
        transaction.on_commit(lambda: _purge_session_objects(session_id, stream_id))
    session.is_replay = False
    logger.info("replay deleted", extra={"stream": session.stream_id, "session": session_id})


def _purge_session_objects(session_id: int, stream_id: int) -> None:
    try:
        from transcoding.tasks import purge_session_objects
    except ImportError:
        logger.warning(
            "transcoding.tasks.purge_session_objects is not available: the replay's objects stay in storage",
            extra={"session": session_id},
        )
        return
    purge_session_objects.delay(session_id, stream_id)


_METADATA_FIELDS = (
    "video_codec",
    "video_profile",
    "width",
    "height",
    "fps",
    "video_bitrate",
    "audio_codec",
    "audio_channels",
    "audio_sample_rate",
    "audio_bitrate",
    "chunks",
    "gaps",
    "reconnects",
)


def session_metadata(session_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """Recorded metadata per session id (one MongoDB query); ``{}`` when recording is off.

    Sessions without a metadata document are absent from the result. Never raises: metadata
    is optional decoration of the API's session resource.
    """
    ids = list(session_ids)
    if not ids:
        return {}
    from livestream import mongo

    try:
        if not mongo.is_enabled():
            return {}
        from analytics.documents import SessionMetadata

        result: dict[int, dict[str, Any]] = {}
        for doc in SessionMetadata.objects(session_id__in=ids):
            item = {name: getattr(doc, name, None) for name in _METADATA_FIELDS}
            item["renditions"] = [
                {
                    "name": r.name,
                    "width": r.width,
                    "height": r.height,
                    "video_bitrate": r.video_bitrate,
                    "audio_bitrate": r.audio_bitrate,
                    "codecs": r.codecs,
                }
                for r in (doc.renditions or [])
            ]
            result[int(doc.session_id)] = item
    except Exception:
        logger.exception("could not read session metadata")
        return {}
    return result


@dataclass(frozen=True)
class Span:
    """A stretch of a replay without a jump in its program date-times."""

    offset_s: float  # where it starts in the replay (sum of the EXTINF durations before it)
    wall: float  # its program date-time there (ingest wall clock, epoch seconds)
    duration_s: float


@dataclass(frozen=True)
class ReplayTimeline:
    """How a replay's playback position maps to the stream's program date-times: what a
    player's ``playingDate`` shows at ``currentTime``. Gaps and reconnects are jumps between
    spans (the replay plays on, the clock jumped)."""

    spans: tuple[Span, ...]

    @property
    def start(self) -> datetime:
        return datetime.fromtimestamp(self.spans[0].wall, UTC)

    @property
    def end(self) -> datetime:
        last = self.spans[-1]
        return datetime.fromtimestamp(last.wall + last.duration_s, UTC)

    @property
    def duration_s(self) -> float:
        last = self.spans[-1]
        return last.offset_s + last.duration_s

    def offset_of(self, when: datetime) -> float | None:
        """The replay position showing ``when``; a moment in a jump maps to the start of the
        span after it; None outside the replay."""
        t = when.timestamp()
        if t < self.spans[0].wall:
            return None
        for span in self.spans:
            if t < span.wall:
                return span.offset_s
            if t <= span.wall + span.duration_s:
                return round(span.offset_s + (t - span.wall), 3)
        return None


# A segment whose program date-time is not the previous one's end (within the playlists' ms
# precision) starts a new span: the ingest clock of each chunk has some jitter, and players
# (hls.js playingDate) read each segment's own date-time, so offsets must too.
JUMP_S = 0.0015


def timeline_from_playlist(text: str) -> ReplayTimeline | None:
    """The timeline of a replay media playlist (``index.m3u8``, as transcoding.hls writes it
    with an EXT-X-PROGRAM-DATE-TIME on every segment); None without segments."""
    from transcoding import hls

    spans: list[Span] = []
    offset = 0.0
    for entry in hls.parse_media(text, []):
        last = spans[-1] if spans else None
        if last is not None and not entry.disc and abs(entry.wall - (last.wall + last.duration_s)) <= JUMP_S:
            spans[-1] = Span(last.offset_s, last.wall, last.duration_s + entry.duration)
        else:
            spans.append(Span(offset, entry.wall, entry.duration))
        offset += entry.duration
    return ReplayTimeline(tuple(spans)) if spans else None


def replay_timeline(session: StreamSession) -> ReplayTimeline:
    """The replay's timeline from its stored playlists (the master's first rendition: all
    renditions list the same segments). When they cannot be read: one span from the session's
    start for its duration (what the session row knows)."""
    from streams.playback import prefix_of
    from transcoding import storage

    prefix = prefix_of(session)
    try:
        master = storage.get_bytes(f"{prefix}/master.m3u8")
        uri = next(
            (line.strip() for line in (master or b"").decode().splitlines() if line.strip() and line[0] != "#"), ""
        )
        media = storage.get_bytes(f"{prefix}/{uri}") if uri and ".." not in uri else None
        timeline = timeline_from_playlist(media.decode()) if media else None
    except Exception:
        logger.exception("could not read the replay's playlist", extra={"session": session.pk})
        timeline = None
    if timeline is not None:
        return timeline
    end = session.ended_at or session.started_at
    duration = session.duration_s or max(0.0, (end - session.started_at).total_seconds())
    return ReplayTimeline((Span(0.0, session.started_at.timestamp(), duration),))
