"""Every write to streams: creation, key rotation, edits, deletion.

Keys are returned to the caller exactly once (create, regenerate) and stored only hashed.
Creation is bounded by the owner's stream quota (``streams.quotas``). Regenerating a key or
deleting a stream also disconnects a publisher that is live on it, after commit, through
nginx-rtmp's control interface (``transcoding.rtmp_control``).
"""

import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from accounts.models import User
from streams import keys, quotas, sessions
from streams.models import LatencyMode, SessionStatus, Stream, StreamSession

logger = logging.getLogger(__name__)


class _Unset:
    """Marks an optional service argument the caller did not pass (None is a real value)."""


UNSET = _Unset()


@dataclass(frozen=True)
class StreamWithKey:
    """A freshly created or re-keyed stream and its plaintext key (show once, never store)."""

    stream: Stream
    key: str


def _unique_slug(title: str) -> str:
    base = slugify(title)[:60] or "stream"
    slug = base
    while Stream.objects.filter(slug=slug).exists():
        slug = f"{base}-{secrets.token_hex(3)}"
    return slug


def create_stream(
    owner: User,
    *,
    title: str,
    description: str = "",
    keep_recordings: bool = True,
    latency_mode: str = LatencyMode.LOW,
    start_in_preview: bool = False,
) -> StreamWithKey:
    """Create an offline stream with a new secret key. Retries on the rare slug race.

    Raises ``StreamLimitReachedError`` when the owner already has as many streams as their
    quota allows; the owner's row is locked for the check so concurrent creates cannot both
    take the last slot.
    """
    key = keys.generate_key()
    for _ in range(3):
        try:
            with transaction.atomic():
                User.objects.select_for_update().filter(pk=owner.pk).first()
                quotas.check_can_create(owner.pk)
                stream = Stream.objects.create(
                    owner=owner,
                    title=title,
                    description=description,
                    keep_recordings=keep_recordings,
                    latency_mode=latency_mode,
                    start_in_preview=start_in_preview,
                    slug=_unique_slug(title),
                    key_hash=keys.hash_key(key),
                    key_hint=keys.key_hint(key),
                )
        except IntegrityError:
            continue
        logger.info("stream created", extra={"stream": stream.pk, "user": owner.pk})
        return StreamWithKey(stream, key)
    raise RuntimeError("could not allocate a unique slug")


def regenerate_key(stream: Stream) -> StreamWithKey:
    """Replace the stream's key; the old key stops working immediately (also for a reconnect).

    A publisher live on the stream is disconnected after commit (its key is no longer valid);
    its session then waits out the reconnect grace period, so a streamer who enters the new
    key in time continues the same broadcast. Locks the stream row, as ``start_publish`` does,
    so a publish with the old key is either refused or seen here and dropped.
    """
    key = keys.generate_key()
    with transaction.atomic():
        Stream.objects.select_for_update().filter(pk=stream.pk).first()
        stream.key_hash = keys.hash_key(key)
        stream.key_hint = keys.key_hint(key)
        stream.key_rotated_at = timezone.now()
        stream.save(update_fields=["key_hash", "key_hint", "key_rotated_at", "updated_at"])
        publishers = _live_publishers(stream.pk)
        if publishers:
            transaction.on_commit(lambda: _drop_publishers(stream.pk, publishers, "key regenerated"))
    logger.info("stream key regenerated", extra={"stream": stream.pk})
    return StreamWithKey(stream, key)


def update_stream(
    stream: Stream,
    *,
    title: str,
    description: str,
    keep_recordings: bool,
    next_broadcast_at: datetime | _Unset | None = UNSET,
    latency_mode: str | None = None,
    start_in_preview: bool | None = None,
) -> Stream:
    """Edit the stream's details. ``next_broadcast_at`` is left as it is unless given (None
    clears the announcement); so is ``latency_mode`` (it applies from the next publish: a
    session in progress keeps the chunk duration its ingest started with)."""
    stream.title = title
    stream.description = description
    stream.keep_recordings = keep_recordings
    fields = ["title", "description", "keep_recordings", "updated_at"]
    if latency_mode is not None:
        stream.latency_mode = latency_mode
        fields.append("latency_mode")
    if start_in_preview is not None:  # applies from the next broadcast (ADR 0034)
        stream.start_in_preview = start_in_preview
        fields.append("start_in_preview")
    if not isinstance(next_broadcast_at, _Unset):
        stream.next_broadcast_at = next_broadcast_at
        fields.append("next_broadcast_at")
    stream.save(update_fields=fields)
    return stream


def delete_stream(stream: Stream) -> None:
    """Delete the stream, its sessions and chat.

    After commit: a publisher live on it is disconnected, and the pipeline's cleanup task
    removes its stored HLS objects. When it had an open session, the cleanup runs once more
    after the live deadline (chunks in flight when it was deleted may still be written) and
    the session's pipeline state is released.
    """
    stream_id = stream.pk
    with transaction.atomic():
        Stream.objects.select_for_update().filter(pk=stream_id).first()
        publishers = _live_publishers(stream_id)
        open_sessions = list(
            StreamSession.objects.filter(stream_id=stream_id)
            .exclude(status=SessionStatus.ENDED)
            .values_list("pk", flat=True)
        )
        stream.delete()

        def after_commit() -> None:
            if publishers:
                _drop_publishers(stream_id, publishers, "stream deleted")
            _purge_storage(stream_id, open_sessions)

        transaction.on_commit(after_commit)
    logger.info("stream deleted", extra={"stream": stream_id})


# nginx-rtmp renames an accepted publish to its internal name only once on_publish has
# answered: a publisher accepted a moment ago may not be known by that name yet. A drop that
# finds nobody is retried after these pauses while the session is that young.
DROP_RETRY_DELAYS_S = (0.2, 0.4, 0.8)
DROP_RETRY_WINDOW_S = 5.0


@dataclass(frozen=True)
class _Publisher:
    name: str  # nginx-rtmp's internal name of the publish
    accepted_at: datetime
    session_id: int
    connection: int


def _live_publishers(stream_id: int) -> list[_Publisher]:
    """The publishers live on the stream (at most one), by nginx-rtmp's internal name."""
    from transcoding.services import internal_name

    live = StreamSession.objects.filter(stream_id=stream_id, status=SessionStatus.LIVE)
    return [
        _Publisher(internal_name(session_id, connection), updated_at, session_id, connection)
        for session_id, connection, updated_at in live.values_list("pk", "connections", "updated_at")
    ]


def _drop_publishers(stream_id: int, publishers: list[_Publisher], why: str) -> None:
    """Disconnect these publishers at the ingest (best effort: their key is refused already,
    so a publisher the ingest did not drop cannot come back once it leaves)."""
    from transcoding import rtmp_control

    for publisher in publishers:
        node = rtmp_control.node_of(publisher.session_id, publisher.connection)  # the node that holds it
        dropped = rtmp_control.drop_publisher(publisher.name, node=node)
        young = (timezone.now() - publisher.accepted_at).total_seconds() < DROP_RETRY_WINDOW_S
        for delay in DROP_RETRY_DELAYS_S if young else ():
            if dropped:
                break
            time.sleep(delay)
            dropped = rtmp_control.drop_publisher(publisher.name, node=node)
        logger.info(
            "live publisher %s (%s)",
            "disconnected" if dropped else "not found at the ingest",
            why,
            extra={"stream": stream_id, "ctx": {"name": publisher.name}},
        )


def _purge_storage(stream_id: int, open_sessions: list[int]) -> None:
    try:
        from transcoding.tasks import finalize_session, purge_stream_objects
    except ImportError:  # pipeline not installed in this deployment
        return
    purge_stream_objects.delay(stream_id)
    if open_sessions:
        later = settings.LIVE_DEADLINE_SECONDS + 5
        purge_stream_objects.apply_async((stream_id,), countdown=later)
        for session_id in open_sessions:
            # The session row is gone: finalisation only releases its pipeline state.
            finalize_session.apply_async((session_id,), countdown=later)


def go_public(stream_id: int) -> StreamSession:
    """End the private preview on air (``sessions.go_public``, ADR 0034; raises
    ``sessions.NotInPreview``), then tell the pipeline: the assembler writes the stable master
    with the next chunk it publishes (``transcoding.state.end_preview``)."""
    session = sessions.go_public(stream_id)
    try:
        from transcoding import state
    except ImportError:  # pipeline not installed in this deployment
        return session
    try:
        state.end_preview(session.pk)
    except Exception:  # public in the database; the stable master comes after the publisher's next reconnect
        logger.exception("could not tell the pipeline the preview went public", extra={"session": session.pk})
    return session
