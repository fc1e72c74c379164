"""Reads of chat state and the access checks every chat entry point uses.

``can_moderate`` is the one rule for who moderates a stream's chat: its owner, the
moderators the owner appointed, and staff. Only the owner and staff manage moderators.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.db.models import Exists, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from accounts.models import User
from chat.models import Ban, ChatSettings, Message, ModerationAction, Moderator
from streams.models import Stream
from streams.selectors import can_see

Viewer = User | AnonymousUser


def is_moderator(stream: Stream, user: Viewer) -> bool:
    if not user.is_authenticated or user.pk is None:
        return False
    return Moderator.objects.filter(stream=stream, user_id=user.pk).exists()


def can_moderate(stream: Stream, user: Viewer) -> bool:
    if not user.is_authenticated:
        return False
    if user.is_staff or stream.owner_id == user.pk:
        return True
    return is_moderator(stream, user)


def can_manage_moderators(stream: Stream, user: Viewer) -> bool:
    return bool(user.is_authenticated) and (bool(user.is_staff) or stream.owner_id == user.pk)


def slow_mode_s(stream_id: int) -> int:
    row = ChatSettings.objects.filter(stream_id=stream_id).values_list("slow_mode_s", flat=True).first()
    return int(row or 0)


def active_ban(stream_id: int, user_id: int) -> Ban | None:
    ban = Ban.objects.filter(stream_id=stream_id, user_id=user_id).first()
    if ban is None or not ban.is_active:
        return None
    return ban


def active_bans(stream: Stream) -> QuerySet[Ban]:
    now = timezone.now()
    return (
        Ban.objects.filter(stream=stream)
        .exclude(expires_at__lte=now)
        .select_related("user", "created_by")
        .order_by("-created_at")
    )


def moderators_of(stream: Stream) -> QuerySet[Moderator]:
    return Moderator.objects.filter(stream=stream).select_related("user").order_by("created_at")


def moderator_ids(stream: Stream) -> set[int]:
    return set(Moderator.objects.filter(stream=stream).values_list("user_id", flat=True))


def visible_messages(stream: Stream) -> QuerySet[Message]:
    """Messages nobody deleted, newest first (the API paginates this with a cursor)."""
    return Message.objects.filter(stream=stream, deleted_at__isnull=True).select_related("user").order_by("-id")


def moderation_log(stream: Stream) -> QuerySet[ModerationAction]:
    return ModerationAction.objects.filter(stream=stream).select_related("actor", "target_user")


def badges_for(user: User, stream: Stream, moderators: set[int]) -> list[str]:
    """Badges shown next to a name: ``streamer``, ``moderator``, ``staff``."""
    badges = []
    if stream.owner_id == user.pk:
        badges.append("streamer")
    if user.pk in moderators:
        badges.append("moderator")
    if user.is_staff:
        badges.append("staff")
    return badges


def message_payload(message: Message, stream: Stream, moderators: set[int]) -> dict[str, Any]:
    """The wire form of a message (the contract's ``chat.message`` object, without ``type``)."""
    return {
        "id": message.pk,
        "user": message.user.username,
        "user_id": message.user_id,
        "display_name": message.user.public_name,
        "badges": badges_for(message.user, stream, moderators),
        "text": message.text,
        "sent_at": message.created_at.isoformat(),
        # The stream's program date-time when it was sent (ADR 0035): players show it when
        # their playingDate reaches it.
        "pdt": message.pdt.isoformat(timespec="milliseconds"),
    }


def history(stream: Stream, limit: int) -> list[dict[str, Any]]:
    """The last ``limit`` visible messages, oldest first, as ``chat.message`` frames."""
    moderators = moderator_ids(stream)
    rows = list(visible_messages(stream)[:limit])
    rows.reverse()
    return [{"type": "chat.message", **message_payload(m, stream, moderators)} for m in rows]


def join_state(stream_id: int, user: Viewer, limit: int) -> dict[str, Any] | None:
    """Everything a socket needs when it joins, as the ``chat.history`` frame; None if the
    stream does not exist. One call, so the consumer makes a single trip to the database."""
    stream = Stream.objects.select_related("owner").filter(pk=stream_id).first()
    if stream is None or not can_see(user, stream):  # someone else's private preview (ADR 0034)
        return None
    me: dict[str, Any] = {"user": None, "can_moderate": False, "banned": False, "banned_until": None}
    if user.is_authenticated:
        ban = active_ban(stream_id, user.pk)
        me = {
            "user": user.username,
            "can_moderate": can_moderate(stream, user),
            "can_manage_moderators": can_manage_moderators(stream, user),
            "banned": ban is not None,
            "banned_until": ban.expires_at.isoformat() if ban is not None and ban.expires_at else None,
        }
    return {
        "type": "chat.history",
        "messages": history(stream, limit),
        "slow_mode_s": slow_mode_s(stream_id),
        "max_length": settings.CHAT_MAX_LENGTH,
        "me": me,
    }


def get_user_by_username(username: object) -> User:
    """The active user called ``username``; Http404 otherwise (for moderation targets)."""
    from django.http import Http404

    if not isinstance(username, str) or not username:
        raise Http404("No such user.")
    user = User.objects.filter(username=username, is_active=True).first()
    if user is None:
        raise Http404("No such user.")
    return user


@dataclass(frozen=True)
class PosterState:
    """What ``post_message`` needs to know about a user in a stream's chat."""

    is_moderator: bool
    banned: bool
    banned_until: datetime | None
    slow_mode_s: int


def stream_for_poster(stream_id: int, user_id: int) -> tuple[Stream, PosterState] | None:
    """The stream (with owner) and the poster's moderator/ban state and the slow mode, in ONE
    query: posting is on the chat's latency path. None if the stream does not exist."""
    now = timezone.now()
    bans = Ban.objects.filter(stream=OuterRef("pk"), user_id=user_id).filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=now)
    )
    stream = (
        Stream.objects.select_related("owner")
        .annotate(
            poster_is_moderator=Exists(Moderator.objects.filter(stream=OuterRef("pk"), user_id=user_id)),
            poster_banned=Exists(bans),
            poster_banned_until=Subquery(bans.values("expires_at")[:1]),
            chat_slow_mode_s=Subquery(ChatSettings.objects.filter(stream=OuterRef("pk")).values("slow_mode_s")[:1]),
        )
        .filter(pk=stream_id)
        .first()
    )
    if stream is None:
        return None
    state = PosterState(
        is_moderator=bool(stream.poster_is_moderator),
        banned=bool(stream.poster_banned),
        banned_until=stream.poster_banned_until,
        slow_mode_s=int(stream.chat_slow_mode_s or 0),
    )
    return stream, state
