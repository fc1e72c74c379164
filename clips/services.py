"""Creating and deleting clips. Views, the API and other apps (highlights) call these.

``create_clip`` checks the request (who may clip what, the range, the rate limit and the
quota), records the clip as ``pending`` and, after commit, queues ``clips.tasks.cut_clip``
(default queue), which cuts the segments of the range into one MP4 and marks it ``ready``
(webhook ``clip.created``) or ``failed`` with the reason. ``delete_clip`` removes the row and,
after commit, its objects (webhook ``clip.deleted``). A stream's clips live under the stream's
object prefix (``object_key``), so deleting the stream purges them with the rest of its objects
(``transcoding.tasks.purge_stream_objects``).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import User
from clips.models import Clip, ClipStatus
from clips.sources import Segment, covering, losses, segments
from livestream import ratelimit
from livestream.events import send_event_on_commit
from streams import playback
from streams.models import SessionStatus, Stream, StreamSession

logger = logging.getLogger(__name__)

MIN_SECONDS = 1.0


class ClipError(Exception):
    """A clip request refused; ``code`` names why (the API's error code), the text is for people."""

    code = "invalid"


class ClipValidationError(ClipError, ValueError):
    """Bad range or parameters (400)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ClipNotAllowedError(ClipError):
    """The user may not clip this stream or session (404 to the API: it is not theirs to see)."""

    code = "not_found"


class ClipRateLimitedError(ClipError):
    code = "throttled"


class ClipQuotaError(ClipError):
    code = "clip_quota_reached"


class ClipPermissionError(ClipError):
    code = "permission_denied"


def rate_limit() -> ratelimit.Limit:
    return ratelimit.Limit("clip-create", settings.CLIP_RATE_PER_MINUTE, 60)


def object_key(clip: Clip) -> str:
    """Under the stream's prefix (public, purged with the stream); the slug makes it unique."""
    return f"{playback.stream_prefix(clip.stream_id)}/clips/{clip.slug}.mp4"


def video_url(clip: Clip) -> str:
    return f"{settings.HLS_EDGE_URL}/{clip.video_key}" if clip.video_key else ""


def page_url(clip: Clip) -> str:
    return settings.PUBLIC_WEB_URL + clip.get_absolute_url()


def is_stream_owner(user: User, stream: Stream) -> bool:
    return bool(user.is_authenticated and (user.pk == stream.owner_id or user.is_staff))


def may_delete(user: User, clip: Clip) -> bool:
    """The clip's owner, the stream's owner (any clip of their stream), or staff."""
    return bool(
        user.is_authenticated and (user.pk == clip.owner_id or user.is_staff or user.pk == clip.stream.owner_id)
    )


def _public_session(session: StreamSession) -> bool:
    """Whether anyone may watch (and so clip) the session: on air, or a kept replay; never a
    private preview that did not go public (ADR 0034)."""
    if session.is_preview and session.went_public_at is None:
        return False
    if session.status in (SessionStatus.LIVE, SessionStatus.RECONNECTING):
        return True
    return session.status == SessionStatus.ENDED and session.is_replay


def _aware(value: datetime, field: str) -> datetime:
    if not isinstance(value, datetime):
        raise ClipValidationError("Expected an ISO-8601 date-time.", field=field)
    if timezone.is_naive(value):
        raise ClipValidationError("The date-time needs a time zone (e.g. 'Z' or '+00:00').", field=field)
    return value


def when(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _check_rate_and_quota(user: User) -> None:
    if settings.CLIP_RATE_PER_MINUTE and not ratelimit.hit(rate_limit(), str(user.pk)):
        raise ClipRateLimitedError(f"At most {settings.CLIP_RATE_PER_MINUTE} clips a minute. Try again shortly.")
    limit = settings.CLIPS_PER_USER_PER_DAY
    if limit:
        User.objects.select_for_update().filter(pk=user.pk).first()  # two requests cannot both take the last one
        since = timezone.now() - timedelta(days=1)
        if Clip.objects.filter(owner_id=user.pk, created_at__gte=since).count() >= limit:
            raise ClipQuotaError(f"You can create {limit} clips a day. Try again tomorrow.")


def _resolve_live(
    session: StreamSession | None, stream: Stream, last_seconds: Any
) -> tuple[StreamSession, float, float]:
    if isinstance(last_seconds, bool) or not isinstance(last_seconds, int | float):
        raise ClipValidationError("last_seconds must be a number of seconds.", field="last_seconds")
    if not MIN_SECONDS <= last_seconds <= settings.CLIP_MAX_SECONDS:
        raise ClipValidationError(
            f"last_seconds must be between {MIN_SECONDS:g} and {settings.CLIP_MAX_SECONDS}.", field="last_seconds"
        )
    open_session = (
        stream.sessions.filter(status__in=(SessionStatus.LIVE, SessionStatus.RECONNECTING))
        .order_by("-started_at")
        .first()
    )
    if open_session is None or (session is not None and session.pk != open_session.pk):
        raise ClipValidationError("The stream is not live: clip a range of a replay instead.", field="last_seconds")
    found = segments(open_session, last_seconds=float(last_seconds))
    if not found:
        raise ClipValidationError("Nothing of this broadcast is published yet.", field="last_seconds")
    end = found[-1].end
    start = end - float(last_seconds)
    lost = losses(covering(found, start, end))
    if lost:
        # Media was dropped in that span (the workers fell behind): the clip starts after it,
        # shorter than asked (its requested_start says so) rather than skipping it silently.
        start = lost[-1].wall
        if end - start < MIN_SECONDS:
            raise ClipValidationError(
                "The broadcast dropped video in the last moments (the server was overloaded): "
                "try again in a few seconds.",
                field="last_seconds",
            )
    return open_session, start, end


def _resolve_range(
    session: StreamSession, start: datetime | None, end: datetime | None
) -> tuple[float, float, list[Segment]]:
    if start is None or end is None:
        raise ClipValidationError("A range needs both start and end.", field="start" if start is None else "end")
    s, e = _aware(start, "start").timestamp(), _aware(end, "end").timestamp()
    if e <= s:
        raise ClipValidationError("end must be after start.", field="end")
    if e - s < MIN_SECONDS:
        raise ClipValidationError(f"A clip is at least {MIN_SECONDS:g} s long.", field="end")
    if e - s > settings.CLIP_MAX_SECONDS:
        raise ClipValidationError(f"A clip is at most {settings.CLIP_MAX_SECONDS} s long.", field="end")
    found = segments(session)
    if not found:
        raise ClipValidationError("This broadcast has no published video.", field="session")
    first, last = found[0].wall, found[-1].end
    if s < first - 0.001 or e > last + 0.001:
        raise ClipValidationError(
            f"The range must lie within the broadcast ({when(first).isoformat()} to {when(last).isoformat()}).",
            field="start" if s < first - 0.001 else "end",
        )
    inside = covering(found, s, e)
    if not inside:
        raise ClipValidationError("No video in that range.", field="start")
    lost = losses(inside)
    if lost:
        at = when(lost[0].wall).isoformat()
        raise ClipValidationError(
            f"Video was dropped from the broadcast just before {at} (the server was overloaded): "
            "choose a range that ends before or starts at that moment.",
            field="start",
        )
    return s, e, found


def create_clip(
    *,
    requested_by: User,
    stream: Stream,
    title: str,
    last_seconds: int | float | None = None,
    session: StreamSession | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    trim: bool = False,
) -> Clip:
    """Record a clip of ``stream`` and queue its cut. Either ``last_seconds`` (the last N seconds
    of the live broadcast, up to ``CLIP_MAX_SECONDS``) or ``session`` with ``start``/``end``
    (aware date-times on the program date-time clock of the session's segments). ``trim``: cut
    exactly at the instants (edges re-encoded) instead of the enclosing segment boundaries.

    Raises ``ClipValidationError`` (bad range or parameters), ``ClipNotAllowedError`` (the user
    may not clip it), ``ClipRateLimitedError``, ``ClipQuotaError``."""
    if not requested_by.is_authenticated:
        raise ClipNotAllowedError("Sign in to clip.")
    title = (title or "").strip()
    if not title:
        raise ClipValidationError("A clip needs a title.", field="title")
    if len(title) > 140:
        raise ClipValidationError("The title is at most 140 characters.", field="title")
    if not isinstance(trim, bool):
        raise ClipValidationError("trim must be true or false.", field="trim")
    if session is not None and session.stream_id != stream.pk:
        raise ClipNotAllowedError("No such broadcast on this stream.")
    owner = is_stream_owner(requested_by, stream)
    if session is not None and not owner and not _public_session(session):
        raise ClipNotAllowedError("No such broadcast on this stream.")

    if last_seconds is not None:
        if start is not None or end is not None:
            raise ClipValidationError("Give either last_seconds or a start/end range, not both.", field="last_seconds")
        session, s, e = _resolve_live(session, stream, last_seconds)
    elif session is None:
        raise ClipValidationError("Give last_seconds (live) or a session with start and end.", field="session")
    else:
        s, e, _ = _resolve_range(session, start, end)

    with transaction.atomic():
        _check_rate_and_quota(requested_by)
        clip = Clip(
            stream=stream,
            session=session,
            owner=requested_by,
            title=title,
            requested_start=when(s),
            requested_end=when(e),
            trim=trim,
        )
        clip.video_key = object_key(clip)
        clip.save()
        clip_id = clip.pk
        transaction.on_commit(lambda: _queue_cut(clip_id))
    logger.info("clip requested", extra={"stream": stream.pk, "session": session.pk, "ctx": {"clip": clip.slug}})
    return clip


def _queue_cut(clip_id: int) -> None:
    from clips.tasks import cut_clip

    cut_clip.delay(clip_id)


def event_data(clip: Clip) -> dict[str, Any]:
    return {
        "stream": clip.stream_id,
        "session": clip.session_id,
        "clip": {"id": clip.pk, "slug": clip.slug},
        "url": page_url(clip),
        "video_url": video_url(clip),
        "title": clip.title,
        "duration": round(clip.duration_s, 3),
        "start": clip.start.isoformat() if clip.start else None,
        "end": clip.end.isoformat() if clip.end else None,
    }


def delete_clip(clip: Clip, *, by: User) -> None:
    """Delete the clip (its owner, the stream's owner, or staff) and, after commit, its objects."""
    if not may_delete(by, clip):
        raise ClipPermissionError("Only the clip's owner or the stream's owner may delete it.")
    data = event_data(clip)
    stream_id, key = clip.stream_id, clip.video_key
    with transaction.atomic():
        deleted, _ = Clip.objects.filter(pk=clip.pk).delete()
        if deleted:
            transaction.on_commit(lambda: _delete_objects(key))
            send_event_on_commit(stream_id, "clip.deleted", data)
    logger.info("clip deleted", extra={"stream": stream_id, "ctx": {"clip": clip.slug}})


def _delete_objects(key: str) -> None:
    from clips.tasks import delete_clip_objects

    if key:
        delete_clip_objects.delay([key])


def mark_ready(clip_id: int, **fields: Any) -> Clip | None:
    """Record the cut (only a pending clip that still exists); sends ``clip.created``."""
    with transaction.atomic():
        updated = Clip.objects.filter(pk=clip_id, status=ClipStatus.PENDING).update(
            status=ClipStatus.READY, progress=100, **fields
        )
        if not updated:
            return None
        clip = Clip.objects.select_related("stream").get(pk=clip_id)
        send_event_on_commit(clip.stream_id, "clip.created", event_data(clip))
    return clip


def mark_failed(clip_id: int, reason: str) -> None:
    Clip.objects.filter(pk=clip_id, status=ClipStatus.PENDING).update(
        status=ClipStatus.FAILED, failure_reason=reason[:300]
    )


def set_progress(clip_id: int, percent: int) -> None:
    Clip.objects.filter(pk=clip_id, status=ClipStatus.PENDING).update(progress=max(0, min(99, percent)))
