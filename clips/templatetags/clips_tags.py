"""Clip widgets for the pages of other apps (watch, replay, dashboard), so those views need no
change: ``{% load clips_tags %}{% clip_live_form stream %}``, ``{% clip_range_form stream session %}``,
``{% stream_clips stream %}``."""

from typing import Any

from django import template
from django.conf import settings

from clips import selectors
from streams.models import Stream, StreamSession

register = template.Library()

DEFAULT_SECONDS = 30


def _seconds() -> dict[str, int]:
    maximum = int(settings.CLIP_MAX_SECONDS)
    default = min(DEFAULT_SECONDS, maximum)
    return {"max_seconds": maximum, "default_seconds": default, "half": max(1, default // 2)}


@register.inclusion_tag("clips/_live_form.html", takes_context=True)
def clip_live_form(context: dict[str, Any], stream: Stream) -> dict[str, Any]:
    """The Clip button (the last 30 s by default) for signed-in users while the stream is live."""
    request = context.get("request")
    user = getattr(request, "user", None)
    show = bool(user is not None and user.is_authenticated and stream.is_live)
    return {"stream": stream, "show": show, "csrf_token": context.get("csrf_token"), **_seconds()}


@register.inclusion_tag("clips/_range_form.html", takes_context=True)
def clip_range_form(context: dict[str, Any], stream: Stream, session: StreamSession) -> dict[str, Any]:
    request = context.get("request")
    user = getattr(request, "user", None)
    show = bool(user is not None and user.is_authenticated)
    return {
        "stream": stream,
        "session": session,
        "show": show,
        "request": request,
        "csrf_token": context.get("csrf_token"),
        **_seconds(),
    }


@register.inclusion_tag("clips/_manage_list.html", takes_context=True)
def stream_clips(context: dict[str, Any], stream: Stream) -> dict[str, Any]:
    """The dashboard's list of the stream's clips, each with a delete button."""
    return {
        "clips": list(selectors.clips_of_stream(stream)[:100]),
        "request": context.get("request"),
        "csrf_token": context.get("csrf_token"),
    }
