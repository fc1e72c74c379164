"""Analytics pages: a stream's history and sessions, one session's report, platform totals.

Thin: access checks and reads go through ``analytics.selectors``. Owner (or staff) only;
another user gets 404. Without MongoDB the pages render and say plainly that analytics are
off (the rest of the site is unaffected).
"""

from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from analytics import selectors
from analytics.services import AnalyticsOffError
from livestream.auth import request_user

DAY_CHOICES = (7, 30, 90, 365)


def _days(request: HttpRequest) -> int:
    try:
        days = int(request.GET.get("days", 30))
    except ValueError:
        return 30
    return days if days in DAY_CHOICES else 30


def _off(request: HttpRequest, context: dict[str, Any]) -> HttpResponse:
    return render(request, "analytics/off.html", context)


@login_required
def stream_page(request: HttpRequest, stream_id: int) -> HttpResponse:
    stream = selectors.get_stream(request_user(request), stream_id)
    days = _days(request)
    context: dict[str, Any] = {"stream": stream, "days": days, "day_choices": DAY_CHOICES}
    try:
        history = selectors.stream_history(stream, days=days)
    except AnalyticsOffError:
        return _off(request, context)
    context.update(
        history=history,
        totals={
            "sessions": sum(row["sessions"] for row in history),
            "watch_hours": round(sum(row["watch_time_s"] for row in history) / 3600, 2),
            "broadcast_hours": round(sum(row["broadcast_s"] for row in history) / 3600, 2),
            "peak_viewers": max((row["peak_viewers"] for row in history), default=0),
            "chat_messages": sum(row["chat_messages"] for row in history),
        },
        sessions=selectors.sessions_of(stream),
        live_url=reverse("api:stream-analytics-live", args=[stream.pk]),
        lag_warn_s=selectors.lag_warn_s(),
    )
    return render(request, "analytics/stream.html", context)


@login_required
def session_page(request: HttpRequest, stream_id: int, session_id: int) -> HttpResponse:
    stream = selectors.get_stream(request_user(request), stream_id)
    session = selectors.get_session(stream, session_id)
    context: dict[str, Any] = {"stream": stream, "session": session}
    try:
        report = selectors.session_report(session, bucket_s=60)
    except AnalyticsOffError:
        return _off(request, context)
    context.update(report=report, lag_warn_s=selectors.lag_warn_s())
    return render(request, "analytics/session.html", context)


@login_required
def platform_page(request: HttpRequest) -> HttpResponse:
    if not request_user(request).is_staff:
        raise PermissionDenied
    days = _days(request)
    context: dict[str, Any] = {"days": days, "day_choices": DAY_CHOICES}
    try:
        context["totals"] = selectors.platform_totals(days=days)
    except AnalyticsOffError:
        return _off(request, context)
    return render(request, "analytics/platform.html", context)
