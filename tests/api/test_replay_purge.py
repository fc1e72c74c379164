"""Deleting a replay through the API purges its objects from the real object store: API ->
``streams.replays.delete_replay`` -> on commit -> ``transcoding.tasks.purge_session_objects`` on a
real Celery worker -> SeaweedFS. A sibling session's objects stay."""

import time
from datetime import timedelta

import pytest
from celery.contrib.testing.worker import start_worker
from django.utils import timezone

from livestream.celery import app as celery_app
from streams import playback
from streams.models import SessionStatus, StreamSession
from tests.factories import make_stream
from transcoding import storage


@pytest.fixture
def worker(transactional_db):
    celery_app.control.purge()
    # queues named: a worker started without them consumes whatever an earlier test's worker
    # selected on the shared app (e.g. only "webhooks").
    with start_worker(
        celery_app, pool="solo", concurrency=1, perform_ping_check=False, shutdown_timeout=10, queues=["default"]
    ):
        yield


def _ended(stream, hours_ago: int) -> StreamSession:
    start = timezone.now() - timedelta(hours=hours_ago)
    return StreamSession.objects.create(
        stream=stream,
        status=SessionStatus.ENDED,
        started_at=start,
        ended_at=start + timedelta(minutes=10),
        duration_s=600,
        is_replay=True,
    )


@pytest.mark.usefixtures("worker")
def test_deleting_a_replay_purges_only_its_objects(s3, api_client, user):
    stream, _ = make_stream(user)
    doomed = _ended(stream, 2)
    kept = _ended(stream, 1)
    doomed_prefix = playback.session_prefix(stream.pk, doomed.pk) + "/"
    kept_prefix = playback.session_prefix(stream.pk, kept.pk) + "/"
    for prefix in (doomed_prefix, kept_prefix):
        storage.put_playlist(prefix + "master.m3u8", "#EXTM3U\n")
        storage.put_segment(prefix + "720p/00001.ts", b"\x47" * 188)
    assert len(storage.list_keys(doomed_prefix)) == 2

    api_client.force_authenticate(user)
    response = api_client.delete(f"/api/v1/streams/{stream.pk}/replays/{doomed.pk}/")
    assert response.status_code == 204

    deadline = time.monotonic() + 20
    while storage.list_keys(doomed_prefix) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert storage.list_keys(doomed_prefix) == []
    assert sorted(storage.list_keys(kept_prefix)) == [kept_prefix + "720p/00001.ts", kept_prefix + "master.m3u8"]
    storage.delete_prefix(kept_prefix)
