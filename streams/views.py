"""Streamer dashboard and public pages. Thin: selectors read, services write."""

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.html import escape
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.http import require_POST

from accounts.models import User
from chat.presence import viewer_count, viewer_counts
from highlights import services as highlight_services
from livestream.auth import request_user
from simulcast.views import section_context
from streams import ingest_report, playback, quotas, selectors, services, sessions
from streams.forms import StreamForm
from streams.models import SessionStatus, Stream, StreamSession
from transcoding import shedding, thumbnails

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
        try:
            created = services.create_stream(
                _user(request),
                title=form.cleaned_data["title"],
                description=form.cleaned_data["description"],
                keep_recordings=form.cleaned_data["keep_recordings"],
                latency_mode=form.cleaned_data["latency_mode"],
                start_in_preview=bool(form.cleaned_data.get("start_in_preview")),
            )
        except quotas.StreamLimitReachedError as exc:
            form.add_error(None, str(exc))
        else:
            _reveal_once(request, created.stream.pk, created.key)
            messages.success(request, "Stream created. Copy your stream key now: it is shown only once.")
            return redirect("streams:manage", stream_id=created.stream.pk)
    streams = selectors.streams_owned_by(_user(request))
    context = {
        "form": form,
        "streams": streams,
        "rtmp_url": playback.rtmp_url(),
        "limits": quotas.limits_for(_user(request).pk),
    }
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
            next_broadcast_at=form.cleaned_data.get("next_broadcast_at"),
            latency_mode=form.cleaned_data["latency_mode"],
            start_in_preview=form.cleaned_data.get("start_in_preview"),
        )
        messages.success(request, "Saved.")
        return redirect("streams:manage", stream_id=stream.pk)
    session = selectors.open_session(stream)
    revealed_key = request.session.pop(_REVEAL.format(stream.pk), None)
    context = {
        "stream": stream,
        "form": form,
        "overload": shedding.status(session.pk) if session is not None else None,
        "revealed_key": revealed_key,
        "ingest": playback.ingest_urls(revealed_key),
        "rtmp_url": playback.rtmp_url(),
        "playback_url": selectors.player_url(stream),
        "watch_url": playback.watch_url(stream),
        "embed_url": playback.embed_url(stream),
        "highlights": highlight_services.offered(stream.pk),
        "doctor": ingest_report.for_stream(stream),
        "simulcast": section_context(stream),
    }
    return render(request, "streams/manage.html", context, status=400 if form.errors else 200)


@login_required
@require_POST
def go_public(request: HttpRequest, stream_id: int) -> HttpResponse:
    """End the private preview: the broadcast becomes public and followers are told (ADR 0034)."""
    stream = selectors.get_stream_for_owner(_user(request), stream_id)
    try:
        services.go_public(stream.pk)
    except sessions.NotInPreview as exc:
        messages.error(request, str(exc).capitalize() + ".")
        return redirect("streams:manage", stream_id=stream.pk)
    messages.success(request, "You are public: the stream is in the directory and followers were told.")
    return redirect("streams:manage", stream_id=stream.pk)


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


def _last_broadcast(stream: Stream) -> StreamSession | None:
    """The most recent finished broadcast (for the offline card), if any."""
    return stream.sessions.filter(status=SessionStatus.ENDED).order_by("-started_at").first()


def _player_config(stream: Stream, *, live: bool) -> dict[str, Any]:
    """What static/js/player.js (and qoe.js) need, rendered with json_script: mode, src (with
    ownMaster when it is the private preview's own master, ADR 0034), live, streamId,
    statusUrl, and sessionId of the broadcast on air (null when offline)."""
    session = selectors.open_session(stream) if live else None
    src = playback.live_url(stream, session)
    return {
        "mode": "live",
        "src": src,
        "ownMaster": src != playback.playback_url(stream),  # a private preview's (ADR 0034)
        "live": live,
        "streamId": stream.pk,
        "sessionId": session.pk if session else None,
        "statusUrl": reverse("streams:status", kwargs={"slug": stream.slug}),
        "dvrWindow": settings.DVR_WINDOW_SECONDS,
    }


def directory(request: HttpRequest) -> HttpResponse:
    """Live streams first (thumbnail, title, viewers), then recently live ones."""
    live = list(selectors.live_streams())
    counts = viewer_counts(s.pk for s in live)
    tiles = [{"stream": s, "viewers": counts.get(s.pk, 0), "thumbnail": thumbnails.thumbnail_url(s.pk)} for s in live]
    context = {"live": tiles, "recent": selectors.recent_streams()}
    return render(request, "streams/directory.html", context)


def watch(request: HttpRequest, slug: str) -> HttpResponse:
    """The watch page: player (live) or offline card, chat panel, replays, embed code."""
    stream = selectors.get_public_stream(slug, request.user)
    embed_url = playback.embed_url(stream)
    replays = [
        {"session": r, "url": reverse("streams:replay", args=[stream.slug, r.pk])}
        for r in selectors.replays_of(stream)[:20]
    ]
    context = {
        "stream": stream,
        "playback_url": selectors.player_url(stream),
        "player_config": _player_config(stream, live=stream.is_live),
        "viewer_count": viewer_count(stream.pk),
        "last_broadcast": _last_broadcast(stream),
        "next_broadcast": selectors.upcoming_broadcast(stream),
        "replays": replays,
        "embed_url": embed_url,
        "embed_code": _embed_code(stream, embed_url),
    }
    return render(request, "streams/watch.html", context)


def _embed_code(stream: Stream, embed_url: str) -> str:
    return (
        f'<iframe src="{escape(embed_url)}" title="{escape(stream.title)}" width="640" height="360" '
        'style="border:0" allow="autoplay; fullscreen; picture-in-picture" allowfullscreen></iframe>'
    )


def replay(request: HttpRequest, slug: str, session_id: int) -> HttpResponse:
    """One past broadcast played as VOD (seekable), if the stream kept it as a replay."""
    stream = selectors.get_public_stream(slug, request.user)
    session = selectors.replays_of(stream).filter(pk=session_id).first()
    if session is None:
        raise Http404("No such replay.")
    config = {
        "mode": "vod",
        "src": playback.replay_url(session),
        "live": False,
        "streamId": stream.pk,
        "sessionId": session.pk,
    }
    context = {"stream": stream, "session": session, "player_config": config}
    return render(request, "streams/replay.html", context)


def status(request: HttpRequest, slug: str) -> JsonResponse:
    """Live status for the watch page: read once after its socket connects (to close the gap
    between rendering the page and subscribing) and polled only when no socket is available."""
    stream = selectors.get_public_stream(slug, request.user)
    return JsonResponse(
        {"status": stream.status, "viewer_count": viewer_count(stream.pk), "src": selectors.player_url(stream)},
        headers={"Cache-Control": "no-store"},
    )


@xframe_options_exempt
def embed(request: HttpRequest, slug: str) -> HttpResponse:
    """The player alone (no site chrome), framable by other sites."""
    stream = selectors.get_public_stream(slug, request.user)
    context = {
        "stream": stream,
        "player_config": _player_config(stream, live=stream.is_live),
        "next_broadcast": selectors.upcoming_broadcast(stream),
    }
    return render(request, "streams/embed.html", context)
