"""Reads of streams and access checks. Views never query models directly."""

from datetime import datetime

from django.contrib.auth.models import AnonymousUser
from django.db.models import Q, QuerySet
from django.http import Http404
from django.utils import timezone

from accounts.models import User
from streams import playback
from streams.models import SessionStatus, Stream, StreamSession, StreamStatus


def streams_owned_by(user: User) -> QuerySet[Stream]:
    return Stream.objects.filter(owner=user).select_related("owner")


def get_stream_for_owner(user: User, stream_id: int) -> Stream:
    """The stream if ``user`` owns it (or is staff); 404 otherwise, so other users' streams do
    not even show that they exist."""
    qs = Stream.objects.select_related("owner")
    if not user.is_staff:
        qs = qs.filter(owner=user)
    try:
        return qs.get(pk=stream_id)
    except Stream.DoesNotExist:
        raise Http404("No such stream.") from None


def can_see(user: User | AnonymousUser | None, stream: Stream) -> bool:
    """A stream in private preview (ADR 0034) exists for its owner and staff only."""
    if not stream.in_preview:
        return True
    return user is not None and user.is_authenticated and (user.pk == stream.owner_id or bool(user.is_staff))


def visible_streams(user: User | AnonymousUser | None) -> QuerySet[Stream]:
    """Every stream ``user`` may see: all but other people's private previews."""
    qs = Stream.objects.all()
    if user is not None and user.is_authenticated and user.is_staff:
        return qs
    hidden = Q(in_preview=True)
    if user is not None and user.is_authenticated:
        hidden &= ~Q(owner_id=user.pk)
    return qs.exclude(hidden)


def get_public_stream(slug: str, user: User | AnonymousUser | None = None) -> Stream:
    """The stream of ``slug``; 404 when there is none or it is someone else's private preview."""
    try:
        stream = Stream.objects.select_related("owner").get(slug=slug)
    except Stream.DoesNotExist:
        raise Http404("No such stream.") from None
    if not can_see(user, stream):
        raise Http404("No such stream.")
    return stream


def live_streams() -> QuerySet[Stream]:
    """The directory's live streams: private previews are never listed (not even to their owner)."""
    return (
        Stream.objects.filter(status=StreamStatus.LIVE, in_preview=False)
        .select_related("owner")
        .order_by("-last_live_at")
    )


def recent_streams(limit: int = 24) -> QuerySet[Stream]:
    return (
        Stream.objects.filter(status=StreamStatus.OFFLINE, last_live_at__isnull=False)
        .select_related("owner")
        .order_by("-last_live_at")[:limit]
    )


def replays_of(stream: Stream) -> QuerySet[StreamSession]:
    return stream.sessions.filter(status=SessionStatus.ENDED, is_replay=True).order_by("-started_at")


def open_session(stream: Stream) -> StreamSession | None:
    return stream.sessions.exclude(status=SessionStatus.ENDED).first()


def player_url(stream: Stream) -> str:
    """The URL a player of ``stream`` plays (``playback.live_url``): the stable master, or the
    private preview's own master (ADR 0034). Only a stream in preview costs a query, and only
    those who may see it (``can_see``) get such a stream from the views and the API."""
    return playback.live_url(stream, open_session(stream) if stream.in_preview else None)


def get_public_stream_by_id(stream_id: int, user: User | AnonymousUser | None = None) -> Stream:
    try:
        stream = Stream.objects.select_related("owner").get(pk=stream_id)
    except Stream.DoesNotExist:
        raise Http404("No such stream.") from None
    if not can_see(user, stream):
        raise Http404("No such stream.")
    return stream


def upcoming_broadcast(stream: Stream) -> datetime | None:
    """The announced next broadcast, while it is still ahead."""
    when = stream.next_broadcast_at
    return when if when is not None and when > timezone.now() else None
