"""Every write of the chat: posting, and the moderation actions.

Each function validates, writes in one transaction, records moderation in
``ModerationAction``, and announces the change to the stream's sockets with
``send_event_on_commit`` (so nothing is broadcast for a rolled-back write). Refusals raise
``ChatError`` with a stable ``code`` that sockets and the API hand to clients unchanged.

Redis keys (all with TTLs): ``chat:slow:<stream>:<user>`` (slow mode), ``chat:dup:<stream>:<user>``
(hash of the last text, duplicate suppression), and the rate-limit counter of
``livestream.ratelimit`` (scope ``chat``).
"""

import hashlib
import logging
import re
import time
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import User
from chat import selectors
from chat.models import Ban, ChatSettings, Message, ModerationAction, ModerationKind, Moderator
from livestream import ratelimit
from livestream.events import send_event_on_commit
from livestream.redis import redis_client
from streams.models import Stream

logger = logging.getLogger(__name__)

MAX_SLOW_MODE_S = 3600
MAX_TIMEOUT_S = 14 * 24 * 3600
# Not text: C0/C1 control characters other than tab and newline, and lone UTF-16 surrogates
# (JSON can carry "\ud800", no encoding can store or send it).
_NOT_TEXT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


class ChatError(Exception):
    """A refused chat action. ``code`` is stable (clients switch on it), ``message`` is for people."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def clean_text(text: object) -> str:
    """The text as stored: a string of valid text, trimmed, within the length limit. Raises
    ChatError(``invalid``/``invalid_text``/``empty``/``too_long``). Cheap (no I/O): sockets
    call it before anything else."""
    if not isinstance(text, str):
        raise ChatError("invalid", "A message needs a text string.")
    if len(text) > settings.CHAT_MAX_LENGTH * 4 + 64:  # do not scan megabytes from the API
        raise ChatError("too_long", f"Messages are at most {settings.CHAT_MAX_LENGTH} characters.")
    if _NOT_TEXT.search(text):
        raise ChatError(
            "invalid_text",
            "Messages are plain text: no control characters (other than tab and newline), no broken characters.",
        )
    cleaned = text.strip()
    if not cleaned:
        raise ChatError("empty", "A message cannot be empty.")
    if len(cleaned) > settings.CHAT_MAX_LENGTH:
        raise ChatError("too_long", f"Messages are at most {settings.CHAT_MAX_LENGTH} characters.")
    return cleaned


CHAT_LIMIT_SCOPE = "chat"


def _rate_limit() -> ratelimit.Limit:
    return ratelimit.Limit(CHAT_LIMIT_SCOPE, settings.CHAT_RATE_LIMIT, settings.CHAT_RATE_WINDOW_S)


def program_date_time() -> datetime:
    """The stream's program date-time of this moment: the ingest wall clock, which is what
    EXT-X-PROGRAM-DATE-TIME carries for the frames ingested now (docs/pipeline.md; the
    segmenter stamps chunks with ``time.time()`` of the ingest host, NTP-synced with this one).
    A message sent now is about what the streamer showed until now (ADR 0035). Milliseconds,
    like the playlists' date-times."""
    return datetime.fromtimestamp(round(time.time(), 3), UTC)


def post_message(*, stream_id: int, user: User, text: object) -> Message:
    """Store a message from ``user`` and broadcast it as ``chat.message`` after commit.

    Checks in order: text (``invalid``, ``invalid_text``, ``empty``, ``too_long``; no I/O), the
    per-user rate limit (``rate_limited``; one Redis counter, before anything touches the
    database, so every well-formed attempt counts, refused or not), stream (``not_found``),
    ban/timeout (``banned``, ``timed_out``), duplicate of the user's last text within
    CHAT_DUPLICATE_WINDOW_S (``duplicate``), slow mode for non-moderators (``slow_mode``). A
    refused message leaves no row.
    """
    cleaned = clean_text(text)
    if not ratelimit.hit(_rate_limit(), f"{stream_id}:{user.pk}"):
        raise ChatError("rate_limited", "You are sending messages too fast; wait a moment.", status=429)
    found = selectors.stream_for_poster(stream_id, user.pk)
    if found is None:
        raise ChatError("not_found", "No such stream.", status=404)
    stream, poster = found
    if poster.banned:
        if poster.banned_until is None:
            raise ChatError("banned", "You are banned from this chat.", status=403)
        raise ChatError("timed_out", f"You are timed out until {poster.banned_until:%H:%M:%S} UTC.", status=403)
    moderators = {user.pk} if poster.is_moderator else set()
    privileged = user.is_staff or stream.owner_id == user.pk or poster.is_moderator
    r = redis_client()
    dup_key = f"chat:dup:{stream.pk}:{user.pk}"
    digest = hashlib.sha256(cleaned.casefold().encode()).hexdigest()
    if r.get(dup_key) == digest.encode():
        raise ChatError("duplicate", "You just sent that message.", status=429)
    slow = poster.slow_mode_s
    if slow and not privileged and not r.set(f"chat:slow:{stream.pk}:{user.pk}", 1, nx=True, ex=slow):
        wait = max(1, int(r.ttl(f"chat:slow:{stream.pk}:{user.pk}")))
        raise ChatError("slow_mode", f"Slow mode is on: wait {wait} s before your next message.", status=429)
    message = Message.objects.create(stream=stream, user=user, text=cleaned, pdt=program_date_time())
    r.set(dup_key, digest, ex=settings.CHAT_DUPLICATE_WINDOW_S)
    send_event_on_commit(stream.pk, "chat.message", selectors.message_payload(message, stream, moderators))
    return message


def _require_moderator(stream: Stream, actor: User) -> None:
    if not selectors.can_moderate(stream, actor):
        raise ChatError("forbidden", "Only the streamer and their moderators can do that.", status=403)


def _log(
    stream: Stream,
    actor: User,
    kind: ModerationKind,
    *,
    target: User | None = None,
    message: Message | None = None,
    **details: object,
) -> ModerationAction:
    logger.info(
        "chat moderation",
        extra={
            "stream": stream.pk,
            "user": actor.pk,
            "ctx": {"kind": str(kind), "target": target.pk if target else ""},
        },
    )
    return ModerationAction.objects.create(
        stream=stream, actor=actor, kind=kind, target_user=target, message=message, details=details
    )


def delete_message(*, actor: User, stream: Stream, message_id: int) -> Message:
    """Hide one message for everyone (``chat.delete`` with its id). Deleting a deleted message
    changes nothing and logs nothing. ChatError ``not_found`` for another stream's message."""
    _require_moderator(stream, actor)
    with transaction.atomic():
        message = Message.objects.select_for_update().filter(stream=stream, pk=message_id).first()
        if message is None:
            raise ChatError("not_found", "No such message in this chat.", status=404)
        if message.deleted_at is not None:
            return message
        message.deleted_at = timezone.now()
        message.deleted_by = actor
        message.save(update_fields=["deleted_at", "deleted_by"])
        _log(stream, actor, ModerationKind.DELETE, target=message.user, message=message, text=message.text)
        send_event_on_commit(stream.pk, "chat.delete", {"id": message.pk})
    return message


def clear_chat(*, actor: User, stream: Stream) -> int:
    """Hide every message of the stream (``chat.clear``); returns how many were hidden."""
    _require_moderator(stream, actor)
    with transaction.atomic():
        count = Message.objects.filter(stream=stream, deleted_at__isnull=True).update(
            deleted_at=timezone.now(), deleted_by=actor
        )
        _log(stream, actor, ModerationKind.CLEAR, count=count)
        send_event_on_commit(stream.pk, "chat.clear", {"by": actor.username})
    return count


def ban_user(*, actor: User, stream: Stream, target: User, duration_s: int | None = None, reason: str = "") -> Ban:
    """Ban ``target`` (``duration_s`` None) or time them out for ``duration_s`` seconds.

    Replaces an earlier ban/timeout of the same user. The streamer and staff cannot be banned;
    moderators can only be banned by the streamer or staff. Broadcasts ``chat.ban``.
    """
    _require_moderator(stream, actor)
    if target.pk == stream.owner_id or target.is_staff or target.pk == actor.pk:
        raise ChatError("forbidden", "That user cannot be banned from this chat.", status=403)
    if selectors.is_moderator(stream, target) and not selectors.can_manage_moderators(stream, actor):
        raise ChatError("forbidden", "Only the streamer can ban a moderator.", status=403)
    if duration_s is not None and not 1 <= duration_s <= MAX_TIMEOUT_S:
        raise ChatError("invalid", f"A timeout lasts 1 to {MAX_TIMEOUT_S} seconds.")
    expires_at = timezone.now() + timedelta(seconds=duration_s) if duration_s else None
    with transaction.atomic():
        ban, _ = Ban.objects.update_or_create(
            stream=stream,
            user=target,
            defaults={
                "expires_at": expires_at,
                "reason": reason[:200],
                "created_by": actor,
                "created_at": timezone.now(),
            },
        )
        kind = ModerationKind.BAN if expires_at is None else ModerationKind.TIMEOUT
        _log(stream, actor, kind, target=target, duration_s=duration_s, reason=reason[:200])
        send_event_on_commit(
            stream.pk,
            "chat.ban",
            {
                "user": target.username,
                "user_id": target.pk,
                "until": expires_at.isoformat() if expires_at else None,
            },
        )
    return ban


def unban_user(*, actor: User, stream: Stream, target: User) -> bool:
    """Lift a ban or timeout (``chat.unban``); False (and no log) when there was none."""
    _require_moderator(stream, actor)
    with transaction.atomic():
        deleted, _ = Ban.objects.filter(stream=stream, user=target).delete()
        if not deleted:
            return False
        _log(stream, actor, ModerationKind.UNBAN, target=target)
        send_event_on_commit(stream.pk, "chat.unban", {"user": target.username, "user_id": target.pk})
    return True


def set_slow_mode(*, actor: User, stream: Stream, seconds: int) -> ChatSettings:
    """Slow mode on (``seconds`` > 0) or off (0); broadcasts ``chat.settings``."""
    _require_moderator(stream, actor)
    if not isinstance(seconds, int) or not 0 <= seconds <= MAX_SLOW_MODE_S:
        raise ChatError("invalid", f"Slow mode is 0 (off) to {MAX_SLOW_MODE_S} seconds.")
    with transaction.atomic():
        row, _ = ChatSettings.objects.select_for_update().get_or_create(stream=stream)
        if row.slow_mode_s != seconds:
            previous = row.slow_mode_s
            row.slow_mode_s = seconds
            row.save(update_fields=["slow_mode_s", "updated_at"])
            _log(stream, actor, ModerationKind.SLOW_MODE, seconds=seconds, previous=previous)
            send_event_on_commit(stream.pk, "chat.settings", {"slow_mode_s": seconds})
    return row


def appoint_moderator(*, actor: User, stream: Stream, target: User) -> Moderator:
    """Make ``target`` a moderator (owner or staff only); idempotent. Broadcasts ``chat.moderator``."""
    if not selectors.can_manage_moderators(stream, actor):
        raise ChatError("forbidden", "Only the streamer appoints moderators.", status=403)
    with transaction.atomic():
        moderator, created = Moderator.objects.get_or_create(
            stream=stream, user=target, defaults={"appointed_by": actor}
        )
        if created:
            _log(stream, actor, ModerationKind.ADD_MODERATOR, target=target)
            send_event_on_commit(
                stream.pk, "chat.moderator", {"user": target.username, "user_id": target.pk, "moderator": True}
            )
    return moderator


def remove_moderator(*, actor: User, stream: Stream, target: User) -> bool:
    """Take moderation away from ``target``; False when they were not a moderator."""
    if not selectors.can_manage_moderators(stream, actor):
        raise ChatError("forbidden", "Only the streamer removes moderators.", status=403)
    with transaction.atomic():
        deleted, _ = Moderator.objects.filter(stream=stream, user=target).delete()
        if not deleted:
            return False
        _log(stream, actor, ModerationKind.REMOVE_MODERATOR, target=target)
        send_event_on_commit(
            stream.pk, "chat.moderator", {"user": target.username, "user_id": target.pk, "moderator": False}
        )
    return True
