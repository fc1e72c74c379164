"""Clip pages and the forms of the watch, replay and dashboard pages. Thin: services decide."""

from datetime import UTC, datetime

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from clips import selectors, services, sources
from clips.models import ClipStatus
from livestream.auth import request_user
from streams import selectors as stream_selectors


def page(request: HttpRequest, slug: str) -> HttpResponse:
    """The share page: the clip's player (MP4 through the edge), who clipped it, its length."""
    clip = selectors.get_clip(slug)
    user = request.user
    context = {
        "clip": clip,
        "video_url": services.video_url(clip) if clip.status == ClipStatus.READY else "",
        "share_url": services.page_url(clip),
        "may_delete": user.is_authenticated and services.may_delete(user, clip),
    }
    return render(request, "clips/clip.html", context)


def _number(request: HttpRequest, name: str) -> float | None:
    try:
        return float(request.POST.get(name, ""))
    except ValueError:
        return None


def _back(request: HttpRequest, fallback: str) -> HttpResponse:
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()}, require_https=request.is_secure()):
        return redirect(target)
    return redirect(fallback)


@login_required
@require_POST
def create_live(request: HttpRequest, slug: str) -> HttpResponse:
    """The watch page's Clip button: the last N seconds of the live broadcast."""
    stream = stream_selectors.get_public_stream(slug, request.user)
    seconds = _number(request, "seconds")
    try:
        clip = services.create_clip(
            requested_by=request_user(request),
            stream=stream,
            title=request.POST.get("title", ""),
            last_seconds=int(seconds) if seconds is not None else -1,
        )
    except services.ClipError as exc:
        messages.error(request, str(exc))
        return redirect(stream.get_absolute_url())
    return redirect(clip.get_absolute_url())


@login_required
@require_POST
def create_range(request: HttpRequest, slug: str, session_id: int) -> HttpResponse:
    """The replay page's form: a range given in seconds from the start of the replay."""
    stream = stream_selectors.get_public_stream(slug, request.user)
    session = stream.sessions.filter(pk=session_id).first()
    if session is None:
        raise Http404("No such broadcast.")
    back = request.POST.get("next") or stream.get_absolute_url()
    found = sources.segments(session)
    start_s, end_s = _number(request, "start"), _number(request, "end")
    if not found or start_s is None or end_s is None:
        messages.error(request, "Give the start and end of the clip in seconds.")
        return _back(request, back)
    origin = found[0].wall
    try:
        clip = services.create_clip(
            requested_by=request_user(request),
            stream=stream,
            title=request.POST.get("title", ""),
            session=session,
            start=datetime.fromtimestamp(origin + start_s, UTC),
            end=datetime.fromtimestamp(origin + end_s, UTC),
            trim=request.POST.get("trim") == "on",
        )
    except services.ClipError as exc:
        messages.error(request, str(exc))
        return _back(request, back)
    return redirect(clip.get_absolute_url())


@login_required
@require_POST
def delete(request: HttpRequest, slug: str) -> HttpResponse:
    clip = selectors.get_clip(slug)
    try:
        services.delete_clip(clip, by=request_user(request))
    except services.ClipPermissionError as exc:
        return HttpResponse(str(exc), status=403, content_type="text/plain")
    messages.success(request, f"Deleted the clip “{clip.title}”.")
    return _back(request, clip.stream.get_absolute_url())
