"""Session metadata and ingest health samples in MongoDB (``analytics.documents``).

Every function is a no-op when ``livestream.mongo.is_enabled()`` is False, and never raises:
metadata is best effort, streaming goes on without it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from livestream import mongo
from transcoding.ladder import Rendition, SourceInfo

logger = logging.getLogger(__name__)


def _guard(what: str, session_id: int) -> bool:
    try:
        return mongo.is_enabled()
    except Exception:  # pragma: no cover - is_enabled never raises by contract
        logger.exception("metadata %s skipped", what, extra={"session": session_id})
        return False


def record_source(stream_id: int, session_id: int, source: SourceInfo, renditions: list[Rendition]) -> None:
    """Upsert the session document with the probed source and the ladder (0 segments yet)."""
    if not _guard("source", session_id):
        return
    from analytics.documents import RenditionInfo, SessionMetadata

    try:
        doc = SessionMetadata.objects(session_id=session_id).first() or SessionMetadata(
            stream_id=stream_id, session_id=session_id
        )
        doc.video_codec = source.video_codec
        doc.video_profile = source.video_profile
        doc.width, doc.height, doc.fps = source.width, source.height, source.fps
        doc.video_bitrate = source.video_bitrate
        doc.audio_codec = source.audio_codec
        doc.audio_channels = source.audio_channels
        doc.audio_layout = source.audio_layout
        doc.audio_sample_rate = source.audio_sample_rate
        doc.audio_bitrate = source.audio_bitrate
        doc.renditions = [
            RenditionInfo(
                name=r.name,
                width=r.width,
                height=r.height,
                video_bitrate=r.video_kbps * 1000,
                audio_bitrate=source.audio_bitrate,
            )
            for r in renditions
        ]
        doc.save()
    except Exception:
        logger.exception("could not record source metadata", extra={"session": session_id})


def record_chunks(session_id: int, transcode_ms: list[int]) -> None:
    """Chunks published by one step of the assembler: one update for all of them."""
    if not transcode_ms or not _guard("chunk", session_id):
        return
    from analytics.documents import SessionMetadata

    try:
        SessionMetadata.objects(session_id=session_id).update_one(
            inc__chunks=len(transcode_ms), push_all__transcode_ms=transcode_ms
        )
    except Exception:
        logger.exception("could not record chunk metadata", extra={"session": session_id})


def record_final(session_id: int, summary: dict[str, Any], codecs: dict[str, str], reconnects: int) -> None:
    """Final counters: segments per rendition as published in the playlists, gaps, duration."""
    if not _guard("final", session_id):
        return
    from analytics.documents import SessionMetadata

    try:
        doc = SessionMetadata.objects(session_id=session_id).first()
        if doc is None:
            return
        for info in doc.renditions:
            info.segments = summary["segments"].get(info.name, 0)
            info.codecs = codecs.get(info.name)
        doc.gaps = summary["gaps"]
        doc.duration_s = summary["duration_s"]
        doc.reconnects = reconnects
        doc.ended_at = datetime.now(UTC)
        doc.save()
    except Exception:
        logger.exception("could not record final metadata", extra={"session": session_id})


def record_sample(stream_id: int, session_id: int, **values: Any) -> None:
    if not _guard("sample", session_id):
        return
    from analytics.documents import IngestSample

    try:
        IngestSample(stream_id=stream_id, session_id=session_id, **values).save()
    except Exception:
        logger.exception("could not record ingest sample", extra={"session": session_id})
