"""The analytics API through APIClient: QoE reports (validation, limits, nothing stored on a
refusal), owner-only reads, staff-only platform totals, and analytics switched off."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts.models import User
from analytics.documents import IngestSample, PlaybackEvent, SessionMetadata, ViewerSample
from streams.models import SessionStatus, StreamSession
from tests.analytics.helpers import stream_with_session
from tests.factories import UserFactory, make_stream

pytestmark = pytest.mark.django_db
URL = "/api/v1/analytics/playback/"
VIEWER = "viewer-abc123"


def _batch(stream_id: int, events: object, **extra: object) -> dict:
    return {"stream": stream_id, "viewer": VIEWER, "events": events, **extra}


def _post(client: APIClient, body: object) -> tuple[int, dict]:
    response = client.post(URL, data=json.dumps(body), content_type="application/json")
    return response.status_code, response.json()


def test_valid_batch_is_stored_against_the_open_session(api_client: APIClient, user: User) -> None:
    stream, session = stream_with_session(user)
    events: list[dict[str, Any]] = [
        {"kind": "startup", "value": 1.25, "rendition": "720p"},
        {"kind": "heartbeat", "value": 10, "rendition": "720p", "age_ms": 5000},
        {"kind": "rebuffer", "value": 0.5, "rendition": "720p"},
        {"kind": "latency", "value": 4.2, "rendition": "720p"},
        {"kind": "switch", "rendition": "480p"},
        {"kind": "error", "detail": "fatal: networkError manifestLoadError"},
    ]
    before = datetime.now(UTC)
    status, body = _post(api_client, _batch(stream.pk, events))
    assert status == 202, body
    assert body == {"recorded": 6}
    stored = list(PlaybackEvent.objects(stream_id=stream.pk).order_by("kind"))
    assert [e.kind for e in stored] == sorted(e["kind"] for e in events)
    assert {e.session_id for e in stored} == {session.pk}
    assert {e.viewer_id for e in stored} == {VIEWER}
    heartbeat = next(e for e in stored if e.kind == "heartbeat")
    assert heartbeat.value == 10.0
    at = heartbeat.at.replace(tzinfo=UTC)
    assert before - timedelta(seconds=6) <= at <= before - timedelta(seconds=4)


def _ended(stream_session, seconds_ago: float) -> None:
    stream_session.status = SessionStatus.ENDED
    stream_session.ended_at = datetime.now(UTC) - timedelta(seconds=seconds_ago)
    stream_session.save(update_fields=["status", "ended_at"])


def test_reports_are_taken_on_air_and_just_after_the_end_only(api_client: APIClient, user: User, settings) -> None:
    settings.ANALYTICS_QOE_ENDED_GRACE_S = 120
    beat = [{"kind": "heartbeat", "value": 5}]
    stream, session = stream_with_session(user, status=SessionStatus.ENDING)
    assert _post(api_client, _batch(stream.pk, beat))[0] == 202  # finishing its last chunks
    _ended(session, 60)
    # Just ended: the last batches of players that were watching, named or not, still count.
    assert _post(api_client, _batch(stream.pk, beat))[0] == 202
    assert _post(api_client, _batch(stream.pk, beat, session=session.pk))[0] == 202
    assert {e.session_id for e in PlaybackEvent.objects} == {session.pk}

    _ended(session, 121)
    status, answer = _post(api_client, _batch(stream.pk, beat, session=session.pk))
    assert status == 409
    assert answer["error"]["code"] == "session_ended"
    assert "120 s" in answer["error"]["message"]
    status, answer = _post(api_client, _batch(stream.pk, beat))
    assert (status, answer["error"]["code"]) == (409, "not_live")
    never_live, _ = make_stream(user)
    status, answer = _post(api_client, _batch(never_live.pk, beat))
    assert (status, answer["error"]["code"]) == (409, "not_live")
    assert PlaybackEvent.objects.count() == 3


def test_a_new_broadcast_takes_the_reports_of_its_stream(api_client: APIClient, user: User) -> None:
    stream, old = stream_with_session(user, status=SessionStatus.ENDED, minutes_ago=60)
    new = StreamSession.objects.create(stream=stream, status=SessionStatus.LIVE, started_at=datetime.now(UTC))
    assert _post(api_client, _batch(stream.pk, [{"kind": "heartbeat", "value": 5}]))[0] == 202
    assert _post(api_client, _batch(stream.pk, [{"kind": "heartbeat", "value": 5}], session=old.pk))[0] == 409
    assert [e.session_id for e in PlaybackEvent.objects] == [new.pk]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_batch(1, [{"kind": "teleport", "value": 1}]), "events"),
        (_batch(1, [{"kind": "startup", "value": "1.5"}]), "events"),
        (_batch(1, [{"kind": "startup", "value": True}]), "events"),
        (_batch(1, [{"kind": "startup"}]), "events"),
        (_batch(1, [{"kind": "startup", "value": 500}]), "events"),
        (_batch(1, [{"kind": "heartbeat", "value": -1}]), "events"),
        (_batch(1, [{"kind": "switch"}]), "events"),
        (_batch(1, [{"kind": "error"}]), "events"),
        (_batch(1, [{"kind": "heartbeat", "value": 1, "rendition": "<script>"}]), "events"),
        (_batch(1, [{"kind": "heartbeat", "value": 1, "rendition": 720}]), "events"),
        (_batch(1, [{"kind": "heartbeat", "value": 1, "extra": 1}]), "events"),
        (_batch(1, [{"kind": "heartbeat", "value": 1, "age_ms": 10**9}]), "events"),
        (_batch(1, [{"kind": "heartbeat", "value": 1}] * 51), "events"),
        (_batch(1, []), "events"),
        (_batch(1, "not a list"), "events"),
        (_batch(1, [[1, 2]]), "events"),
        ({"stream": "1", "viewer": VIEWER, "events": [{"kind": "heartbeat", "value": 1}]}, "stream"),
        ({"stream": 1, "viewer": "short", "events": [{"kind": "heartbeat", "value": 1}]}, "viewer"),
        ({"stream": 1, "viewer": 12345678, "events": [{"kind": "heartbeat", "value": 1}]}, "viewer"),
        ({"stream": 1, "viewer": VIEWER, "events": [{"kind": "heartbeat", "value": 1}], "admin": True}, "admin"),
    ],
)
def test_invalid_batches_are_refused_and_store_nothing(
    api_client: APIClient, user: User, body: dict, field: str
) -> None:
    stream, _ = stream_with_session(user)
    if body.get("stream") == 1:
        body = {**body, "stream": stream.pk}
    status, answer = _post(api_client, body)
    assert status == 400, answer
    assert answer["error"]["code"] == "invalid"
    assert field in answer["error"]["fields"]
    assert PlaybackEvent.objects.count() == 0


def test_non_object_body_and_oversized_body(api_client: APIClient, user: User) -> None:
    stream, _ = stream_with_session(user)
    status, answer = _post(api_client, [1, 2, 3])
    assert status == 400
    assert answer["error"]["code"] == "invalid"
    huge = _batch(stream.pk, [{"kind": "error", "detail": "x" * 500}] * 40)
    status, answer = _post(api_client, huge)
    assert status == 413
    assert answer["error"]["code"] == "too_large"
    response = api_client.post(URL, data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert PlaybackEvent.objects.count() == 0


def test_unknown_stream_and_foreign_session(api_client: APIClient, user: User, other_user: User) -> None:
    stream, _ = stream_with_session(user)
    _, foreign = stream_with_session(other_user, status=SessionStatus.ENDED)
    status, answer = _post(api_client, _batch(10**9, [{"kind": "heartbeat", "value": 1}]))
    assert status == 404
    assert answer["error"]["code"] == "not_found"
    status, answer = _post(api_client, _batch(stream.pk, [{"kind": "heartbeat", "value": 1}], session=foreign.pk))
    assert status == 400
    assert "session" in answer["error"]["fields"]
    assert PlaybackEvent.objects.count() == 0


def test_rate_limit_per_playback(api_client: APIClient, user: User, settings) -> None:
    settings.ANALYTICS_QOE_BATCHES_PER_VIEWER_MIN = 3
    stream, _ = stream_with_session(user, status=SessionStatus.ENDING)
    codes = [_post(api_client, _batch(stream.pk, [{"kind": "heartbeat", "value": 1}]))[0] for _ in range(5)]
    assert codes == [202, 202, 202, 429, 429]
    assert PlaybackEvent.objects.count() == 3
    other = {"stream": stream.pk, "viewer": "another-viewer-1", "events": [{"kind": "heartbeat", "value": 1}]}
    assert _post(api_client, other)[0] == 202
    # The same page watching the stream's next broadcast is a new playback with its own budget.
    StreamSession.objects.create(stream=stream, status=SessionStatus.LIVE, started_at=datetime.now(UTC))
    assert _post(api_client, _batch(stream.pk, [{"kind": "heartbeat", "value": 1}]))[0] == 202


def _post_from(client: APIClient, body: object, peer: str, forwarded_for: str | None = None) -> int:
    extra: dict[str, Any] = {"REMOTE_ADDR": peer}
    if forwarded_for is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded_for
    return client.post(URL, data=json.dumps(body), content_type="application/json", **extra).status_code


def test_rate_limit_per_address_ignores_a_spoofed_forwarded_for(api_client: APIClient, user: User, settings) -> None:
    settings.ANALYTICS_QOE_BATCHES_PER_IP_MIN = 3
    stream, _ = stream_with_session(user)

    def batch(i: int) -> dict:  # a new viewer id every time: only the address limit applies
        return {"stream": stream.pk, "viewer": f"rotating-viewer-{i}", "events": [{"kind": "heartbeat", "value": 1}]}

    codes = [_post_from(api_client, batch(i), "198.51.100.7", f"203.0.113.{i}") for i in range(5)]
    assert codes == [202, 202, 202, 429, 429]
    assert _post_from(api_client, batch(9), "198.51.100.8") == 202  # another address
    assert PlaybackEvent.objects.count() == 4


def test_rate_limit_per_address_behind_a_trusted_proxy(api_client: APIClient, user: User, settings) -> None:
    settings.ANALYTICS_QOE_BATCHES_PER_IP_MIN = 2
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    stream, _ = stream_with_session(user)

    def batch(i: int) -> dict:
        return {"stream": stream.pk, "viewer": f"rotating-viewer-{i}", "events": [{"kind": "heartbeat", "value": 1}]}

    # Every client behind the proxy has its own budget; the proxy's own address is not one.
    assert [_post_from(api_client, batch(i), "10.0.0.5", "203.0.113.1") for i in range(3)] == [202, 202, 429]
    assert _post_from(api_client, batch(5), "10.0.0.5", "203.0.113.2") == 202
    # A client-made entry left of the proxy's own is not believed: the proxy saw 203.0.113.1.
    assert _post_from(api_client, batch(6), "10.0.0.5", "192.0.2.99, 203.0.113.1") == 429


def test_reports_without_mongodb_get_a_clear_503(api_client: APIClient, user: User, mongo_off: None) -> None:
    stream, _ = stream_with_session(user)
    status, answer = _post(api_client, _batch(stream.pk, [{"kind": "heartbeat", "value": 1}]))
    assert status == 503
    assert answer["error"]["code"] == "analytics_off"
    assert "MongoDB" in answer["error"]["message"]


def test_owner_reads_session_analytics(user: User) -> None:
    stream, session = stream_with_session(user)
    now = datetime.now(UTC)
    ViewerSample(
        stream_id=stream.pk, session_id=session.pk, at=now - timedelta(seconds=30), viewers=4, interval_s=15
    ).save()
    ViewerSample(
        stream_id=stream.pk, session_id=session.pk, at=now - timedelta(seconds=15), viewers=8, interval_s=15
    ).save()
    SessionMetadata(stream_id=stream.pk, session_id=session.pk, gaps=1, width=1280, height=720).save()
    client = APIClient()
    client.force_authenticate(user)
    response = client.get(f"/api/v1/streams/{stream.pk}/sessions/{session.pk}/analytics/?bucket=10")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["summary"]["peak_viewers"] == 8
    assert body["summary"]["watch_time_s"] == 180.0
    assert body["summary"]["avg_viewers"] == 6.0
    assert body["summary"]["gaps"] == 1
    assert sum(p["peak"] for p in body["viewers"]) == 12  # two 10 s buckets, one sample each
    assert client.get(f"/api/v1/streams/{stream.pk}/sessions/{session.pk}/analytics/?bucket=7").status_code == 400
    history = client.get(f"/api/v1/streams/{stream.pk}/analytics/?days=7").json()
    assert len(history["days"]) == 7
    assert history["days"][-1]["peak_viewers"] == 8
    assert client.get(f"/api/v1/streams/{stream.pk}/analytics/?days=0").status_code == 400
    assert client.get(f"/api/v1/streams/{stream.pk}/analytics/?days=abc").status_code == 400


def test_other_users_get_404_and_anonymous_401(user: User, other_user: User) -> None:
    stream, session = stream_with_session(user)
    urls = [
        f"/api/v1/streams/{stream.pk}/analytics/",
        f"/api/v1/streams/{stream.pk}/analytics/live/",
        f"/api/v1/streams/{stream.pk}/sessions/{session.pk}/analytics/",
    ]
    intruder = APIClient()
    intruder.force_authenticate(other_user)
    for url in urls:
        assert intruder.get(url).status_code == 404, url
        assert APIClient().get(url).status_code in (401, 403), url
    staff = APIClient()
    staff.force_authenticate(UserFactory.create(is_staff=True))
    for url in urls:
        assert staff.get(url).status_code == 200, url
    # A session id of another stream is not reachable through this stream.
    _, foreign = stream_with_session(other_user)
    owner = APIClient()
    owner.force_authenticate(user)
    assert owner.get(f"/api/v1/streams/{stream.pk}/sessions/{foreign.pk}/analytics/").status_code == 404


def test_platform_totals_are_staff_only(user: User) -> None:
    stream, session = stream_with_session(user)
    ViewerSample(stream_id=stream.pk, session_id=session.pk, at=datetime.now(UTC), viewers=3, interval_s=15).save()
    client = APIClient()
    client.force_authenticate(user)
    assert client.get("/api/v1/analytics/platform/").status_code == 403
    client.force_authenticate(UserFactory.create(is_staff=True))
    body = client.get("/api/v1/analytics/platform/?days=1").json()
    assert body["watch_time_s"] == 45.0
    assert body["top_streams"][0]["title"] == stream.title


def test_live_health_warns_when_the_pipeline_falls_behind(user: User, settings) -> None:
    settings.ANALYTICS_LAG_WARN_S = 6.0
    stream, session = stream_with_session(user)
    SessionMetadata(stream_id=stream.pk, session_id=session.pk, fps=30.0).save()
    client = APIClient()
    client.force_authenticate(user)
    now = datetime.now(UTC)
    base = {"stream_id": stream.pk, "session_id": session.pk, "fps": 30.0, "queue_depth": 0, "dropped_chunks": 3}
    IngestSample(**base, at=now - timedelta(seconds=120), bitrate=3_100_000, lag_s={"720p": 2.5}).save()
    # Drops long ago (the cumulative counter has not moved for two minutes) do not warn.
    IngestSample(**base, at=now - timedelta(seconds=10), bitrate=3_000_000, lag_s={"720p": 2.0, "480p": 1.5}).save()
    healthy = client.get(f"/api/v1/streams/{stream.pk}/analytics/live/").json()
    assert healthy["live"] is True
    assert healthy["ingest"]["bitrate"] == 3_000_000
    assert healthy["warnings"] == []
    assert healthy["per_rendition"] == {}
    ViewerSample(
        stream_id=stream.pk, session_id=session.pk, at=now, viewers=3, per_rendition={"720p": 2, "480p": 1}
    ).save()
    assert client.get(f"/api/v1/streams/{stream.pk}/analytics/live/").json()["per_rendition"] == {"720p": 2, "480p": 1}
    IngestSample(
        stream_id=stream.pk,
        session_id=session.pk,
        at=now + timedelta(seconds=1),
        bitrate=2_900_000,
        fps=20.0,
        lag_s={"720p": 9.5, "480p": 2.0},
        dropped_chunks=5,
        queue_depth=25,
    ).save()
    behind = client.get(f"/api/v1/streams/{stream.pk}/analytics/live/").json()
    codes = {w["code"] for w in behind["warnings"]}
    assert codes == {"lag", "dropped", "queue", "fps"}
    dropped = next(w for w in behind["warnings"] if w["code"] == "dropped")
    assert dropped["message"].startswith("2 chunk(s) dropped")
    lag = next(w for w in behind["warnings"] if w["code"] == "lag")
    assert "720p" in lag["message"]
    assert "480p" not in lag["message"]


def test_reads_without_mongodb_say_analytics_are_off(user: User, mongo_off: None) -> None:
    stream, session = stream_with_session(user)
    client = APIClient()
    client.force_authenticate(user)
    for url in (
        f"/api/v1/streams/{stream.pk}/analytics/",
        f"/api/v1/streams/{stream.pk}/analytics/live/",
        f"/api/v1/streams/{stream.pk}/sessions/{session.pk}/analytics/",
    ):
        response = client.get(url)
        assert response.status_code == 503, url
        assert response.json()["error"]["code"] == "analytics_off"


def test_mongodb_failing_after_start_up_answers_503_not_500(
    api_client: APIClient, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection: the server goes away mid-flight (mongomock cannot be made to fail)."""
    from mongoengine.queryset import QuerySet
    from pymongo.errors import AutoReconnect, ServerSelectionTimeoutError

    from analytics import aggregations

    stream, session = stream_with_session(user)

    def unreachable(*args: object, **kwargs: object) -> None:
        raise ServerSelectionTimeoutError("no servers")

    def lost(*args: object, **kwargs: object) -> None:
        raise AutoReconnect("connection lost")

    monkeypatch.setattr(aggregations, "_aggregate", unreachable)
    monkeypatch.setattr(QuerySet, "insert", lost)
    status, answer = _post(api_client, _batch(stream.pk, [{"kind": "heartbeat", "value": 1}]))
    assert status == 503
    assert answer["error"]["code"] == "analytics_off"
    client = APIClient()
    client.force_authenticate(user)
    response = client.get(f"/api/v1/streams/{stream.pk}/sessions/{session.pk}/analytics/")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "analytics_off"
