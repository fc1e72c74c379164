"""/api/v1/streams/<id>/simulcast/targets/: owner-only CRUD, the key never returned (stored
encrypted), URL checks, the per-stream quota, and the live status read from Redis."""

import pytest
from rest_framework.test import APIClient

from simulcast import crypto, services, state
from simulcast.models import RelayStatus, Target
from tests.api.conftest import assert_error
from tests.factories import make_stream

pytestmark = pytest.mark.django_db

PUBLIC = "rtmp://93.184.216.34/live2"  # an IP literal: no DNS lookup in tests
KEY = "abcd-efgh-ijkl-mnop-qrst"


def url(stream_id: int, target_id: int | None = None) -> str:
    base = f"/api/v1/streams/{stream_id}/simulcast/targets/"
    return base if target_id is None else f"{base}{target_id}/"


@pytest.fixture
def stream(user):
    return make_stream(user)[0]


@pytest.fixture
def other_client(other_user) -> APIClient:
    client = APIClient()
    client.force_authenticate(other_user)
    return client


def test_create_stores_the_key_encrypted_and_never_returns_it(auth_client, stream):
    response = auth_client.post(url(stream.pk), {"name": "YouTube", "url": PUBLIC, "key": KEY}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert KEY not in response.content.decode()
    assert "key" not in body
    assert body["key_hint"] == "abcd••••"
    assert (body["name"], body["url"], body["enabled"]) == ("YouTube", PUBLIC, True)
    assert body["status"]["status"] == RelayStatus.IDLE
    target = Target.objects.get(pk=body["id"])
    assert KEY not in target.key_encrypted
    assert crypto.decrypt(target.key_encrypted) == KEY
    for response in (auth_client.get(url(stream.pk)), auth_client.get(url(stream.pk, target.pk))):
        assert response.status_code == 200
        assert KEY not in response.content.decode()
    assert [t["id"] for t in auth_client.get(url(stream.pk)).json()] == [target.pk]


def test_a_short_key_shows_no_characters(auth_client, stream):
    body = auth_client.post(url(stream.pk), {"name": "X", "url": PUBLIC, "key": "short"}, format="json").json()
    assert body["key_hint"] == "••••"


def test_other_users_get_404_and_anonymous_401(auth_client, other_client, stream):
    target = services.create_target(stream, name="T", url=PUBLIC, key=KEY)
    assert_error(other_client.get(url(stream.pk)), 404)
    assert_error(other_client.post(url(stream.pk), {"name": "x", "url": PUBLIC, "key": KEY}, format="json"), 404)
    assert_error(other_client.get(url(stream.pk, target.pk)), 404)
    assert_error(other_client.patch(url(stream.pk, target.pk), {"enabled": False}, format="json"), 404)
    assert_error(other_client.delete(url(stream.pk, target.pk)), 404)
    assert APIClient().get(url(stream.pk)).status_code in (401, 403)
    target.refresh_from_db()
    assert target.enabled is True
    # A target id of another stream of the same owner is not reachable through this one.
    other_stream = make_stream(stream.owner)[0]
    assert_error(auth_client.get(url(other_stream.pk, target.pk)), 404)
    assert Target.objects.count() == 1


def test_staff_may_read(staff_client, stream):
    services.create_target(stream, name="T", url=PUBLIC, key=KEY)
    response = staff_client.get(url(stream.pk))
    assert response.status_code == 200
    assert KEY not in response.content.decode()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": "x", "url": "http://93.184.216.34/live", "key": KEY}, "url"),
        ({"name": "x", "url": "srt://93.184.216.34:9000", "key": KEY}, "url"),
        ({"name": "x", "url": "rtmp:///live", "key": KEY}, "url"),
        ({"name": "x", "url": "rtmp://user:pw@93.184.216.34/live", "key": KEY}, "url"),
        ({"name": "x", "url": "rtmp://93.184.216.34/live?x=1", "key": KEY}, "url"),
        ({"name": "x", "url": "rtmp://93.184.216.34:0/live", "key": KEY}, "url"),
        ({"name": "x", "url": "rtmp://93.184.216.34:99999/live", "key": KEY}, "url"),
        ({"name": "x", "url": "rtmp://127.0.0.1:1935/live", "key": KEY}, "url"),
        ({"name": "x", "url": "rtmp://10.1.2.3/live", "key": KEY}, "url"),
        ({"name": "x", "url": "rtmps://169.254.169.254/live", "key": KEY}, "url"),
        ({"name": "x", "url": "rtmp://[::1]/live", "key": KEY}, "url"),
        ({"name": "x", "url": 42, "key": KEY}, "url"),
        ({"name": "x", "url": "rtmp://" + "a" * 600, "key": KEY}, "url"),
        ({"name": "x", "url": PUBLIC}, "key"),
        ({"name": "x", "url": PUBLIC, "key": ""}, "key"),
        ({"name": "x", "url": PUBLIC, "key": "has space"}, "key"),
        ({"name": "x", "url": PUBLIC, "key": "k" * 501}, "key"),
        ({"name": "x", "url": PUBLIC, "key": 12345}, "key"),
        ({"name": "", "url": PUBLIC, "key": KEY}, "name"),
        ({"name": "   ", "url": PUBLIC, "key": KEY}, "name"),
        ({"url": PUBLIC, "key": KEY}, "name"),
        ({"name": "x", "url": PUBLIC, "key": KEY, "enabled": "yes"}, "enabled"),
    ],
)
def test_bad_input_is_400(auth_client, stream, payload, field):
    response = auth_client.post(url(stream.pk), payload, format="json")
    assert_error(response, 400, field=field)
    assert Target.objects.count() == 0


def test_loopback_targets_only_when_allowed(auth_client, stream, settings):
    settings.SIMULCAST_ALLOW_PRIVATE = True
    response = auth_client.post(
        url(stream.pk), {"name": "local", "url": "rtmp://127.0.0.1:1935/live", "key": KEY}, format="json"
    )
    assert response.status_code == 201


def test_quota_per_stream(auth_client, stream, settings):
    settings.SIMULCAST_MAX_TARGETS = 2
    for n in range(2):
        response = auth_client.post(url(stream.pk), {"name": f"t{n}", "url": PUBLIC, "key": KEY}, format="json")
        assert response.status_code == 201
    response = auth_client.post(url(stream.pk), {"name": "t3", "url": PUBLIC, "key": KEY}, format="json")
    assert_error(response, 403, "simulcast_target_limit")
    assert Target.objects.filter(stream=stream).count() == 2
    # The quota is per stream: another stream of the owner still has room.
    other = make_stream(stream.owner)[0]
    assert auth_client.post(url(other.pk), {"name": "o", "url": PUBLIC, "key": KEY}, format="json").status_code == 201


def test_update_and_delete(auth_client, stream):
    target = services.create_target(stream, name="T", url=PUBLIC, key=KEY)
    before = target.key_encrypted
    response = auth_client.patch(
        url(stream.pk, target.pk), {"enabled": False, "key": "wxyz-new-key-0123"}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert "wxyz-new-key-0123" not in response.content.decode()
    assert (response.json()["enabled"], response.json()["key_hint"]) == (False, "wxyz••••")
    target.refresh_from_db()
    assert target.key_encrypted != before
    assert crypto.decrypt(target.key_encrypted) == "wxyz-new-key-0123"
    assert (target.name, target.url) == ("T", PUBLIC)
    assert_error(
        auth_client.patch(url(stream.pk, target.pk), {"url": "rtmp://10.0.0.1/x"}, format="json"), 400, field="url"
    )
    assert_error(auth_client.patch(url(stream.pk, target.pk), {"key": ""}, format="json"), 400, field="key")
    assert auth_client.delete(url(stream.pk, target.pk)).status_code == 204
    assert not Target.objects.filter(pk=target.pk).exists()
    assert_error(auth_client.get(url(stream.pk, target.pk)), 404)


def test_status_comes_from_the_relay_while_live_then_from_the_database(auth_client, stream):
    target = services.create_target(stream, name="T", url=PUBLIC, key=KEY)
    report = services.StatusReport(
        stream_id=stream.pk, session_id=7, target_id=target.pk, target_name="T", status="failed",
        reason="connection refused by 93.184.216.34:1935", attempt=3, next_retry_at=2_000_000_000.0,
    )  # fmt: skip
    services.report_status(report, changed=True)
    status = auth_client.get(url(stream.pk)).json()[0]["status"]
    assert status["status"] == "failed"
    assert status["reason"] == "connection refused by 93.184.216.34:1935"
    assert status["attempt"] == 3
    assert status["next_retry_at"].startswith("2033-05-18")
    assert status["session"] == 7
    # A retry updates the working status only (no event, nothing written to PostgreSQL).
    services.report_status(services.StatusReport(stream.pk, 7, target.pk, "T", "connecting", attempt=4), changed=False)
    assert auth_client.get(url(stream.pk)).json()[0]["status"]["attempt"] == 4
    target.refresh_from_db()
    assert (target.last_status, target.last_attempt) == ("failed", 3)
    # The relay's record gone (its node died): not shown as still running.
    state.clear_status(stream.pk, target.pk)
    assert auth_client.get(url(stream.pk)).json()[0]["status"]["status"] == "failed"
    Target.objects.filter(pk=target.pk).update(last_status="live")
    assert auth_client.get(url(stream.pk)).json()[0]["status"]["status"] == "stopped"


def test_an_unreadable_key_is_reported_not_pushed(stream, settings):
    services.create_target(stream, name="T", url=PUBLIC, key=KEY)
    assert [p.key for p in services.targets_to_push({stream.pk})] == [KEY]
    settings.SIMULCAST_KEY_SECRET = "another-secret-entirely-different-0000"
    assert services.targets_to_push({stream.pk}) == []
    with pytest.raises(crypto.UnreadableKeyError):
        crypto.decrypt(Target.objects.get().key_encrypted)


def test_disabled_targets_are_not_pushed(stream):
    on = services.create_target(stream, name="on", url=PUBLIC, key=KEY)
    services.create_target(stream, name="off", url=PUBLIC, key=KEY, enabled=False)
    pushes = services.targets_to_push({stream.pk})
    assert [p.target_id for p in pushes] == [on.pk]
    assert pushes[0].url == PUBLIC
    assert services.push_url(pushes[0].url, pushes[0].key) == f"{PUBLIC}/{KEY}"


def test_rotating_the_secret_keeps_the_keys_readable_and_reencrypts_them(stream, settings):
    """New secret in SIMULCAST_KEY_SECRET, the old one in SIMULCAST_KEY_SECRET_PREVIOUS: stored keys
    still decrypt (relays keep running: their version is unchanged); the command re-encrypts them
    with the new secret, after which the old one is no longer needed."""
    from django.core.management import call_command
    from django.core.management.base import CommandError

    old = settings.SIMULCAST_KEY_SECRET
    a = services.create_target(stream, name="A", url=PUBLIC, key=KEY)
    b = services.create_target(stream, name="B", url=PUBLIC + "b", key="zzzz-yyyy-xxxx-wwww")
    before = {p.target_id: p.version for p in services.targets_to_push({stream.pk})}
    tokens = dict(Target.objects.values_list("pk", "key_encrypted"))

    settings.SIMULCAST_KEY_SECRET = "the-new-secret-0123456789-abcdefghijkl"
    assert services.targets_to_push({stream.pk}) == []  # the old secret is needed...
    settings.SIMULCAST_KEY_SECRET_PREVIOUS = [old]
    pushes = services.targets_to_push({stream.pk})  # ...and enough
    assert {p.target_id: p.key for p in pushes} == {a.pk: KEY, b.pk: "zzzz-yyyy-xxxx-wwww"}
    assert {p.target_id: p.version for p in pushes} == before

    call_command("rotate_simulcast_keys")
    after = dict(Target.objects.values_list("pk", "key_encrypted"))
    assert all(after[pk] != tokens[pk] for pk in tokens)
    settings.SIMULCAST_KEY_SECRET_PREVIOUS = []
    pushes = services.targets_to_push({stream.pk})
    assert {p.target_id: p.key for p in pushes} == {a.pk: KEY, b.pk: "zzzz-yyyy-xxxx-wwww"}
    assert {p.target_id: p.version for p in pushes} == before

    # A key no configured secret opens: reported, left alone, the command fails.
    Target.objects.filter(pk=b.pk).update(key_encrypted=tokens[b.pk])
    with pytest.raises(CommandError, match="1 key"):
        call_command("rotate_simulcast_keys")
    assert Target.objects.get(pk=b.pk).key_encrypted == tokens[b.pk]
