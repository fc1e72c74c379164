"""Suggestions from real signals: chat rows in PostgreSQL, loudness in Redis (as the transcode
worker records it), joins in MongoDB (mongomock); the clip.suggested webhook, once each."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction

from analytics.documents import PlaybackEvent
from chat.models import Message
from highlights import keys, services, tasks
from highlights.models import Suggestion, SuggestionStatus
from streams.models import SessionStatus, StreamSession
from tests.factories import UserFactory, make_stream
from tests.webhooks.conftest import allow_private, celery_worker, receiver
from transcoding.loudness import Loudness
from webhooks import services as webhook_services
from webhooks.models import Delivery, DeliveryStatus

__all__ = ["allow_private", "celery_worker", "receiver"]

T0 = datetime(2026, 12, 2, 15, 0, 0, tzinfo=UTC)


def _session(stream, status=SessionStatus.LIVE) -> StreamSession:
    return StreamSession.objects.create(stream=stream, status=status, started_at=T0)


def _record(session_id: int, count: int, loud: dict[int, float] | None = None, *, lufs: float = -40.0) -> None:
    """``count`` 2 s segments from T0, as the transcode worker records them."""
    for seq in range(count):
        value = (loud or {}).get(seq, lufs + 0.1 * (seq % 3))
        keys.record_segment(
            session_id,
            seq,
            wall=(T0 + timedelta(seconds=2 * seq)).timestamp(),
            duration=2.0,
            loudness=Loudness(momentary_max=value, mean=value - 1, seconds=2.0),
        )


def _chat(stream, at: datetime, count: int, *, deleted: bool = False) -> None:
    author = UserFactory.create()
    Message.objects.bulk_create(
        Message(
            stream=stream,
            user=author,
            text=f"wow {i}",
            created_at=at + timedelta(milliseconds=50 * i),
            deleted_at=at if deleted else None,
        )
        for i in range(count)
    )


@pytest.mark.django_db
def test_burst_and_loud_passage_are_suggested_once(user, django_capture_on_commit_callbacks, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    stream, _ = make_stream(user)
    endpoint = webhook_services.create_endpoint(user, url="http://127.0.0.1:9/hook", events=["clip.suggested"]).endpoint
    session = _session(stream)
    _record(session.pk, 20, loud={14: -8.0})
    _chat(stream, T0 + timedelta(seconds=12.2), 20)  # segment 6: 12-14 s
    _chat(stream, T0 + timedelta(seconds=30.5), 1)  # background chat
    _chat(stream, T0 + timedelta(seconds=3), 30, deleted=True)  # deleted by a moderator: not counted

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        created = services.score_session(session.pk)
    assert created is not None
    assert len(created) == 2
    assert callbacks  # the events (and their webhook deliveries) left after commit
    by_peak = {s.peak_at: s for s in created}
    burst, loud = by_peak[T0 + timedelta(seconds=12)], by_peak[T0 + timedelta(seconds=28)]
    assert (burst.start, burst.end) == (T0 + timedelta(seconds=10), T0 + timedelta(seconds=16))
    assert (loud.start, loud.end) == (T0 + timedelta(seconds=26), T0 + timedelta(seconds=32))
    assert burst.reasons["chat"].startswith("20 messages in 2 s (10.0/s")
    assert loud.reasons["loudness"] == "peak -8.0 LUFS, 31.9 LU above the usual -39.9 LUFS - loud"
    assert burst.signals["messages"] == 20
    assert burst.signals["segments"] == [5, 6, 7]
    assert all(s.status == SuggestionStatus.OFFERED and s.stream_id == stream.pk for s in created)

    deliveries = Delivery.objects.filter(endpoint=endpoint, event="clip.suggested")
    assert deliveries.count() == 2
    payloads = {d.payload["data"]["suggestion"]: d.payload["data"] for d in deliveries}
    data = payloads[burst.pk]
    assert data["session"] == session.pk
    assert data["start"] == burst.start.isoformat()
    assert data["end"] == burst.end.isoformat()
    assert data["score"] == burst.score
    assert data["reasons"] == burst.reasons

    # Scoring again (the next beat, the final run) offers nothing twice.
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert services.score_session(session.pk) == []
        assert services.score_session(session.pk, final=True) == []
    assert callbacks == []
    assert Delivery.objects.filter(event="clip.suggested").count() == 2
    assert Suggestion.objects.filter(session=session).count() == 2
    assert all(s.final for s in Suggestion.objects.filter(session=session))
    # A dismissed suggestion is not offered again either.
    services.set_status(burst, SuggestionStatus.DISMISSED)
    assert services.score_session(session.pk) == []
    assert [s.pk for s in services.offered(stream.pk)] == [loud.pk]


@pytest.mark.django_db
def test_quiet_broadcast_gets_nothing(user):
    stream, _ = make_stream(user)
    session = _session(stream)
    _record(session.pk, 30)
    for second in range(0, 60, 7):  # a message now and then
        _chat(stream, T0 + timedelta(seconds=second + 0.5), 1)
    assert services.score_session(session.pk, final=True) == []
    scored_max = max(m.score for m in services.candidates(session)[0]) if services.candidates(session)[0] else 0
    assert scored_max == 0


@pytest.mark.django_db
def test_no_live_suggestion_before_a_baseline(user, settings):
    settings.HIGHLIGHTS_MIN_SEGMENTS = 8
    stream, _ = make_stream(user)
    session = _session(stream)
    _record(session.pk, 6, loud={3: -5.0})
    _chat(stream, T0 + timedelta(seconds=1), 0)
    assert services.score_session(session.pk) == []  # 6 segments: too few while live
    created = services.score_session(session.pk, final=True)  # the whole broadcast: 6 is all
    assert created is not None
    assert len(created) == 1
    assert created[0].peak_at == T0 + timedelta(seconds=6)


@pytest.mark.django_db
def test_viewer_joins_count(user):
    stream, _ = make_stream(user)
    session = _session(stream)
    _record(session.pk, 20)
    at = T0 + timedelta(seconds=20.3)  # segment 10
    ids = {"stream_id": stream.pk, "session_id": session.pk, "kind": "startup"}
    for viewer in range(12):
        PlaybackEvent(**ids, viewer_id=f"v{viewer}", at=at, value=1.2).save()
        # The same viewers' later reports are no joins.
        PlaybackEvent(**ids, viewer_id=f"v{viewer}", at=at + timedelta(seconds=9)).save()
    created = services.score_session(session.pk, final=True)
    assert created is not None
    assert len(created) == 1
    assert created[0].peak_at == T0 + timedelta(seconds=20)
    assert created[0].reasons["joins"].startswith("12 viewers joined (6.00/s")
    assert created[0].signals["joins"] == 12


@pytest.mark.django_db
def test_beat_task_scores_open_sessions_and_finalises_ended_ones_once(user, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    from livestream.celery import app

    app.conf.task_always_eager = True
    try:
        stream, _ = make_stream(user)
        live = _session(stream)
        _record(live.pk, 20, loud={5: -6.0})
        other, _ = make_stream(user)
        ended = _session(other, status=SessionStatus.ENDED)
        ended.ended_at = datetime.now(UTC)
        ended.save()
        _record(ended.pk, 20, loud={9: -6.0})
        assert tasks.score_sessions() == {"live": 1, "final": 1}
        assert Suggestion.objects.filter(session=live).count() == 1
        assert Suggestion.objects.get(session=ended).final
        assert keys.is_final(ended.pk)
        assert tasks.score_sessions() == {"live": 1, "final": 0}  # the final run is done once
    finally:
        app.conf.task_always_eager = False


@pytest.mark.usefixtures("allow_private", "celery_worker")
def test_clip_suggested_webhook_is_delivered(receiver):
    """A real worker (queue ``webhooks``) delivers the event to a real receiver."""
    owner = UserFactory.create()
    stream, _ = make_stream(owner)
    webhook_services.create_endpoint(owner, url=receiver.url, events=["clip.suggested"])
    session = _session(stream)
    _record(session.pk, 20, loud={12: -7.0})
    with transaction.atomic():
        created = services.score_session(session.pk)
    assert created is not None
    assert len(created) == 1
    received = receiver.wait_for(1)
    assert len(received) == 1
    body = received[0].json()
    assert body["type"] == "clip.suggested"
    assert received[0].headers["X-Livestream-Event"] == "clip.suggested"
    assert body["data"]["suggestion"] == created[0].pk
    assert body["data"]["session"] == session.pk
    assert body["data"]["start"] == (T0 + timedelta(seconds=22)).isoformat()
    assert body["data"]["end"] == (T0 + timedelta(seconds=28)).isoformat()
    assert "LU above" in body["data"]["reasons"]["loudness"]
    delivery = Delivery.objects.get(event="clip.suggested")
    for _ in range(100):
        delivery.refresh_from_db()
        if delivery.status == DeliveryStatus.SUCCEEDED:
            break
        receiver.wait_for(2, timeout=0.1)
    assert delivery.status == DeliveryStatus.SUCCEEDED
