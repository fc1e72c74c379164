"""Highlight suggestions of a broadcast: gather the signals, score, offer the top moments.

Signals per published segment (``keys.segments``: its program date-time, duration and
loudness, written by the transcode worker):

- chat: the stream's messages (PostgreSQL, ``chat.models.Message``, not deleted) whose
  ``created_at`` (server wall clock, the same clock as the segments' program date-times) falls
  in the segment;
- loudness: the segment's EBU R128 momentary maximum (``transcoding.loudness``);
- joins: viewers whose player reported its first frame (``startup`` QoE reports, MongoDB) in
  the segment; nothing when analytics are off.

``score_session`` runs periodically while the broadcast is live (``tasks.score_sessions``) and
once more after it ended (``final``). A moment that overlaps a suggestion already made updates
it (score, reasons; never its status, never a second webhook); any other moment above the
threshold becomes a new suggestion, announced by one ``clip.suggested`` event after commit.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction

from highlights import keys, scoring
from highlights.models import Suggestion, SuggestionStatus
from livestream import mongo
from livestream.events import send_event_on_commit
from streams.models import StreamSession

logger = logging.getLogger(__name__)


def _at(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, tz=UTC)


def _bin(times: Sequence[float], segments: Sequence[keys.Segment]) -> list[int]:
    """How many of ``times`` (epoch s) fall in each segment (segments in time order)."""
    starts = [s.wall for s in segments]
    counts = [0] * len(segments)
    for t in times:
        i = bisect.bisect_right(starts, t) - 1
        if i >= 0 and t < segments[i].end:
            counts[i] += 1
    return counts


def chat_times(stream_id: int, start: float, end: float) -> list[float]:
    from chat.models import Message

    rows = Message.objects.filter(
        stream_id=stream_id, created_at__gte=_at(start), created_at__lt=_at(end), deleted_at__isnull=True
    ).values_list("created_at", flat=True)
    return [created.timestamp() for created in rows]


def join_times(session_id: int, start: float, end: float) -> list[float]:
    """When each viewer's player first showed a frame (one per viewer id); [] without MongoDB."""
    if not mongo.is_enabled():
        return []
    try:
        from analytics.documents import PlaybackEvent

        first: dict[str, float] = {}
        events = PlaybackEvent.objects(session_id=session_id, kind="startup", at__gte=_at(start), at__lt=_at(end))
        for event in events.only("viewer_id", "at"):
            at = event.at if event.at.tzinfo else event.at.replace(tzinfo=UTC)
            t = at.timestamp()
            viewer = event.viewer_id or str(event.pk)
            first[viewer] = min(t, first.get(viewer, t))
        return list(first.values())
    except Exception as exc:  # analytics are best effort: score without joins
        logger.warning("viewer joins not read: %s", type(exc).__name__, extra={"session": session_id})
        return []


def signals(session: StreamSession, segments: list[keys.Segment] | None = None) -> list[scoring.SegmentSignals]:
    """Every recorded segment of the session (``segments``: already read) with its three signals."""
    segments = keys.segments(session.pk) if segments is None else segments
    if not segments:
        return []
    start, end = segments[0].wall, max(s.end for s in segments)
    messages = _bin(chat_times(session.stream_id, start, end), segments)
    joins = _bin(join_times(session.pk, start, end), segments)
    return [
        scoring.SegmentSignals(start=s.wall, duration=s.duration, messages=m, loudness=s.loudness, joins=j, seq=s.seq)
        for s, m, j in zip(segments, messages, joins, strict=True)
    ]


def _weights() -> scoring.Weights:
    return scoring.Weights(
        chat=settings.HIGHLIGHTS_WEIGHT_CHAT,
        loudness=settings.HIGHLIGHTS_WEIGHT_LOUDNESS,
        joins=settings.HIGHLIGHTS_WEIGHT_JOINS,
    )


def candidates(
    session: StreamSession, segments: list[keys.Segment] | None = None
) -> tuple[list[scoring.Moment], dict[str, scoring.Baseline | None]]:
    """The session's top moments above ``HIGHLIGHTS_MIN_SCORE`` (best first), and the baselines."""
    scored, bases = scoring.score(signals(session, segments), weights=_weights())
    found = scoring.moments(
        scored,
        threshold=settings.HIGHLIGHTS_MIN_SCORE,
        window=settings.HIGHLIGHTS_WINDOW_SEGMENTS,
        limit=settings.HIGHLIGHTS_MAX_PER_SESSION,
    )
    return found, bases


def _signal_numbers(moment: scoring.Moment, bases: dict[str, scoring.Baseline | None]) -> dict[str, Any]:
    peak = moment.peak.segment
    return {
        "z": moment.peak.z,
        "messages": peak.messages,
        "loudness_lufs": peak.loudness,
        "joins": peak.joins,
        "baseline": {
            name: {"median": b.median, "scale": round(b.scale, 3)} if b else None for name, b in bases.items()
        },
        "segments": [s.segment.seq for s in moment.segments],
    }


def event_data(suggestion: Suggestion) -> dict[str, Any]:
    """The ``clip.suggested`` payload: what a client needs to cut the clip."""
    return {
        "stream": suggestion.stream_id,
        "session": suggestion.session_id,
        "suggestion": suggestion.pk,
        "start": suggestion.start.isoformat(),
        "end": suggestion.end.isoformat(),
        "score": suggestion.score,
        "reasons": suggestion.reasons,
    }


def score_session(session_id: int, *, final: bool = False) -> list[Suggestion] | None:
    """Score the session and offer its new top moments; returns the suggestions created (None:
    not scored, another run holds the session or it is gone).

    While live (``final`` False) nothing is offered before ``HIGHLIGHTS_MIN_SEGMENTS``
    segments make a baseline. One run per session at a time (a Redis lock); a run that finds
    it held does nothing (the next one scores)."""
    session = StreamSession.objects.filter(pk=session_id).only("pk", "stream_id").first()
    if session is None or not keys.claim_run(session_id):
        return None
    try:
        segments = keys.segments(session_id)
        if not final and len(segments) < settings.HIGHLIGHTS_MIN_SEGMENTS:
            return []
        moments, bases = candidates(session, segments)
        return _offer(session, moments, bases, final=final)
    finally:
        keys.release_run(session_id)


def _offer(
    session: StreamSession,
    moments: list[scoring.Moment],
    bases: dict[str, scoring.Baseline | None],
    *,
    final: bool,
) -> list[Suggestion]:
    created: list[Suggestion] = []
    with transaction.atomic():
        existing = list(Suggestion.objects.select_for_update().filter(session_id=session.pk))
        for moment in moments:
            start, end = _at(moment.start), _at(moment.end)
            reasons = scoring.describe(moment.peak, bases)
            numbers = _signal_numbers(moment, bases)
            overlapping = [s for s in existing if s.start < end and start < s.end]
            if overlapping:
                kept = overlapping[0]
                if moment.score > kept.score or final:
                    kept.score = max(kept.score, moment.score) if not final else moment.score
                    kept.reasons, kept.signals = reasons, numbers
                    kept.save(update_fields=["score", "reasons", "signals", "updated_at"])
                continue
            if len(existing) >= settings.HIGHLIGHTS_MAX_PER_SESSION:
                continue
            try:
                with transaction.atomic():
                    suggestion = Suggestion.objects.create(
                        stream_id=session.stream_id,
                        session_id=session.pk,
                        start=start,
                        end=end,
                        peak_at=_at(moment.peak.segment.start),
                        score=moment.score,
                        reasons=reasons,
                        signals=numbers,
                    )
            except IntegrityError:  # made by a run that overlapped this one: never announced twice
                continue
            existing.append(suggestion)
            created.append(suggestion)
            send_event_on_commit(session.stream_id, "clip.suggested", event_data(suggestion))
            logger.info(
                "highlight suggested: %.1f (%s)",
                suggestion.score,
                ", ".join(f"{k} z={v:.1f}" for k, v in moment.peak.z.items()),
                extra={"stream": session.stream_id, "session": session.pk},
            )
        if final:
            Suggestion.objects.filter(session_id=session.pk).update(final=True)
    return created


def offered(stream_id: int, *, status: str | None = SuggestionStatus.OFFERED) -> list[Suggestion]:
    """A stream's suggestions (by default those still offered), best first."""
    qs = Suggestion.objects.filter(stream_id=stream_id)
    if status:
        qs = qs.filter(status=status)
    return list(qs.order_by("-score", "start"))


def set_status(suggestion: Suggestion, status: str) -> Suggestion:
    """Dismiss a suggestion, or mark it clipped (the page does after its clip was created)."""
    if suggestion.status != status:
        suggestion.status = status
        suggestion.save(update_fields=["status", "updated_at"])
    return suggestion
