"""Clips through the REST API, the service and the task, on real segments in S3 (SeaweedFS)
and the real database: replay-range clips (MPEG-TS and CMAF sessions) checked frame by frame
against the publisher's numbered frames, webhooks, permissions, the rate limit, the quota, bad
ranges, and the purge of a deleted stream's clips."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from clips import tasks
from clips.models import Clip, ClipStatus
from livestream.redis import redis_client
from streams import services as stream_services
from streams.models import SessionStatus, Stream, StreamSession
from tests.api.conftest import assert_error
from tests.clips.media import BASE_WALL, FPS, expected_frames, frame_numbers, store_replay
from tests.factories import UserFactory, make_stream
from transcoding import hls, state, storage
from transcoding.tasks import purge_stream_objects
from webhooks.models import Delivery
from webhooks.services import create_endpoint

pytestmark = [pytest.mark.django_db]


def iso(offset: float) -> str:
    return datetime.fromtimestamp(BASE_WALL + offset, UTC).isoformat()


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def create(client: APIClient, stream_id: int, body: dict, capture) -> object:
    with capture(execute=True):  # webhooks and the queued task (no worker here: run below)
        return client.post(f"/api/v1/streams/{stream_id}/clips/", body, format="json")


def cut(slug: str, capture) -> Clip:
    clip = Clip.objects.get(slug=slug)
    with capture(execute=True):
        tasks.cut_clip(clip.pk)
    return Clip.objects.get(pk=clip.pk)


def download(clip: Clip, tmp_path: Path) -> Path:
    data = storage.get_bytes(clip.video_key)
    assert data is not None
    path = tmp_path / f"{clip.slug}.mp4"
    path.write_bytes(data)
    return path


@pytest.fixture
def replay(s3, user):
    stream, _ = make_stream(user, title="Clipped")
    session, segs = store_replay(stream, "ts")
    return stream, session, segs


@pytest.mark.parametrize("kind", ["ts", "cmaf"])
def test_replay_range_clip_on_segment_boundaries(kind, s3, user, tmp_path, django_capture_on_commit_callbacks):
    other_user = UserFactory.create()
    stream, _ = make_stream(user, title="Clipped")
    session, segs = store_replay(stream, kind)
    create_endpoint(user, url="https://hooks.example.invalid/x", events=["clip.created", "clip.deleted"])
    viewer = client_for(other_user)
    body = {"title": "Nice moment", "session": session.pk, "start": iso(2.5), "end": iso(7.0)}
    response = create(viewer, stream.pk, body, django_capture_on_commit_callbacks)
    assert response.status_code == 202, response.content
    assert response.json()["status"] == "pending"
    assert response.json()["video_url"] == ""
    clip = cut(response.json()["slug"], django_capture_on_commit_callbacks)
    assert clip.status == ClipStatus.READY, clip.failure_reason
    # Segments 1..3 hold 2.5 s .. 7.0 s: the clip is exactly those segments (stream copy).
    covering = [s for s in segs if s.wall < BASE_WALL + 7.0 and s.wall + s.duration > BASE_WALL + 2.5]
    assert [s.first_frame for s in covering] == [60, 120, 180]
    numbers = frame_numbers(download(clip, tmp_path))
    assert numbers == list(range(60, 240))
    assert clip.frames == 180
    assert clip.start.timestamp() == pytest.approx(covering[0].wall)
    assert abs(clip.duration_s - 4.5) <= 2.0  # within one segment of the request
    assert clip.duration_s == pytest.approx(6.0, abs=1 / FPS)
    detail = APIClient().get(f"/api/v1/clips/{clip.slug}/").json()
    assert detail["status"] == "ready"
    assert detail["video_url"].endswith(clip.video_key)
    assert detail["owner"] == other_user.public_name
    delivery = Delivery.objects.get(event="clip.created")
    data = delivery.payload["data"]
    assert data["stream"]["id"] == stream.pk
    assert data["clip"] == {"id": clip.pk, "slug": clip.slug}
    assert data["title"] == "Nice moment"
    assert data["duration"] == pytest.approx(6.0, abs=0.05)
    assert data["url"].endswith(f"/clips/{clip.slug}/")
    assert data["start"] == clip.start.isoformat()
    assert data["end"] == clip.end.isoformat()
    listed = APIClient().get(f"/api/v1/streams/{stream.pk}/clips/").json()
    assert [c["slug"] for c in listed["results"]] == [clip.slug]


@pytest.mark.parametrize("kind", ["ts", "cmaf"])
def test_trimmed_replay_clip_is_exact(kind, s3, user, tmp_path, django_capture_on_commit_callbacks):
    stream, _ = make_stream(user, title="Clipped")
    session, _ = store_replay(stream, kind)
    body = {"title": "Exact", "session": session.pk, "start": iso(2.5), "end": iso(7.0), "trim": True}
    response = create(client_for(user), stream.pk, body, django_capture_on_commit_callbacks)
    assert response.status_code == 202, response.content
    clip = cut(response.json()["slug"], django_capture_on_commit_callbacks)
    assert clip.status == ClipStatus.READY, clip.failure_reason
    assert frame_numbers(download(clip, tmp_path)) == expected_frames(BASE_WALL + 2.5, BASE_WALL + 7.0)
    assert clip.duration_s == pytest.approx(4.5, abs=1 / FPS)
    assert clip.start.timestamp() == pytest.approx(BASE_WALL + 2.5, abs=0.5 / FPS)


def test_delete_permissions(replay, user, other_user, django_capture_on_commit_callbacks):
    stream, session, _ = replay
    third = UserFactory.create()
    body = {"title": "Mine", "session": session.pk, "start": iso(0.5), "end": iso(1.5)}
    slugs = []
    for _ in range(2):
        response = create(client_for(other_user), stream.pk, body, django_capture_on_commit_callbacks)
        assert response.status_code == 202
        slugs.append(response.json()["slug"])
    clips = [cut(slug, django_capture_on_commit_callbacks) for slug in slugs]
    assert all(storage.get_bytes(c.video_key) for c in clips)
    assert_error(APIClient().delete(f"/api/v1/clips/{slugs[0]}/"), 401)
    assert_error(client_for(third).delete(f"/api/v1/clips/{slugs[0]}/"), 403, "permission_denied")
    assert_error(client_for(third).delete("/api/v1/clips/nosuchclip/"), 404)
    # The clip's owner deletes their own; the stream's owner deletes anyone's clip.
    for client, clip in ((client_for(other_user), clips[0]), (client_for(user), clips[1])):
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            assert client.delete(f"/api/v1/clips/{clip.slug}/").status_code == 204
        assert callbacks
        tasks.delete_clip_objects([clip.video_key])
        assert storage.get_bytes(clip.video_key) is None
        assert not Clip.objects.filter(pk=clip.pk).exists()
    assert_error(APIClient().get(f"/api/v1/clips/{slugs[0]}/"), 404)


def test_stream_deletion_purges_its_clips(replay, user, django_capture_on_commit_callbacks):
    stream, session, _ = replay
    body = {"title": "Gone with the stream", "session": session.pk, "start": iso(0.5), "end": iso(3.0)}
    response = create(client_for(user), stream.pk, body, django_capture_on_commit_callbacks)
    clip = cut(response.json()["slug"], django_capture_on_commit_callbacks)
    assert storage.get_bytes(clip.video_key) is not None
    stream_id = stream.pk
    with django_capture_on_commit_callbacks(execute=False):
        stream_services.delete_stream(stream)
    purge_stream_objects(stream_id)  # what delete_stream queues after commit
    assert storage.get_bytes(clip.video_key) is None
    assert not Clip.objects.filter(pk=clip.pk).exists()


def test_a_clip_whose_stream_went_while_cutting_leaves_nothing(replay, user, django_capture_on_commit_callbacks):
    stream, session, _ = replay
    body = {"title": "Late", "session": session.pk, "start": iso(0.5), "end": iso(3.0)}
    response = create(client_for(user), stream.pk, body, django_capture_on_commit_callbacks)
    clip = Clip.objects.get(slug=response.json()["slug"])
    Clip.objects.filter(pk=clip.pk).update(status=ClipStatus.PENDING)
    real_mark_ready = tasks.services.mark_ready

    def deleted_meanwhile(clip_id, **fields):
        Clip.objects.filter(pk=clip_id).delete()
        return real_mark_ready(clip_id, **fields)

    tasks.services.mark_ready = deleted_meanwhile  # the deletion lands while the clip is cut
    try:
        assert tasks.cut_clip(clip.pk) == "gone"
    finally:
        tasks.services.mark_ready = real_mark_ready
    assert storage.get_bytes(clip.video_key) is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": "x", "start": "S7", "end": "S2"}, "end"),  # end before start
        ({"title": "x", "start": "S0", "end": "S11.9", "max": 5}, "end"),  # longer than CLIP_MAX_SECONDS
        ({"title": "x", "start": "S-5", "end": "S2"}, "start"),  # before the broadcast
        ({"title": "x", "start": "S10", "end": "S14"}, "end"),  # after it
        ({"title": "x", "start": "yesterday", "end": "S3"}, "start"),  # not a date-time
        ({"title": "", "start": "S1", "end": "S3"}, "title"),
        ({"title": "x", "start": "S1", "end": "S3", "trim": "yes"}, "trim"),
        ({"title": "x", "start": "S1"}, "end"),
        ({"title": "x", "start": "S1", "end": "S3", "last_seconds": 10}, None),
    ],
)
def test_bad_ranges_are_400(replay, user, settings, body, field, django_capture_on_commit_callbacks):  # noqa: PLR0917
    stream, session, _ = replay
    settings.CLIP_MAX_SECONDS = body.pop("max", 60)
    payload = {"session": session.pk}
    for name, value in body.items():
        payload[name] = iso(float(value[1:])) if isinstance(value, str) and value.startswith("S") else value
    response = create(client_for(user), stream.pk, payload, django_capture_on_commit_callbacks)
    assert_error(response, 400, field=field)
    assert not Clip.objects.exists()


def test_live_clip_needs_a_live_stream_and_a_sane_length(replay, user, settings, django_capture_on_commit_callbacks):
    stream, _, _ = replay
    client = client_for(user)
    assert_error(create(client, stream.pk, {"title": "x", "last_seconds": 30}, django_capture_on_commit_callbacks),
                 400, field="last_seconds")  # fmt: skip
    settings.CLIP_MAX_SECONDS = 60
    for seconds in (0, 61, "ten"):
        response = create(
            client, stream.pk, {"title": "x", "last_seconds": seconds}, django_capture_on_commit_callbacks
        )
        assert_error(response, 400, field="last_seconds")
    assert_error(APIClient().post(f"/api/v1/streams/{stream.pk}/clips/", {"title": "x", "last_seconds": 5},
                                  format="json"), 401)  # fmt: skip
    assert_error(create(client, 999999, {"title": "x", "last_seconds": 5}, django_capture_on_commit_callbacks), 404)


def test_a_session_nobody_may_watch_is_not_clippable_by_others(
    replay, user, other_user, tmp_path, django_capture_on_commit_callbacks
):
    stream, session, _ = replay
    StreamSession.objects.filter(pk=session.pk).update(is_replay=False)  # not kept: not public
    body = {"title": "x", "session": session.pk, "start": iso(0.5), "end": iso(2.5)}
    assert_error(create(client_for(other_user), stream.pk, body, django_capture_on_commit_callbacks), 404)
    other_stream, _ = make_stream(other_user, title="Elsewhere")
    assert_error(create(client_for(other_user), other_stream.pk, body, django_capture_on_commit_callbacks), 404)
    # The stream's owner may still clip it while its objects exist.
    assert create(client_for(user), stream.pk, body, django_capture_on_commit_callbacks).status_code == 202
    StreamSession.objects.filter(pk=session.pk).update(status=SessionStatus.ENDING, is_replay=False)
    assert_error(create(client_for(other_user), stream.pk, body, django_capture_on_commit_callbacks), 404)


def test_a_private_preview_is_not_clippable_by_others(replay, user, other_user, django_capture_on_commit_callbacks):
    """ADR 0034: a preview broadcast (or its replay, if it never went public) is the owner's alone;
    a stream on air in preview does not exist for anybody else."""
    stream, session, _ = replay
    StreamSession.objects.filter(pk=session.pk).update(is_preview=True)
    body = {"title": "x", "session": session.pk, "start": iso(0.5), "end": iso(2.5)}
    assert_error(create(client_for(other_user), stream.pk, body, django_capture_on_commit_callbacks), 404)
    assert create(client_for(user), stream.pk, body, django_capture_on_commit_callbacks).status_code == 202
    Stream.objects.filter(pk=stream.pk).update(in_preview=True)
    assert_error(create(client_for(other_user), stream.pk, body, django_capture_on_commit_callbacks), 404)
    assert client_for(other_user).get(f"/api/v1/streams/{stream.pk}/clips/").status_code == 404
    Stream.objects.filter(pk=stream.pk).update(in_preview=False)
    StreamSession.objects.filter(pk=session.pk).update(went_public_at=datetime.now(UTC))
    assert create(client_for(other_user), stream.pk, body, django_capture_on_commit_callbacks).status_code == 202


def test_rate_limit_429_and_daily_quota(replay, user, other_user, settings, django_capture_on_commit_callbacks):
    stream, session, _ = replay
    body = {"title": "x", "session": session.pk, "start": iso(0.5), "end": iso(2.5)}
    settings.CLIP_RATE_PER_MINUTE, settings.CLIPS_PER_USER_PER_DAY = 2, 0
    client = client_for(other_user)
    for _ in range(2):
        assert create(client, stream.pk, body, django_capture_on_commit_callbacks).status_code == 202
    response = create(client, stream.pk, body, django_capture_on_commit_callbacks)
    assert_error(response, 429, "throttled")
    assert response["Retry-After"]
    assert Clip.objects.count() == 2
    settings.CLIP_RATE_PER_MINUTE, settings.CLIPS_PER_USER_PER_DAY = 100, 3
    assert create(client, stream.pk, body, django_capture_on_commit_callbacks).status_code == 202
    assert_error(create(client, stream.pk, body, django_capture_on_commit_callbacks), 403, "clip_quota_reached")
    # Another user has a quota of their own.
    assert create(client_for(user), stream.pk, body, django_capture_on_commit_callbacks).status_code == 202


def test_clip_page_and_dashboard(replay, user, other_user, client, django_capture_on_commit_callbacks):
    stream, session, _ = replay
    body = {"title": "On the page", "session": session.pk, "start": iso(0.5), "end": iso(2.5)}
    slug = create(client_for(other_user), stream.pk, body, django_capture_on_commit_callbacks).json()["slug"]
    page = client.get(f"/clips/{slug}/")
    assert page.status_code == 200
    assert b"Cutting the clip" in page.content
    clip = cut(slug, django_capture_on_commit_callbacks)
    page = client.get(f"/clips/{slug}/").content.decode()
    assert f'src="{storage_url(clip)}"' in page
    assert "On the page" in page
    assert other_user.public_name in page
    assert "Delete clip" not in page
    client.force_login(user)
    manage = client.get(f"/dashboard/streams/{stream.pk}/").content.decode()
    assert f"/clips/{slug}/delete/" in manage
    replay_page = client.get(f"/s/{stream.slug}/replays/{session.pk}/").content.decode()
    assert f"/s/{stream.slug}/replays/{session.pk}/clip/" in replay_page
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(
            f"/s/{stream.slug}/replays/{session.pk}/clip/", {"title": "From the form", "start": "1", "end": "4"}
        )
    made = Clip.objects.get(title="From the form")
    assert response.status_code == 302
    assert response["Location"] == f"/clips/{made.slug}/"
    assert made.requested_start.timestamp() == pytest.approx(BASE_WALL + 1)
    with django_capture_on_commit_callbacks(execute=False):
        assert client.post(f"/clips/{slug}/delete/").status_code == 302
    assert not Clip.objects.filter(slug=slug).exists()
    client.force_login(UserFactory.create())
    assert client.post(f"/clips/{made.slug}/delete/").status_code == 403


def storage_url(clip: Clip) -> str:
    from clips.services import video_url

    return video_url(clip)


def test_watch_page_clip_button_for_signed_in_viewers_of_a_live_stream(replay, user, other_user, client):
    stream, _, _ = replay
    assert b"clip-live" not in client.get(f"/s/{stream.slug}/").content  # offline
    Stream.objects.filter(pk=stream.pk).update(status="live")
    assert b"clip-live" not in client.get(f"/s/{stream.slug}/").content  # anonymous
    client.force_login(other_user)
    page = client.get(f"/s/{stream.slug}/").content.decode()
    assert f'action="/s/{stream.slug}/clip/"' in page
    assert 'name="seconds"' in page
    assert 'value="30"' in page
    # Live, but nothing of a broadcast published: a clear message, no clip.
    response = client.post(f"/s/{stream.slug}/clip/", {"title": "x", "seconds": "30"}, follow=True)
    assert "not live" in response.content.decode() or "published" in response.content.decode()
    assert not Clip.objects.exists()


# A chunk the pipeline gave up (transcoding fell past the live deadline) leaves a hole in the
# source rendition: chunk 3 (6 s .. 8 s) here. A clip never joins across it silently.
@pytest.mark.parametrize("kind", ["ts", "cmaf"])
def test_a_range_across_dropped_video_is_refused_and_either_side_is_clipped(
    kind, s3, user, tmp_path, django_capture_on_commit_callbacks
):
    stream, _ = make_stream(user, title="Dropped")
    session, _ = store_replay(stream, kind, drop=(3,))
    client = client_for(user)
    across = {"title": "Across", "session": session.pk, "start": iso(5.0), "end": iso(9.0)}
    response = create(client, stream.pk, across, django_capture_on_commit_callbacks)
    assert_error(response, 400, field="start")
    assert "dropped" in response.content.decode()
    assert datetime.fromtimestamp(BASE_WALL + 8.0, UTC).isoformat() in response.content.decode()
    assert not Clip.objects.exists()
    # Up to the hole, and from it on: both are whole, with exactly the publisher's frames.
    for start, end in ((2.0, 6.0), (8.0, 11.5)):
        body = {"title": "Side", "session": session.pk, "start": iso(start), "end": iso(end), "trim": True}
        response = create(client, stream.pk, body, django_capture_on_commit_callbacks)
        assert response.status_code == 202, response.content
        clip = cut(response.json()["slug"], django_capture_on_commit_callbacks)
        assert clip.status == ClipStatus.READY, clip.failure_reason
        assert frame_numbers(download(clip, tmp_path)) == expected_frames(BASE_WALL + start, BASE_WALL + end)


def test_the_cut_refuses_a_recorded_range_across_dropped_video(s3, user, django_capture_on_commit_callbacks):
    stream, _ = make_stream(user, title="Dropped")
    session, _ = store_replay(stream, "ts", drop=(3,))
    clip = Clip.objects.create(
        stream=stream, session=session, owner=user, title="Old request",
        requested_start=datetime.fromtimestamp(BASE_WALL + 5.0, UTC),
        requested_end=datetime.fromtimestamp(BASE_WALL + 9.0, UTC),
    )  # fmt: skip
    clip = cut(clip.slug, django_capture_on_commit_callbacks)
    assert clip.status == ClipStatus.FAILED
    assert "dropped" in clip.failure_reason
    assert storage.get_bytes(clip.video_key) is None if clip.video_key else True


def test_a_live_clip_over_dropped_video_starts_after_it(s3, user, tmp_path, django_capture_on_commit_callbacks):
    stream, _ = make_stream(user, title="Dropped live")
    session, _ = store_replay(stream, "ts", drop=(3,))
    # The same segments as the published log of a live session (what the assembler wrote).
    text = storage.get_bytes(f"{session.storage_prefix}/source/index.m3u8")
    assert text is not None
    entries = [replace(e, sizes={"source": 1}) for e in hls.parse_media(text.decode(), ["source"])]
    session.status, session.is_replay, session.ended_at = SessionStatus.LIVE, False, None
    session.save()
    published = state.key(session.pk, "published")
    redis_client().rpush(published, *[e.to_json() for e in entries])
    try:
        client = client_for(user)
        # The last 8 s (4 s .. 12 s) hold the hole: the clip is the 4 s after it.
        response = create(
            client, stream.pk, {"title": "Last eight", "last_seconds": 8}, django_capture_on_commit_callbacks
        )
        assert response.status_code == 202, response.content
        clip = Clip.objects.get(slug=response.json()["slug"])
        assert clip.requested_start.timestamp() == pytest.approx(BASE_WALL + 8.0)
        assert clip.requested_end.timestamp() == pytest.approx(BASE_WALL + 12.0)
        clip = cut(clip.slug, django_capture_on_commit_callbacks)
        assert clip.status == ClipStatus.READY, clip.failure_reason
        assert frame_numbers(download(clip, tmp_path)) == list(range(240, 360))
        # The last 4 s hold no hole: as asked.
        response = create(
            client, stream.pk, {"title": "Last four", "last_seconds": 4}, django_capture_on_commit_callbacks
        )
        clip = Clip.objects.get(slug=response.json()["slug"])
        assert clip.requested_start.timestamp() == pytest.approx(BASE_WALL + 8.0)
    finally:
        redis_client().delete(published)
