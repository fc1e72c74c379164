"""Periodic tasks: retention enforcement and viewer sampling (task logic run in-process with
Celery's apply(); the beat schedule entries are checked too)."""

import time
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings as django_settings

from accounts.models import User
from analytics import services, tasks
from analytics.documents import ChatStats, IngestSample, PlaybackEvent, SessionMetadata, ViewerSample
from livestream.redis import redis_client
from streams.models import SessionStatus
from tests.analytics.helpers import stream_with_session

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_beat_schedule_runs_both_tasks() -> None:
    scheduled = {entry["task"] for entry in django_settings.CELERY_BEAT_SCHEDULE.values()}
    assert {"analytics.tasks.enforce_retention", "analytics.tasks.sample_viewers"} <= scheduled


def test_retention_deletes_only_what_is_older_than_the_settings(settings) -> None:
    settings.ANALYTICS_SAMPLE_RETENTION_DAYS = 10
    settings.ANALYTICS_EVENT_RETENTION_DAYS = 3
    settings.ANALYTICS_SESSION_RETENTION_DAYS = 100
    for days in (1, 2, 4, 9, 11, 30, 120):
        at = NOW - timedelta(days=days, seconds=1)
        IngestSample(stream_id=1, session_id=days, at=at).save()
        ViewerSample(stream_id=1, session_id=days, at=at).save()
        ChatStats(stream_id=1, session_id=days, at=at).save()
        PlaybackEvent(stream_id=1, session_id=days, kind="heartbeat", at=at, value=1).save()
        SessionMetadata(stream_id=1, session_id=days, started_at=at).save()

    deleted = services.enforce_retention(now=NOW)

    assert deleted == {
        "ingest_samples": 3,  # 11, 30, 120 days
        "viewer_samples": 3,
        "chat_stats": 3,
        "playback_events": 5,  # 4, 9, 11, 30, 120 days
        "session_metadata": 1,  # 120 days
    }
    assert sorted(s.session_id for s in IngestSample.objects) == [1, 2, 4, 9]
    assert sorted(e.session_id for e in PlaybackEvent.objects) == [1, 2]
    assert sorted(m.session_id for m in SessionMetadata.objects) == [1, 2, 4, 9, 11, 30]
    assert set(services.enforce_retention(now=NOW).values()) == {0}  # idempotent


def test_retention_task_runs_and_keeps_sessions_when_set_to_zero(settings) -> None:
    settings.ANALYTICS_SESSION_RETENTION_DAYS = 0
    settings.ANALYTICS_SAMPLE_RETENTION_DAYS = 1
    old = datetime.now(UTC) - timedelta(days=400)
    SessionMetadata(stream_id=1, session_id=1, started_at=old).save()
    ViewerSample(stream_id=1, session_id=1, at=old).save()
    result = tasks.enforce_retention.apply().get()
    assert result["viewer_samples"] == 1
    assert "session_metadata" not in result
    assert SessionMetadata.objects.count() == 1


def test_retention_without_mongodb_does_nothing(mongo_off: None) -> None:
    assert services.enforce_retention(now=NOW) == {}


def _present(stream_id: int, members: int) -> None:
    expiry = time.time() + 45
    redis_client().zadd(f"presence:{stream_id}", {f"socket-{i}": expiry for i in range(members)})


@pytest.mark.django_db
def test_sample_viewers_records_live_streams_once_per_period(user: User, other_user: User, settings) -> None:
    settings.ANALYTICS_VIEWER_SAMPLE_S = 15
    live, live_session = stream_with_session(user)
    waiting, waiting_session = stream_with_session(other_user, status=SessionStatus.RECONNECTING)
    ended, _ = stream_with_session(user, status=SessionStatus.ENDED)
    _present(live.pk, 7)
    _present(waiting.pk, 2)
    _present(ended.pk, 5)
    now = datetime.now(UTC)
    PlaybackEvent(
        stream_id=live.pk,
        session_id=live_session.pk,
        viewer_id="a" * 10,
        kind="heartbeat",
        value=10,
        rendition="720p",
        at=now,
    ).save()
    PlaybackEvent(
        stream_id=live.pk,
        session_id=live_session.pk,
        viewer_id="b" * 10,
        kind="heartbeat",
        value=10,
        rendition="480p",
        at=now - timedelta(seconds=5),
    ).save()
    PlaybackEvent(
        stream_id=live.pk,
        session_id=live_session.pk,
        viewer_id="b" * 10,
        kind="heartbeat",
        value=10,
        rendition="720p",
        at=now,
    ).save()

    assert tasks.sample_viewers.apply().get() == 2
    period = ViewerSample.objects.first().at.replace(tzinfo=UTC)
    assert services.sample_live_streams(now=period + timedelta(seconds=14)) == 2  # same period again
    assert ViewerSample.objects.count() == 2  # upserted, not duplicated

    samples = {s.stream_id: s for s in ViewerSample.objects}
    assert set(samples) == {live.pk, waiting.pk}
    assert samples[live.pk].viewers == 7
    assert samples[live.pk].session_id == live_session.pk
    assert samples[live.pk].interval_s == 15.0
    assert samples[live.pk].per_rendition == {"720p": 2}  # each player counted under its latest rendition
    assert samples[waiting.pk].viewers == 2
    assert samples[waiting.pk].session_id == waiting_session.pk
    at = samples[live.pk].at.replace(tzinfo=UTC)
    assert int(at.timestamp()) % 15 == 0
    assert at <= datetime.now(UTC) < at + timedelta(seconds=30)


@pytest.mark.django_db
def test_sample_viewers_counts_chat_of_the_previous_period(user: User, other_user: User, settings) -> None:
    chat_models = pytest.importorskip("chat.models")
    settings.ANALYTICS_VIEWER_SAMPLE_S = 15
    stream, session = stream_with_session(user)
    now = datetime.now(UTC)
    period = services.period_start(now, 15)
    previous = period - timedelta(seconds=15)
    for author, when in (
        (user, previous + timedelta(seconds=1)),
        (user, previous + timedelta(seconds=2)),
        (other_user, previous + timedelta(seconds=14)),
    ):
        chat_models.Message.objects.create(stream=stream, user=author, text="hi", created_at=when)
    chat_models.Message.objects.create(
        stream=stream, user=user, text="older", created_at=previous - timedelta(seconds=1)
    )
    chat_models.Message.objects.create(
        stream=stream, user=user, text="gone", created_at=previous + timedelta(seconds=3), deleted_at=now
    )

    services.sample_live_streams(now=now)

    stats = ChatStats.objects.get(stream_id=stream.pk)
    assert stats.at.replace(tzinfo=UTC) == previous
    assert (stats.messages, stats.chatters, stats.deleted) == (4, 2, 1)
    assert stats.session_id == session.pk


@pytest.mark.django_db
def test_sampling_without_mongodb_does_nothing(user: User, mongo_off: None) -> None:
    stream_with_session(user)
    assert services.sample_live_streams() == 0
