"""Per-user quotas: how many streams a user may own and how many may be live at once.

Site-wide limits come from ``MAX_STREAMS_PER_USER`` and ``MAX_LIVE_PER_USER`` (0 = no limit);
an operator may override either for one user in the admin (``QuotaOverride``). The checks
run inside the caller's transaction with the owner's row locked, so two concurrent creates
or publishes of one user cannot both pass the last free slot (``services.create_stream``,
``sessions.start_publish``). Refusal texts are shown to the streamer as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from streams.models import QuotaOverride, Stream, StreamStatus

UNLIMITED = 0


@dataclass(frozen=True)
class Limits:
    """A user's limits; ``UNLIMITED`` (0) means none."""

    max_streams: int
    max_live: int


class StreamLimitReachedError(Exception):
    """The owner already has as many streams as their quota allows."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(stream_limit_message(limit))


def limits_for(user_id: int) -> Limits:
    override = QuotaOverride.objects.filter(user_id=user_id).only("max_streams", "max_live").first()
    max_streams = settings.MAX_STREAMS_PER_USER
    max_live = settings.MAX_LIVE_PER_USER
    if override is not None:
        max_streams = max_streams if override.max_streams is None else override.max_streams
        max_live = max_live if override.max_live is None else override.max_live
    return Limits(max_streams=max_streams, max_live=max_live)


def stream_limit_message(limit: int) -> str:
    return (
        f"You can have at most {limit} stream{'s' if limit != 1 else ''}. "
        "Delete one you no longer use to create another, or ask an operator for a higher limit."
    )


def check_can_create(owner_id: int) -> None:
    """Raise ``StreamLimitReachedError`` when the owner may not create another stream. Call
    with the owner's row locked."""
    limit = limits_for(owner_id).max_streams
    if limit != UNLIMITED and Stream.objects.filter(owner_id=owner_id).count() >= limit:
        raise StreamLimitReachedError(limit)


def live_refusal(stream: Stream) -> str | None:
    """Why ``stream`` may not go live now because of its owner's concurrent-live quota, or
    None. Call with the owner's row locked."""
    limit = limits_for(stream.owner_id).max_live
    if limit == UNLIMITED:
        return None
    live = Stream.objects.filter(owner_id=stream.owner_id, status=StreamStatus.LIVE).exclude(pk=stream.pk).count()
    if live < limit:
        return None
    return (
        f"Your account may have {limit} stream{'s' if limit != 1 else ''} live at once "
        f"and {live} {'is' if live == 1 else 'are'} live now. End another broadcast first, "
        "or ask an operator for a higher limit."
    )
