"""Reads of restream targets, owner-only (others get 404: the stream's targets are private)."""

from django.db.models import QuerySet
from django.http import Http404

from accounts.models import User
from simulcast.models import Target
from streams.models import Stream
from streams.selectors import get_stream_for_owner


def stream_for_owner(user: User, stream_id: int) -> Stream:
    return get_stream_for_owner(user, stream_id)


def targets_of(stream: Stream) -> QuerySet[Target]:
    return Target.objects.filter(stream=stream).order_by("created_at", "pk")


def get_target(stream: Stream, target_id: int) -> Target:
    try:
        return targets_of(stream).get(pk=target_id)
    except Target.DoesNotExist:
        raise Http404("No such restream target.") from None
