"""Broadcast session lifecycle: every write to ``StreamSession`` and a stream's live status.

States: ``live`` -> (publisher leaves) ``reconnecting`` -> (same key back within
``RECONNECT_GRACE_SECONDS``) ``live`` again, same session; or (grace over) ``ending`` while the
last chunks finish -> ``ended`` (a replay when the stream keeps recordings).

The stream reads ``offline`` as soon as the publisher leaves. Events go out through
``livestream.events.send_event_on_commit`` only: ``stream.live``, ``stream.offline``,
``replay.ready``. Callers pass plain values; nothing here talks to nginx, Redis or S3.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from livestream.events import send_event_on_commit
from streams import keys, playback, problems, quotas
from streams.models import SessionStatus, Stream, StreamSession, StreamStatus

logger = logging.getLogger(__name__)


class PublishRefused(Exception):  # noqa: N818 - a refusal, not a programming error
    """A publish attempt that must be answered 403; ``reason`` is safe to log (no key)."""

    def __init__(self, reason: str, stream_id: int | None = None, *, tell_owner: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.stream_id = stream_id
        # Also shown on the stream's dashboard page (streams.problems), e.g. a quota refusal.
        self.tell_owner = tell_owner


@dataclass(frozen=True)
class PublishGrant:
    """An accepted publish: the session and which publisher connection of it this is."""

    session: StreamSession
    connection: int
    resumed: bool
    # Superseded sessions whose grace period had passed; the caller finalises them.
    superseded: tuple[int, ...] = ()


def _grace() -> timedelta:
    return timedelta(seconds=settings.RECONNECT_GRACE_SECONDS)


def _set_stream_status(stream: Stream, status: str) -> None:
    stream.status = status
    fields = ["status", "updated_at"]
    if status == StreamStatus.LIVE:
        stream.last_live_at = timezone.now()
        fields.append("last_live_at")
    stream.save(update_fields=fields)


def start_publish(key: str, *, ingest_dead: Callable[[StreamSession], bool] | None = None) -> PublishGrant:
    """Accept a publisher for the stream whose key is ``key``, or raise ``PublishRefused``.

    Locks the owner's row, then the stream's (the order ``services.create_stream`` and user
    deletion use), and refuses a publish beyond the owner's concurrent-live quota
    (``quotas.live_refusal``; the reason is recorded for the dashboard with
    ``problems.record``). A session waiting in ``reconnecting`` within the grace period is
    resumed (connections + 1); one past its grace period is moved to ``ending`` and a new
    session starts. A ``live`` session is taken over (resumed like a reconnect) when
    ``ingest_dead(session)`` says nothing receives its publisher any more (nginx-rtmp was
    killed, its on_publish_done was lost); otherwise the key is refused as in use. Marks the
    stream live and sends ``stream.live`` after commit.
    """
    try:
        grant = _start_publish(keys.hash_key(key), ingest_dead)
    except PublishRefused as exc:
        if exc.tell_owner and exc.stream_id is not None:
            problems.record(exc.stream_id, exc.reason)
        raise
    session = grant.session
    logger.info(
        "publish accepted (%s)",
        "reconnect" if grant.resumed else "new session",
        extra={"stream": session.stream_id, "session": session.pk, "ctx": {"connection": session.connections}},
    )
    return grant


def _start_publish(digest: str, ingest_dead: Callable[[StreamSession], bool] | None) -> PublishGrant:
    with transaction.atomic():
        owner_id = Stream.objects.filter(key_hash=digest).values_list("owner_id", flat=True).first()
        if owner_id is None:
            raise PublishRefused("unknown stream key")
        get_user_model().objects.select_for_update().filter(pk=owner_id).first()
        # Re-read under lock: the key may have been regenerated (or the stream deleted) since.
        stream = Stream.objects.select_for_update().filter(key_hash=digest).first()
        if stream is None:
            raise PublishRefused("unknown stream key")
        now = timezone.now()
        superseded: list[int] = []
        session = (
            StreamSession.objects.select_for_update()
            .filter(stream=stream, status__in=[SessionStatus.LIVE, SessionStatus.RECONNECTING])
            .first()
        )
        live = session is not None and session.status == SessionStatus.LIVE
        if live and session is not None and ingest_dead is not None and ingest_dead(session):
            logger.warning(
                "publish takes over a live session whose ingest is dead",
                extra={"stream": stream.pk, "session": session.pk, "ctx": {"connection": session.connections}},
            )
            session.status = SessionStatus.RECONNECTING
            session.disconnected_at = now
            stream.status = StreamStatus.OFFLINE
        if stream.status == StreamStatus.LIVE:
            raise PublishRefused("stream is already live (key in use by another publisher)", stream.pk)
        if session is not None and session.status == SessionStatus.LIVE:
            raise PublishRefused("stream already has a live session", stream.pk)
        refusal = quotas.live_refusal(stream)
        if refusal is not None:
            raise PublishRefused(refusal, stream.pk, tell_owner=True)
        if session is not None and session.disconnected_at and now - session.disconnected_at <= _grace():
            session.status = SessionStatus.LIVE
            session.connections += 1
            session.disconnected_at = None
            session.save(update_fields=["status", "connections", "disconnected_at", "updated_at"])
            resumed = True
        else:
            if session is not None:
                _begin_ending(session, now)
                superseded.append(session.pk)
            session = StreamSession.objects.create(
                stream=stream, status=SessionStatus.LIVE, started_at=now, is_preview=stream.start_in_preview
            )
            session.storage_prefix = playback.session_prefix(stream.pk, session.pk)
            session.save(update_fields=["storage_prefix"])
            resumed = False
        # A private preview (ADR 0034) stays one across reconnects until the owner goes public.
        preview = session.is_preview and session.went_public_at is None
        if stream.in_preview != preview:
            stream.in_preview = preview
            stream.save(update_fields=["in_preview"])
        _set_stream_status(stream, StreamStatus.LIVE)
        problems.clear(stream.pk)
        if not preview:
            _announce_live(stream, session)
    return PublishGrant(session, session.connections, resumed, tuple(superseded))


def _announce_live(stream: Stream, session: StreamSession) -> None:
    send_event_on_commit(
        stream.pk,
        "stream.live",
        {"stream": stream.pk, "session": session.pk, "playback_url": playback.playback_url(stream)},
    )


class NotInPreview(Exception):  # noqa: N818 - a refusal, not a programming error
    """``go_public`` on a stream whose broadcast is not a private preview."""


def go_public(stream_id: int) -> StreamSession:
    """Make the private preview on air public (ADR 0034): the stream shows in the directory, its
    watch page and playback open to everybody, and ``stream.live`` goes out now (followers,
    webhooks). Raises ``NotInPreview`` when no preview is on air."""
    with transaction.atomic():
        stream = Stream.objects.select_for_update().get(pk=stream_id)
        session = (
            StreamSession.objects.select_for_update()
            .filter(stream=stream, status__in=[SessionStatus.LIVE, SessionStatus.RECONNECTING])
            .first()
        )
        if not stream.in_preview or session is None or not session.is_preview or session.went_public_at:
            raise NotInPreview("this stream has no private preview on air")
        session.went_public_at = timezone.now()
        session.save(update_fields=["went_public_at", "updated_at"])
        stream.in_preview = False
        stream.save(update_fields=["in_preview", "updated_at"])
        if session.status == SessionStatus.LIVE:
            _announce_live(stream, session)
    logger.info("preview went public", extra={"stream": stream.pk, "session": session.pk})
    return session


def private_preview(session: StreamSession) -> bool:
    """The session is a private preview that was never made public."""
    return session.is_preview and session.went_public_at is None


def disconnect(session_id: int, connection: int) -> StreamSession | None:
    """The publisher of ``connection`` left: the stream goes offline now, the session waits out
    the grace period in ``reconnecting``. No-op (returns None) for a stale connection."""
    with transaction.atomic():
        session = StreamSession.objects.select_for_update().select_related("stream").filter(pk=session_id).first()
        if session is None or session.status != SessionStatus.LIVE or session.connections != connection:
            return None
        now = timezone.now()
        session.status = SessionStatus.RECONNECTING
        session.disconnected_at = now
        session.duration_s = (now - session.started_at).total_seconds()
        session.save(update_fields=["status", "disconnected_at", "duration_s", "updated_at"])
        stream = Stream.objects.select_for_update().get(pk=session.stream_id)
        _set_stream_status(stream, StreamStatus.OFFLINE)
        if not private_preview(session):  # nobody was told it was live
            send_event_on_commit(stream.pk, "stream.offline", {"stream": stream.pk, "session": session.pk})
    logger.info("publisher left; waiting for reconnect", extra={"stream": stream.pk, "session": session.pk})
    return session


def grace_remaining(session: StreamSession) -> float:
    """Seconds until a ``reconnecting`` session's grace period is over (0 if over or n/a)."""
    if session.status != SessionStatus.RECONNECTING or session.disconnected_at is None:
        return 0.0
    left = session.disconnected_at + _grace() - timezone.now()
    return max(0.0, left.total_seconds())


def _begin_ending(session: StreamSession, now: object = None) -> None:
    session.status = SessionStatus.ENDING
    session.ended_at = session.disconnected_at or timezone.now()
    session.duration_s = (session.ended_at - session.started_at).total_seconds()
    session.save(update_fields=["status", "ended_at", "duration_s", "updated_at"])


def begin_ending(session_id: int) -> StreamSession | None:
    """Grace period over: move a ``reconnecting`` session to ``ending``. Returns the session if
    it is (now or already) ending, None if it resumed or ended meanwhile."""
    with transaction.atomic():
        session = StreamSession.objects.select_for_update().filter(pk=session_id).first()
        if session is None:
            return None
        if session.status == SessionStatus.RECONNECTING and grace_remaining(session) <= 0:
            _begin_ending(session)
        if session.status != SessionStatus.ENDING:
            return None
    logger.info("session ending", extra={"stream": session.stream_id, "session": session.pk})
    return session


def end_session(session_id: int, *, duration_s: float) -> StreamSession | None:
    """Finish an ``ending`` session: ``ended``, a replay if its stream keeps recordings (then
    ``replay.ready`` is sent after commit). Returns None when it was not ending."""
    with transaction.atomic():
        session = StreamSession.objects.select_for_update().select_related("stream").filter(pk=session_id).first()
        if session is None or session.status != SessionStatus.ENDING:
            return None
        session.status = SessionStatus.ENDED
        # A preview never made public is not kept (its objects are deleted, ADR 0034).
        session.is_replay = session.stream.keep_recordings and duration_s > 0 and not private_preview(session)
        if session.is_preview:
            Stream.objects.filter(pk=session.stream_id, in_preview=True).exclude(
                sessions__status__in=[SessionStatus.LIVE, SessionStatus.RECONNECTING]
            ).update(in_preview=False)
        if duration_s > 0:
            session.duration_s = duration_s
        session.save(update_fields=["status", "is_replay", "duration_s", "updated_at"])
        if session.is_replay:
            send_event_on_commit(
                session.stream_id,
                "replay.ready",
                {"stream": session.stream_id, "session": session.pk, "replay_url": playback.replay_url(session)},
            )
    logger.info(
        "session ended",
        extra={"stream": session.stream_id, "session": session.pk, "ctx": {"replay": session.is_replay}},
    )
    return session
