"""Which publisher a key change or a delete drops, when (after commit), and the retry for a
publish accepted a moment ago (nginx-rtmp renames it only once on_publish has answered).
The real thing, with nginx-rtmp and ffmpeg, is in test_live_drop.py."""

from datetime import timedelta

import pytest
from django.utils import timezone

from streams import services, sessions
from streams.models import StreamSession
from tests.factories import make_stream

pytestmark = pytest.mark.django_db


@pytest.fixture
def drops(monkeypatch):
    """Record drop requests; answer from ``answers`` (then True)."""
    calls: list[str] = []
    answers: list[bool] = []

    def drop(name: str, *, node: str | None = None) -> bool:
        calls.append(name)
        return answers.pop(0) if answers else True

    monkeypatch.setattr("transcoding.rtmp_control.drop_publisher", drop)
    monkeypatch.setattr("streams.services.time.sleep", lambda s: None)
    monkeypatch.setattr("streams.services._purge_storage", lambda stream_id, open_sessions: None)
    return calls, answers


def test_regenerate_drops_the_live_publisher_after_commit(user, drops, django_capture_on_commit_callbacks):
    calls, _ = drops
    stream, key = make_stream(user)
    grant = sessions.start_publish(key)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.regenerate_key(stream)
    assert calls == []  # nothing before the commit
    for callback in callbacks:
        callback()
    assert calls == [f"s{grant.session.pk}c1"]


def test_a_just_accepted_publish_is_retried_until_nginx_knows_its_name(user, drops, django_capture_on_commit_callbacks):
    calls, answers = drops
    stream, key = make_stream(user)
    grant = sessions.start_publish(key)
    answers.extend([False, False])  # not renamed yet, twice
    with django_capture_on_commit_callbacks(execute=True):
        services.regenerate_key(stream)
    assert calls == [f"s{grant.session.pk}c1"] * 3


def test_an_older_publish_that_is_not_found_is_not_retried(user, drops, django_capture_on_commit_callbacks):
    calls, answers = drops
    stream, key = make_stream(user)
    grant = sessions.start_publish(key)
    StreamSession.objects.filter(pk=grant.session.pk).update(updated_at=timezone.now() - timedelta(minutes=5))
    answers.extend([False] * 5)
    with django_capture_on_commit_callbacks(execute=True):
        services.regenerate_key(stream)
    assert len(calls) == 1


def test_the_connection_of_a_resumed_session_is_dropped(user, drops, django_capture_on_commit_callbacks):
    calls, _ = drops
    stream, key = make_stream(user)
    first = sessions.start_publish(key)
    sessions.disconnect(first.session.pk, first.connection)
    again = sessions.start_publish(key)
    assert again.resumed
    with django_capture_on_commit_callbacks(execute=True):
        services.delete_stream(stream)
    assert calls == [f"s{first.session.pk}c2"]


def test_nothing_is_dropped_without_a_live_publisher(user, drops, django_capture_on_commit_callbacks):
    calls, _ = drops
    stream, key = make_stream(user)
    grant = sessions.start_publish(key)
    sessions.disconnect(grant.session.pk, grant.connection)  # waiting for a reconnect
    with django_capture_on_commit_callbacks(execute=True):
        services.regenerate_key(stream)
        services.delete_stream(stream)
    assert calls == []
