"""Reads of clips. Every clip of a stream is public, as the stream is (the clip page is for
sharing); pending and failed clips are listed with their status."""

from django.db.models import QuerySet
from django.http import Http404

from clips.models import Clip
from streams.models import Stream


def visible_clips() -> QuerySet[Clip]:
    return Clip.objects.select_related("stream", "owner", "session")


def clips_of_stream(stream: Stream) -> QuerySet[Clip]:
    return visible_clips().filter(stream=stream).order_by("-created_at")


def get_clip(slug: str) -> Clip:
    try:
        return visible_clips().get(slug=slug)
    except Clip.DoesNotExist:
        raise Http404("No such clip.") from None
