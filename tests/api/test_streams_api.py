"""/api/v1/streams/: the contract fields, filters, pagination and every permission boundary."""

import time

import pytest

from chat.presence import _key as presence_key
from livestream.redis import redis_client
from streams import keys
from streams.models import Stream, StreamStatus
from tests.api.conftest import assert_error
from tests.factories import UserFactory, make_stream

pytestmark = pytest.mark.django_db

CONTRACT = {"id", "title", "status", "owner", "rtmp_url", "playback_url", "watch_url", "viewer_count"}


def test_create_returns_key_once_and_contract_fields(auth_client, user):
    response = auth_client.post("/api/v1/streams/", {"title": "  Morning show "}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert set(body) >= CONTRACT
    assert body["title"] == "Morning show"
    assert body["status"] == "offline"
    assert body["owner"]["username"] == user.username
    assert body["rtmp_url"] == "rtmp://127.0.0.1:1935/live"
    assert body["playback_url"] == f"http://127.0.0.1:8080/live/{body['id']}/master.m3u8"
    assert body["watch_url"].startswith("http://127.0.0.1:8000/s/")
    assert body["viewer_count"] == 0
    stream = Stream.objects.get(pk=body["id"])
    assert keys.matches(body["stream_key"], stream.key_hash)
    # Never again: not in the owner's detail nor in lists.
    detail = auth_client.get(f"/api/v1/streams/{stream.pk}/").json()
    assert "stream_key" not in detail
    assert detail["key_hint"] == stream.key_hint
    listed = auth_client.get("/api/v1/streams/").json()["results"]
    assert all("stream_key" not in item for item in listed)


def test_anonymous_reads_but_cannot_write(api_client, user):
    stream, _ = make_stream(user, title="Public")
    assert api_client.get("/api/v1/streams/").status_code == 200
    detail = api_client.get(f"/api/v1/streams/{stream.pk}/")
    assert detail.status_code == 200
    assert "key_hint" not in detail.json()
    assert_error(api_client.post("/api/v1/streams/", {"title": "x"}, format="json"), 401, "not_authenticated")
    assert_error(api_client.patch(f"/api/v1/streams/{stream.pk}/", {"title": "x"}, format="json"), 401)
    assert_error(api_client.delete(f"/api/v1/streams/{stream.pk}/"), 401)
    assert_error(api_client.post(f"/api/v1/streams/{stream.pk}/regenerate-key/"), 401)
    assert Stream.objects.get(pk=stream.pk).title == "Public"


def test_other_user_is_refused_every_write(api_client, user, other_user):
    stream, key = make_stream(user, title="Mine")
    api_client.force_authenticate(other_user)
    url = f"/api/v1/streams/{stream.pk}/"
    assert_error(api_client.patch(url, {"title": "Hacked"}, format="json"), 403, "permission_denied")
    assert_error(api_client.put(url, {"title": "Hacked"}, format="json"), 403)
    assert_error(api_client.delete(url), 403)
    assert_error(api_client.post(url + "regenerate-key/"), 403)
    stream.refresh_from_db()
    assert stream.title == "Mine"
    assert keys.matches(key, stream.key_hash)


def test_owner_updates_regenerates_and_deletes(auth_client, user):
    stream, old_key = make_stream(user, title="Before")
    url = f"/api/v1/streams/{stream.pk}/"
    response = auth_client.patch(url, {"title": "After", "keep_recordings": False}, format="json")
    assert response.status_code == 200
    assert response.json()["title"] == "After"
    assert response.json()["keep_recordings"] is False
    put = auth_client.put(url, {"title": "Put", "description": "d"}, format="json")
    assert put.status_code == 200
    assert put.json()["description"] == "d"
    rotated = auth_client.post(url + "regenerate-key/")
    assert rotated.status_code == 200
    new_key = rotated.json()["stream_key"]
    stream.refresh_from_db()
    assert keys.matches(new_key, stream.key_hash)
    assert not keys.matches(old_key, stream.key_hash)
    assert auth_client.delete(url).status_code == 204
    assert not Stream.objects.filter(pk=stream.pk).exists()
    assert_error(auth_client.get(url), 404, "not_found")


def test_staff_can_change_anyones_stream(staff_client, user):
    stream, _ = make_stream(user, title="User's")
    response = staff_client.patch(f"/api/v1/streams/{stream.pk}/", {"title": "Moderated"}, format="json")
    assert response.status_code == 200
    assert "key_hint" in response.json()
    assert staff_client.delete(f"/api/v1/streams/{stream.pk}/").status_code == 204


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"title": ""}, "title"),
        ({"title": "   "}, "title"),
        ({"title": "x" * 141}, "title"),
        ({"title": "x" * 100_000}, "title"),
        ({"title": 12}, "title"),
        ({"title": ["a"]}, "title"),
        ({"title": None}, "title"),
        ({"title": "ok", "keep_recordings": "yes"}, "keep_recordings"),
        ({"title": "ok", "description": "d" * 5001}, "description"),
        ({}, "title"),
    ],
)
def test_malformed_create_is_400_with_field_errors(auth_client, payload, field):
    assert_error(auth_client.post("/api/v1/streams/", payload, format="json"), 400, field=field)
    assert not Stream.objects.exists()


def test_invalid_json_and_wrong_content_type(auth_client):
    bad = auth_client.post("/api/v1/streams/", data='{"title": ', content_type="application/json")
    assert_error(bad, 400, "parse_error")
    form = auth_client.post("/api/v1/streams/", data="title=x", content_type="application/x-www-form-urlencoded")
    assert_error(form, 415, "unsupported_media_type")
    not_object = auth_client.post("/api/v1/streams/", data="[1, 2]", content_type="application/json")
    assert_error(not_object, 400)
    assert not Stream.objects.exists()


def test_list_is_paginated_and_filterable(api_client, user, other_user):
    live, _ = make_stream(user, title="Alpha live")
    make_stream(user, title="Beta")
    make_stream(other_user, title="Gamma")
    Stream.objects.filter(pk=live.pk).update(status=StreamStatus.LIVE)

    page = api_client.get("/api/v1/streams/?limit=2").json()
    assert page["count"] == 3
    assert len(page["results"]) == 2
    assert page["next"] is not None
    assert [s["title"] for s in api_client.get("/api/v1/streams/?status=live").json()["results"]] == ["Alpha live"]
    by_owner = api_client.get(f"/api/v1/streams/?owner={other_user.username}").json()["results"]
    assert [s["title"] for s in by_owner] == ["Gamma"]
    assert [s["title"] for s in api_client.get("/api/v1/streams/?search=beta").json()["results"]] == ["Beta"]
    ordered = api_client.get("/api/v1/streams/?ordering=title").json()["results"]
    assert [s["title"] for s in ordered] == ["Alpha live", "Beta", "Gamma"]
    api_client.force_authenticate(other_user)
    assert [s["title"] for s in api_client.get("/api/v1/streams/?mine=true").json()["results"]] == ["Gamma"]


@pytest.mark.parametrize("query", ["status=bogus", "limit=-1", "limit=abc", "offset=x", "limit=1000", "mine=maybe"])
def test_bad_query_parameters_are_400(api_client, user, query):
    make_stream(user)
    assert_error(api_client.get(f"/api/v1/streams/?{query}"), 400)


def test_live_status_and_viewer_count(api_client, user):
    stream, _ = make_stream(user)
    off = api_client.get(f"/api/v1/streams/{stream.pk}/live/").json()
    assert off == {
        "id": stream.pk,
        "status": "offline",
        "is_live": False,
        "viewer_count": 0,
        "last_live_at": None,
        "session": None,
    }
    Stream.objects.filter(pk=stream.pk).update(status=StreamStatus.LIVE)
    expires = time.time() + 60
    redis_client().zadd(presence_key(stream.pk), {"viewer-a": expires, "viewer-b": expires, "gone": time.time() - 1})
    on = api_client.get(f"/api/v1/streams/{stream.pk}/live/").json()
    assert on["is_live"] is True
    assert on["viewer_count"] == 2
    assert api_client.get(f"/api/v1/streams/{stream.pk}/").json()["viewer_count"] == 2
    listed = api_client.get("/api/v1/streams/").json()["results"]
    assert listed[0]["viewer_count"] == 2


def test_unknown_ids_and_urls_are_json_404(api_client):
    assert_error(api_client.get("/api/v1/streams/999999/"), 404, "not_found")
    assert_error(api_client.get("/api/v1/streams/abc/"), 404)
    assert_error(api_client.get("/api/v1/streams/99999999999999999999/"), 404)
    assert_error(api_client.get("/api/v1/nothing-here/"), 404, "not_found")
    assert_error(api_client.get("/api/v1/streams/-1/sessions/"), 404)


def test_method_not_allowed_is_json(auth_client):
    assert_error(auth_client.post("/api/v1/me/", {}, format="json"), 405, "method_not_allowed")


def test_session_auth_needs_csrf(user):
    from rest_framework.test import APIClient

    from tests.factories import DEFAULT_PASSWORD

    client = APIClient(enforce_csrf_checks=True)
    assert client.login(username=user.username, password=DEFAULT_PASSWORD)
    assert client.get("/api/v1/me/").status_code == 200
    refused = client.post("/api/v1/streams/", {"title": "x"}, format="json")
    assert_error(refused, 403, "permission_denied")
    assert not Stream.objects.exists()


def test_token_auth_flow(api_client, user):
    from tests.factories import DEFAULT_PASSWORD

    token = api_client.post(
        "/api/v1/auth/token/", {"username": user.username, "password": DEFAULT_PASSWORD}, format="json"
    ).json()["token"]
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert api_client.post("/api/v1/streams/", {"title": "Via token"}, format="json").status_code == 201
    api_client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert_error(api_client.get("/api/v1/streams/"), 401, "authentication_failed")


def test_owner_list_does_not_leak_other_owners_keys(auth_client, user):
    make_stream(UserFactory.create(), title="Someone else")
    items = auth_client.get("/api/v1/streams/").json()["results"]
    assert items
    assert all("key_hint" not in item for item in items if item["owner"]["username"] != user.username)


def test_oversized_body_is_413_before_parsing(auth_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    body = '{"title": "' + "x" * 20_000 + '"}'
    assert_error(auth_client.post("/api/v1/streams/", data=body, content_type="application/json"), 413, "too_large")
    assert not Stream.objects.exists()


def test_lists_use_a_constant_number_of_queries(api_client, user, django_assert_max_num_queries):
    from webhooks import services as webhook_services

    for i in range(15):
        make_stream(UserFactory.create(), title=f"S{i}")
    with django_assert_max_num_queries(3):  # count + page (owners joined)
        assert len(api_client.get("/api/v1/streams/?limit=50").json()["results"]) == 15

    stream, _ = make_stream(user)
    from tests.api.test_sessions_api import _session

    for hours in range(1, 12):
        _session(stream, hours_ago=hours)
    with django_assert_max_num_queries(4):
        assert len(api_client.get(f"/api/v1/streams/{stream.pk}/replays/?limit=50").json()["results"]) == 11

    endpoint = webhook_services.create_endpoint(user, url="https://93.184.216.34/h", events=["stream.live"]).endpoint
    for _ in range(10):
        webhook_services.send_test_event(endpoint)
    api_client.force_authenticate(user)
    with django_assert_max_num_queries(6):  # user + endpoint + count + page + attempts (prefetched)
        assert len(api_client.get(f"/api/v1/webhooks/{endpoint.pk}/deliveries/").json()["results"]) == 10
