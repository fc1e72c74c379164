"""Every analytics write: player QoE reports, viewer and chat samples, retention.

All functions write MongoDB only (never PostgreSQL; the QoE check reads sessions from it) and
do nothing when analytics are off (``livestream.mongo.is_enabled()`` False): they return 0 and
log nothing per call, so the platform keeps streaming without MongoDB. Samples are upserted on
(stream, period start), so running a sampler twice in one period changes nothing.
"""

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from pymongo.errors import PyMongoError

from analytics.documents import ChatStats, IngestSample, PlaybackEvent, SessionMetadata, ViewerSample
from livestream import mongo, ratelimit

logger = logging.getLogger(__name__)

# Player report kinds and what ``value`` means for each (seconds throughout).
KINDS: dict[str, str] = {
    "startup": "seconds from page load to the first rendered frame",
    "heartbeat": "seconds played since the previous heartbeat",
    "rebuffer": "seconds the player stalled waiting for data",
    "latency": "seconds between the live edge (program date time) and the playhead",
    "switch": "none; rendition is the level switched to",
    "error": "none; detail says what failed (fatal errors start with 'fatal:')",
}


class AnalyticsOffError(Exception):
    """MongoDB is unreachable; nothing was recorded."""


class RateLimitedError(Exception):
    """The playback (or its address) sent more reports than allowed; nothing was recorded."""


class UnknownStreamError(Exception):
    """Reports for a stream that does not exist."""


class UnknownSessionError(Exception):
    """The named session is not a session of the stream."""


class SessionClosedError(Exception):
    """The stream is not on air and did not just end: reports are no longer taken."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class PlaybackReport:
    """One validated player event (see ``KINDS``); ``age_s`` is how long ago it happened."""

    kind: str
    age_s: float = 0.0
    value: float | None = None
    rendition: str = ""
    detail: str = ""


def _qoe_limits() -> tuple[ratelimit.Limit, ratelimit.Limit]:
    return (
        ratelimit.Limit("qoe-playback", settings.ANALYTICS_QOE_BATCHES_PER_VIEWER_MIN, 60),
        ratelimit.Limit("qoe-ip", settings.ANALYTICS_QOE_BATCHES_PER_IP_MIN, 60),
    )


def reportable_session(stream_id: int, session_id: int | None, now: datetime) -> int:
    """The session a batch of player reports counts against (reads PostgreSQL).

    Named (replay pages used to name theirs) or not (live pages: the stream's session on air),
    it must be live, reconnecting or ending, or have ended at most
    ``ANALYTICS_QOE_ENDED_GRACE_S`` ago (the last batches of players that were watching).
    Raises ``UnknownStreamError``, ``UnknownSessionError`` or ``SessionClosedError``.
    """
    from streams.models import SessionStatus, Stream, StreamSession

    if not Stream.objects.filter(pk=stream_id).exists():
        raise UnknownStreamError
    just_ended = now - timedelta(seconds=settings.ANALYTICS_QOE_ENDED_GRACE_S)
    sessions = StreamSession.objects.filter(stream_id=stream_id).only("pk", "status", "ended_at")
    if session_id is None:
        session = (
            sessions.exclude(status=SessionStatus.ENDED).order_by("-started_at").first()
            or sessions.filter(status=SessionStatus.ENDED, ended_at__gte=just_ended).order_by("-ended_at").first()
        )
        if session is None:
            raise SessionClosedError("not_live", "The stream is not live; there is no playback to report on.")
        return session.pk
    session = sessions.filter(pk=session_id).first()
    if session is None:
        raise UnknownSessionError
    if session.status == SessionStatus.ENDED and (session.ended_at is None or session.ended_at < just_ended):
        raise SessionClosedError(
            "session_ended",
            f"This broadcast ended more than {settings.ANALYTICS_QOE_ENDED_GRACE_S} s ago;"
            " reports are no longer accepted.",
        )
    return session.pk


def record_playback_batch(
    *,
    stream_id: int,
    session_id: int | None,
    viewer_id: str,
    client_ip: str,
    reports: Sequence[PlaybackReport],
    now: datetime | None = None,
) -> int:
    """Store one batch of validated player reports as ``PlaybackEvent`` documents.

    In order, each refusal storing nothing: ``AnalyticsOffError`` without MongoDB; one batch
    counted against the client address's limit (``ANALYTICS_QOE_BATCHES_PER_IP_MIN`` per minute,
    Redis, before any database read; ``client_ip`` comes from ``livestream.clientaddr``), else
    ``RateLimitedError``; the session check (``reportable_session``); one batch counted against
    the playback's limit (this viewer id in this session, ``ANALYTICS_QOE_BATCHES_PER_VIEWER_MIN``
    per minute). The batch is written with one insert. Returns the number of events stored.
    """
    if not mongo.is_enabled():
        raise AnalyticsOffError
    per_playback, per_ip = _qoe_limits()
    if not ratelimit.hit(per_ip, client_ip):
        raise RateLimitedError
    now = now or datetime.now(UTC)
    session_pk = reportable_session(stream_id, session_id, now)
    if not ratelimit.hit(per_playback, f"{session_pk}:{viewer_id}"):
        raise RateLimitedError
    docs = [
        PlaybackEvent(
            stream_id=stream_id,
            session_id=session_pk,
            viewer_id=viewer_id,
            kind=report.kind,
            at=now - timedelta(seconds=report.age_s),
            rendition=report.rendition or None,
            value=report.value,
            detail=report.detail or None,
        )
        for report in reports
    ]
    if docs:
        try:
            PlaybackEvent.objects.insert(docs, load_bulk=False)
        except PyMongoError as exc:  # the server went away after start-up: same answer as "off"
            logger.warning("could not store player reports (%s)", type(exc).__name__, extra={"stream": stream_id})
            raise AnalyticsOffError from exc
    return len(docs)


def period_start(now: datetime, period_s: int) -> datetime:
    """Start of the ``period_s``-long period holding ``now`` (aligned to the epoch, UTC)."""
    ts = int(now.timestamp())
    return datetime.fromtimestamp(ts - ts % period_s, tz=UTC)


def record_viewer_sample(
    *,
    stream_id: int,
    session_id: int | None,
    at: datetime,
    viewers: int,
    interval_s: float,
    per_rendition: dict[str, int] | None = None,
) -> None:
    """Upsert the viewer sample of ``stream_id`` for the period starting at ``at``."""
    ViewerSample.objects(stream_id=stream_id, at=at).update_one(
        upsert=True,
        set__session_id=session_id,
        set__viewers=viewers,
        set__interval_s=interval_s,
        set__per_rendition=per_rendition or {},
    )


def record_chat_stats(
    *,
    stream_id: int,
    session_id: int | None,
    at: datetime,
    interval_s: float,
    messages: int,
    chatters: int,
    deleted: int = 0,
) -> None:
    """Upsert the chat activity of ``stream_id`` for the period starting at ``at``."""
    ChatStats.objects(stream_id=stream_id, at=at).update_one(
        upsert=True,
        set__session_id=session_id,
        set__interval_s=interval_s,
        set__messages=messages,
        set__chatters=chatters,
        set__deleted=deleted,
    )


def _renditions_watched(stream_ids: Iterable[int], since: datetime) -> dict[int, dict[str, int]]:
    """Distinct players per rendition per stream, from heartbeats since ``since``."""
    rows = PlaybackEvent._get_collection().aggregate(
        [
            {"$match": {"stream_id": {"$in": list(stream_ids)}, "kind": "heartbeat", "at": {"$gte": since}}},
            {"$sort": {"at": 1}},
            # Each player counts once, under the rendition of its latest heartbeat.
            {"$group": {"_id": {"stream": "$stream_id", "viewer": "$viewer_id"}, "rendition": {"$last": "$rendition"}}},
            {"$group": {"_id": {"stream": "$_id.stream", "rendition": "$rendition"}, "n": {"$sum": 1}}},
        ]
    )
    result: dict[int, dict[str, int]] = {}
    for row in rows:
        if row["_id"].get("rendition"):
            result.setdefault(int(row["_id"]["stream"]), {})[row["_id"]["rendition"]] = int(row["n"])
    return result


def sample_live_streams(*, now: datetime | None = None) -> int:
    """Record one viewer sample for every stream with an unfinished session, for the sampling
    period holding ``now``, and the chat activity of the period before it (complete by now).

    Reads presence counts from Redis (``chat.presence.viewer_counts``) and open sessions from
    PostgreSQL. Idempotent per period. Returns the number of streams sampled.
    """
    if not mongo.is_enabled():
        return 0
    from analytics.selectors import OPEN_STATUSES
    from chat import presence
    from streams.models import StreamSession

    period = settings.ANALYTICS_VIEWER_SAMPLE_S
    now = now or datetime.now(UTC)
    at = period_start(now, period)
    sessions = dict(
        StreamSession.objects.filter(status__in=OPEN_STATUSES)
        .values_list("stream_id", "pk")
        .order_by("stream_id", "started_at")
    )
    if not sessions:
        return 0
    counts = presence.viewer_counts(sessions)
    renditions = _renditions_watched(sessions, now - timedelta(seconds=max(period, 30)))
    # Chat counts cover the previous, complete period (re-counted on every run: upserts).
    chat_at = at - timedelta(seconds=period)
    chat = _chat_activity(sessions, chat_at, at)
    for stream_id, session_id in sessions.items():
        record_viewer_sample(
            stream_id=stream_id,
            session_id=session_id,
            at=at,
            viewers=counts.get(stream_id, 0),
            interval_s=float(period),
            per_rendition=renditions.get(stream_id),
        )
        if stream_id in chat:
            messages, chatters, deleted = chat[stream_id]
            record_chat_stats(
                stream_id=stream_id,
                session_id=session_id,
                at=chat_at,
                interval_s=float(period),
                messages=messages,
                chatters=chatters,
                deleted=deleted,
            )
    logger.info("viewer samples recorded", extra={"ctx": {"streams": len(sessions), "at": at.isoformat()}})
    return len(sessions)


def _chat_activity(stream_ids: Iterable[int], start: datetime, end: datetime) -> dict[int, tuple[int, int, int]]:
    """(messages, distinct chatters, deleted messages) per stream for messages sent in
    [start, end), read from the chat app's PostgreSQL table (empty without the chat app)."""
    try:
        from chat.models import Message
    except ImportError:
        return {}
    from django.db.models import Count, Q

    rows = (
        Message.objects.filter(stream_id__in=list(stream_ids), created_at__gte=start, created_at__lt=end)
        .values("stream_id")
        .annotate(
            messages=Count("id"),
            chatters=Count("user_id", distinct=True),
            deleted=Count("id", filter=Q(deleted_at__isnull=False)),
        )
        .order_by("stream_id")
    )
    return {int(row["stream_id"]): (int(row["messages"]), int(row["chatters"]), int(row["deleted"])) for row in rows}


def enforce_retention(*, now: datetime | None = None) -> dict[str, int]:
    """Delete documents older than the retention settings; return how many per collection.

    Samples (ingest, viewers, chat) keep ``ANALYTICS_SAMPLE_RETENTION_DAYS``, player events
    ``ANALYTICS_EVENT_RETENTION_DAYS``, session metadata ``ANALYTICS_SESSION_RETENTION_DAYS``
    (0 keeps sessions forever). Idempotent.
    """
    if not mongo.is_enabled():
        return {}
    now = now or datetime.now(UTC)
    sample_cut = now - timedelta(days=settings.ANALYTICS_SAMPLE_RETENTION_DAYS)
    event_cut = now - timedelta(days=settings.ANALYTICS_EVENT_RETENTION_DAYS)
    deleted: dict[str, Any] = {
        "ingest_samples": IngestSample.objects(at__lt=sample_cut).delete(),
        "viewer_samples": ViewerSample.objects(at__lt=sample_cut).delete(),
        "chat_stats": ChatStats.objects(at__lt=sample_cut).delete(),
        "playback_events": PlaybackEvent.objects(at__lt=event_cut).delete(),
    }
    if settings.ANALYTICS_SESSION_RETENTION_DAYS > 0:
        session_cut = now - timedelta(days=settings.ANALYTICS_SESSION_RETENTION_DAYS)
        deleted["session_metadata"] = SessionMetadata.objects(started_at__lt=session_cut).delete()
    result = {name: int(n or 0) for name, n in deleted.items()}
    logger.info("analytics retention enforced", extra={"ctx": result})
    return result
