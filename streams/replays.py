"""Replays (finished sessions kept as VOD): deletion by the owner, and the technical metadata
of sessions as recorded in MongoDB by the pipeline.

Deleting a replay keeps the ``StreamSession`` row (history, analytics refer to it) but turns
``is_replay`` off, and after commit asks the pipeline to delete the session's objects from the
object store (``transcoding.tasks.purge_session_objects``).
"""

import logging
from collections.abc import Iterable
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
