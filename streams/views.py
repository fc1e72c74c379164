"""Streamer dashboard and public pages. Thin: selectors read, services write."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.http import require_POST

from accounts.models import User
from livestream.auth import request_user
from streams import playback, selectors, services
from streams.forms import StreamForm

_REVEAL = "reveal-key:{}"


def _user(request: HttpRequest) -> User:
    return request_user(request)


def _reveal_once(request: HttpRequest, stream_id: int, key: str) -> None:
    """Keep the plaintext key in the session for exactly one page view (post/redirect/get)."""
    request.session[_REVEAL.format(stream_id)] = key


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    form = StreamForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        created = services.create_stream(
            _user(request),
            title=form.cleaned_data["title"],
            description=form.cleaned_data["description"],
            keep_recordings=form.cleaned_data["keep_recordings"],
        )
        _reveal_once(request, created.stream.pk, created.key)
        messages.success(request, "Stream created. Copy your stream key now: it is shown only once.")
        return redirect("streams:manage", stream_id=created.stream.pk)
    streams = selectors.streams_owned_by(_user(request))
    context = {"form": form, "streams": streams, "rtmp_url": playback.rtmp_url()}
    return render(request, "streams/dashboard.html", context, status=400 if form.errors else 200)


@login_required
def manage(request: HttpRequest, stream_id: int) -> HttpResponse:
    stream = selectors.get_stream_for_owner(_user(request), stream_id)
    form = StreamForm(request.POST or None, instance=stream)
    if request.method == "POST" and form.is_valid():
        services.update_stream(
            stream,
            title=form.cleaned_data["title"],
            description=form.cleaned_data["description"],
            keep_recordings=form.cleaned_data["keep_recordings"],
        )
        messages.success(request, "Saved.")
        return redirect("streams:manage", stream_id=stream.pk)
    context = {
        "stream": stream,
        "form": form,
        "revealed_key": request.session.pop(_REVEAL.format(stream.pk), None),
        "rtmp_url": playback.rtmp_url(),
        "playback_url": playback.playback_url(stream),
        "watch_url": playback.watch_url(stream),
        "embed_url": playback.embed_url(stream),
    }
    return render(request, "streams/manage.html", context, status=400 if form.errors else 200)


@login_required
@require_POST
def regenerate_key(request: HttpRequest, stream_id: int) -> HttpResponse:
    stream = selectors.get_stream_for_owner(_user(request), stream_id)
    rotated = services.regenerate_key(stream)
    _reveal_once(request, stream.pk, rotated.key)
    messages.success(request, "New key generated. The old key no longer works.")
    return redirect("streams:manage", stream_id=stream.pk)


@login_required
def delete(request: HttpRequest, stream_id: int) -> HttpResponse:
    stream = selectors.get_stream_for_owner(_user(request), stream_id)
    if request.method == "POST":
        services.delete_stream(stream)
        messages.success(request, f"Deleted “{stream.title}”.")
        return redirect("streams:dashboard")
    return render(request, "streams/confirm_delete.html", {"stream": stream})


def directory(request: HttpRequest) -> HttpResponse:
    context = {"live": selectors.live_streams(), "recent": selectors.recent_streams()}
    return render(request, "streams/directory.html", context)


def watch(request: HttpRequest, slug: str) -> HttpResponse:
    stream = selectors.get_public_stream(slug)
    context = {
        "stream": stream,
        "playback_url": playback.playback_url(stream),
        "replays": selectors.replays_of(stream)[:20],
        "embed_url": playback.embed_url(stream),
    }
    return render(request, "streams/watch.html", context)


@xframe_options_exempt
def embed(request: HttpRequest, slug: str) -> HttpResponse:
    stream = selectors.get_public_stream(slug)
    return render(request, "streams/embed.html", {"stream": stream, "playback_url": playback.playback_url(stream)})
