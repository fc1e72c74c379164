"""Reads for analytics pages and the API, with their access checks.

Access: a stream's analytics are its owner's (and staff's); anybody else gets ``Http404``
(``streams.selectors.get_stream_for_owner``), so other users' streams do not show that they
exist. Platform totals are staff-only (checked by the views). Every function raises
``AnalyticsOffError`` when MongoDB is unreachable so callers can say so plainly.
"""

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from django.conf import settings
from django.db.models import QuerySet
from django.http import Http404
from django.utils import timezone
from pymongo.errors import PyMongoError

from accounts.models import User
from analytics import aggregations
from analytics.services import AnalyticsOffError
from livestream import mongo
from streams import selectors as stream_selectors
from streams.models import SessionStatus, Stream, StreamSession

logger = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")
MAX_HISTORY_DAYS = 366
# Sessions a publisher is on or may come back to (an "ending" one may overlap the next).
OPEN_STATUSES = (SessionStatus.LIVE, SessionStatus.RECONNECTING)


def analytics_enabled() -> bool:
    return mongo.is_enabled()


def _mongo_read(fn: Callable[P, R]) -> Callable[P, R]:
    """Raise AnalyticsOffError when MongoDB is off at start-up or fails now (a server that
    went away answers with PyMongoError: the page says analytics are off, never a 500)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if not mongo.is_enabled():
            raise AnalyticsOffError
        try:
            return fn(*args, **kwargs)
        except PyMongoError as exc:
            logger.warning("MongoDB read failed (%s): analytics shown as off", type(exc).__name__)
            raise AnalyticsOffError from exc

    return wrapper


def get_stream(user: User, stream_id: int) -> Stream:
    return stream_selectors.get_stream_for_owner(user, stream_id)


def sessions_of(stream: Stream, limit: int = 50) -> QuerySet[StreamSession]:
    return stream.sessions.order_by("-started_at")[:limit]


def get_session(stream: Stream, session_id: int) -> StreamSession:
    try:
        return stream.sessions.get(pk=session_id)
    except StreamSession.DoesNotExist:
        raise Http404("No such session.") from None


def session_duration_s(session: StreamSession, now: datetime | None = None) -> float:
    """Seconds from start to end (or to now while the session is open)."""
    end = session.ended_at or now or timezone.now()
    return max(0.0, (end - session.started_at).total_seconds())


@_mongo_read
def session_report(session: StreamSession, *, bucket_s: int = 60) -> dict[str, Any]:
    """Summary, chart series and per-rendition experience of one session."""
    return {
        "summary": aggregations.session_summary(session.pk, duration_s=session_duration_s(session)),
        "viewers": aggregations.viewer_series(session.pk, bucket_s=bucket_s),
        "ingest": aggregations.ingest_series(session.pk, bucket_s=max(5, bucket_s // 6)),
        "renditions": aggregations.session_renditions(session.pk),
    }


@_mongo_read
def stream_history(stream: Stream, *, days: int) -> list[dict[str, Any]]:
    return aggregations.stream_history(stream.pk, days=max(1, min(days, MAX_HISTORY_DAYS)))


@_mongo_read
def platform_totals(*, days: int) -> dict[str, Any]:
    since = datetime.now(UTC) - timedelta(days=max(1, min(days, MAX_HISTORY_DAYS)))
    totals = aggregations.platform_totals(since=since, sample_s=settings.ANALYTICS_VIEWER_SAMPLE_S)
    titles = dict(
        Stream.objects.filter(pk__in=[row["stream_id"] for row in totals["top_streams"]]).values_list("pk", "title")
    )
    for row in totals["top_streams"]:
        row["title"] = titles.get(row["stream_id"], "(deleted stream)")
    return totals


def queue_depth() -> int | None:
    """Transcode tasks waiting in the broker right now (Redis list length), None if unknown."""
    import redis

    try:
        broker = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=2)
        return int(broker.llen("transcode"))
    except (redis.RedisError, ValueError):
        return None


@dataclass(frozen=True)
class HealthWarning:
    code: str
    message: str


def health_warnings(
    ingest: dict[str, Any] | None, *, queue: int | None, source_fps: float | None
) -> list[HealthWarning]:
    """What the live health panel warns about: transcoders behind the live edge, a growing
    queue, chunks newly dropped or late (the counters are cumulative; ``new_*`` are the rise
    over the last minute), the ingest frame rate well under the source's."""
    warnings: list[HealthWarning] = []
    if queue is not None and queue >= settings.ANALYTICS_QUEUE_WARN:
        warnings.append(
            HealthWarning("queue", f"{queue} chunks wait for a transcoder: add workers or lower the ladder.")
        )
    if ingest is None:
        return warnings
    lags = {name: float(v) for name, v in (ingest.get("lag_s") or {}).items() if v is not None}
    behind = sorted(name for name, lag in lags.items() if lag > settings.ANALYTICS_LAG_WARN_S)
    if behind:
        worst = max(lags[name] for name in behind)
        warnings.append(
            HealthWarning("lag", f"Pipeline falling behind: {', '.join(behind)} trail ingest by up to {worst:.1f} s.")
        )
    if ingest.get("new_dropped", 0) > 0:
        warnings.append(
            HealthWarning(
                "dropped", f"{ingest['new_dropped']} chunk(s) dropped in the last minute (missed the deadline)."
            )
        )
    if ingest.get("new_late", 0) > 0:
        warnings.append(HealthWarning("late", f"{ingest['new_late']} chunk(s) finished late in the last minute."))
    fps = ingest.get("fps")
    if source_fps and fps is not None and fps < 0.8 * source_fps:
        warnings.append(
            HealthWarning(
                "fps", f"Ingest at {fps:.1f} fps, source is {source_fps:.1f} fps: the encoder or uplink struggles."
            )
        )
    return warnings


@_mongo_read
def live_health(stream: Stream) -> dict[str, Any]:
    """The live panel's data: the open session's newest ingest sample, the queue depth, the
    current viewer count and warnings. ``live`` is False when no session is open."""
    from analytics.documents import SessionMetadata, ViewerSample
    from chat import presence

    session = stream.sessions.filter(status__in=OPEN_STATUSES).order_by("-started_at").first()
    if session is None:
        return {"live": False, "session_id": None, "ingest": None, "queue_depth": queue_depth(), "warnings": []}
    ingest = aggregations.latest_ingest(session.pk)
    queue = ingest["queue_depth"] if ingest and ingest.get("queue_depth") is not None else queue_depth()
    meta = SessionMetadata.objects(session_id=session.pk).only("fps").first()
    warnings = health_warnings(ingest, queue=queue, source_fps=meta.fps if meta else None)
    latest_viewers = ViewerSample.objects(session_id=session.pk).order_by("-at").only("per_rendition").first()
    return {
        "per_rendition": dict(latest_viewers.per_rendition or {}) if latest_viewers else {},
        "live": True,
        "session_id": session.pk,
        "status": session.status,
        "viewers": presence.viewer_count(stream.pk),
        "ingest": ingest,
        "queue_depth": queue,
        "warnings": [{"code": w.code, "message": w.message} for w in warnings],
    }


def lag_warn_s() -> float:
    """Seconds of transcoder lag the live panel and charts mark as falling behind."""
    return float(settings.ANALYTICS_LAG_WARN_S)
