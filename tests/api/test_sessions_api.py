"""/api/v1/streams/<id>/sessions/ and /replays/: metadata, VOD URL, deletion by the owner."""

from datetime import timedelta

import pytest
from django.utils import timezone

from analytics.documents import RenditionInfo, SessionMetadata
from livestream import mongo
from streams import replays
from streams.models import SessionStatus, StreamSession
from streams.playback import session_prefix
from tests.api.conftest import assert_error
from tests.factories import make_stream

pytestmark = pytest.mark.django_db


def _session(stream, *, status=SessionStatus.ENDED, is_replay=True, hours_ago=1):
    start = timezone.now() - timedelta(hours=hours_ago)
    return StreamSession.objects.create(
        stream=stream,
        status=status,
        started_at=start,
        ended_at=None if status != SessionStatus.ENDED else start + timedelta(minutes=30),
        duration_s=1800 if status == SessionStatus.ENDED else 0,
        is_replay=is_replay,
    )


@pytest.fixture
def purges(monkeypatch):
    """Record the purge the pipeline is asked to do (its task is tested in the pipeline's suite)."""
    calls: list[tuple] = []
    from transcoding import tasks

    monkeypatch.setattr(tasks.purge_session_objects, "delay", lambda *args: calls.append(args))
    return calls


def test_sessions_list_and_detail_with_metadata(api_client, user):
    stream, _ = make_stream(user)
    old = _session(stream, hours_ago=5)
    live = _session(stream, status=SessionStatus.LIVE, is_replay=False, hours_ago=0)
    mongo.connect()
    SessionMetadata(
        stream_id=stream.pk,
        session_id=old.pk,
        video_codec="h264",
        width=1280,
        height=720,
        fps=30.0,
        renditions=[RenditionInfo(name="720p", width=1280, height=720, codecs="avc1.64001f,mp4a.40.2")],
    ).save()
    try:
        page = api_client.get(f"/api/v1/streams/{stream.pk}/sessions/").json()
        assert [s["id"] for s in page["results"]] == [live.pk, old.pk]
        detail = api_client.get(f"/api/v1/streams/{stream.pk}/sessions/{old.pk}/").json()
        assert detail["playback_url"] == f"http://127.0.0.1:8080/{session_prefix(stream.pk, old.pk)}/master.m3u8"
        assert detail["metadata"]["height"] == 720
        assert detail["metadata"]["renditions"][0]["codecs"] == "avc1.64001f,mp4a.40.2"
        assert page["results"][1]["metadata"]["video_codec"] == "h264"
        live_detail = api_client.get(f"/api/v1/streams/{stream.pk}/sessions/{live.pk}/").json()
        assert live_detail["playback_url"] is None
        assert live_detail["metadata"] is None
        only_replays = api_client.get(f"/api/v1/streams/{stream.pk}/sessions/?is_replay=true").json()["results"]
        assert [s["id"] for s in only_replays] == [old.pk]
        assert_error(api_client.get(f"/api/v1/streams/{stream.pk}/sessions/?status=nope"), 400)
    finally:
        SessionMetadata.objects(session_id=old.pk).delete()


def test_sessions_of_another_stream_are_not_reachable_through_this_one(api_client, user, other_user):
    mine, _ = make_stream(user)
    theirs, _ = make_stream(other_user)
    their_session = _session(theirs)
    assert_error(api_client.get(f"/api/v1/streams/{mine.pk}/sessions/{their_session.pk}/"), 404)
    assert_error(api_client.get(f"/api/v1/streams/{mine.pk}/replays/{their_session.pk}/"), 404)
    assert_error(api_client.get("/api/v1/streams/987654/sessions/"), 404)
    assert_error(api_client.get("/api/v1/streams/987654/replays/"), 404)


def test_replays_list_only_finished_kept_sessions(api_client, user):
    stream, _ = make_stream(user)
    kept = _session(stream)
    _session(stream, is_replay=False, hours_ago=3)
    _session(stream, status=SessionStatus.LIVE, is_replay=False, hours_ago=0)
    results = api_client.get(f"/api/v1/streams/{stream.pk}/replays/").json()["results"]
    assert [r["id"] for r in results] == [kept.pk]
    assert results[0]["playback_url"].endswith(f"/{session_prefix(stream.pk, kept.pk)}/master.m3u8")


def test_owner_deletes_a_replay_and_the_pipeline_purges_it(
    auth_client, user, purges, django_capture_on_commit_callbacks
):
    stream, _ = make_stream(user)
    replay = _session(stream)
    url = f"/api/v1/streams/{stream.pk}/replays/{replay.pk}/"
    with django_capture_on_commit_callbacks(execute=True):
        response = auth_client.delete(url)
    assert response.status_code == 204
    assert purges == [(replay.pk, stream.pk)]
    replay.refresh_from_db()
    assert replay.is_replay is False  # the broadcast stays in the log, without video
    assert_error(auth_client.get(url), 404)
    assert_error(auth_client.delete(url), 404)
    assert auth_client.get(f"/api/v1/streams/{stream.pk}/sessions/{replay.pk}/").json()["playback_url"] is None
    assert purges == [(replay.pk, stream.pk)]  # the second delete enqueued nothing


def test_replay_delete_permission_boundaries(api_client, user, other_user, staff_client, purges):
    stream, _ = make_stream(user)
    replay = _session(stream)
    url = f"/api/v1/streams/{stream.pk}/replays/{replay.pk}/"
    assert_error(api_client.delete(url), 401)
    api_client.force_authenticate(other_user)
    assert_error(api_client.delete(url), 403, "permission_denied")
    replay.refresh_from_db()
    assert replay.is_replay is True
    assert staff_client.delete(url).status_code == 204


def test_live_session_cannot_be_deleted(auth_client, user):
    stream, _ = make_stream(user)
    live = _session(stream, status=SessionStatus.LIVE, is_replay=False, hours_ago=0)
    with pytest.raises(replays.ReplayNotDeletableError):
        replays.delete_replay(live)
    assert_error(auth_client.delete(f"/api/v1/streams/{stream.pk}/replays/{live.pk}/"), 404)
    assert_error(auth_client.delete(f"/api/v1/streams/{stream.pk}/sessions/{live.pk}/"), 405)


def test_purge_falls_back_clearly_without_the_pipeline_task(monkeypatch, caplog, user):
    import builtins

    real_import = builtins.__import__

    def no_transcoding_tasks(name, *args, **kwargs):
        if name == "transcoding.tasks":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_transcoding_tasks)
    replays._purge_session_objects(1, 2)
    assert "purge_session_objects is not available" in caplog.text
