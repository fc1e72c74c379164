"""Celery tasks of highlight suggestions (default queue, never the transcode queue).

- ``score_sessions()`` (beat, every ``HIGHLIGHTS_INTERVAL_SECONDS``): scores every live or
  reconnecting session with recorded segments, and gives each session that ended within
  ``HIGHLIGHTS_FINAL_WITHIN_S`` its final scoring once.
- ``score_session(session_id, final)``: one session.
"""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from highlights import keys, services
from streams.models import SessionStatus, StreamSession


@shared_task(ignore_result=True)
def score_session(session_id: int, final: bool = False) -> int:  # noqa: FBT001, FBT002 - Celery arguments
    created = services.score_session(session_id, final=final)
    if created is None:
        return 0
    if final:
        keys.mark_final(session_id)
    return len(created)


@shared_task(ignore_result=True)
def score_sessions() -> dict[str, int]:
    counts = {"live": 0, "final": 0}
    open_states = [SessionStatus.LIVE, SessionStatus.RECONNECTING, SessionStatus.ENDING]
    for session_id in StreamSession.objects.filter(status__in=open_states).values_list("pk", flat=True):
        score_session.delay(session_id)
        counts["live"] += 1
    since = timezone.now() - timedelta(seconds=settings.HIGHLIGHTS_FINAL_WITHIN_S)
    ended = StreamSession.objects.filter(status=SessionStatus.ENDED, ended_at__gte=since)
    for session_id in ended.values_list("pk", flat=True):
        if not keys.is_final(session_id):
            score_session.delay(session_id, final=True)
            counts["final"] += 1
    return counts
