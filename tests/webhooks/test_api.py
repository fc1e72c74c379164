"""/api/v1/webhooks/: CRUD, secret shown once, delivery log, test event, and the boundaries
between users (another user's endpoint or delivery is a 404, never a 500)."""

import pytest
from rest_framework.throttling import SimpleRateThrottle

from tests.api.conftest import assert_error
from webhooks import services
from webhooks.models import Delivery, DeliveryStatus, Endpoint

pytestmark = pytest.mark.django_db


@pytest.fixture
def endpoint_of(allow_private):
    def make(user, **kwargs):
        kwargs.setdefault("url", "http://127.0.0.1:9/hook")
        kwargs.setdefault("events", ["stream.live"])
        return services.create_endpoint(user, **kwargs).endpoint

    return make


@pytest.mark.usefixtures("allow_private")
def test_create_shows_secret_once(auth_client, user):
    response = auth_client.post(
        "/api/v1/webhooks/",
        {"url": "http://127.0.0.1:9/hook", "events": ["stream.live", "replay.ready"], "description": "CI"},
        format="json",
    )
    assert response.status_code == 201
    body = response.json()
    assert body["secret"].startswith("whsec_")
    assert body["events"] == ["replay.ready", "stream.live"]
    assert body["is_active"] is True
    assert body["owner"] == user.username
    endpoint = Endpoint.objects.get(pk=body["id"])
    assert endpoint.secret == body["secret"]
    assert "secret" not in auth_client.get(f"/api/v1/webhooks/{endpoint.pk}/").json()
    assert all("secret" not in e for e in auth_client.get("/api/v1/webhooks/").json()["results"])


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"url": "ftp://example.com/x", "events": ["stream.live"]}, "url"),
        ({"url": "javascript:alert(1)", "events": ["stream.live"]}, "url"),
        ({"url": "http://127.0.0.1:8000/admin/", "events": ["stream.live"]}, "url"),
        ({"url": "http://169.254.169.254/", "events": ["stream.live"]}, "url"),
        ({"url": "https://93.184.216.34/" + "a" * 600, "events": ["stream.live"]}, "url"),
        ({"url": 42, "events": ["stream.live"]}, "url"),
        ({"url": "https://93.184.216.34/hook", "events": []}, "events"),
        ({"url": "https://93.184.216.34/hook", "events": ["stream.explode"]}, "events"),
        ({"url": "https://93.184.216.34/hook", "events": "stream.live"}, "events"),
        ({"url": "https://93.184.216.34/hook"}, "events"),
        ({"url": "https://93.184.216.34/hook", "events": ["stream.live"], "is_active": "yes"}, "is_active"),
    ],
)
def test_create_rejects_bad_input(auth_client, settings, payload, field):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    assert_error(auth_client.post("/api/v1/webhooks/", payload, format="json"), 400, field=field)
    assert not Endpoint.objects.exists()


def test_public_url_is_accepted_without_private_opt_in(auth_client, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    response = auth_client.post(
        "/api/v1/webhooks/", {"url": "https://93.184.216.34/hook", "events": ["stream.offline"]}, format="json"
    )
    assert response.status_code == 201


@pytest.mark.usefixtures("allow_private")
def test_per_user_cap(auth_client, settings):
    settings.WEBHOOK_MAX_ENDPOINTS_PER_USER = 2
    payload = {"url": "http://127.0.0.1:9/hook", "events": ["stream.live"]}
    for _ in range(2):
        assert auth_client.post("/api/v1/webhooks/", payload, format="json").status_code == 201
    assert_error(auth_client.post("/api/v1/webhooks/", payload, format="json"), 400, field="url")
    assert Endpoint.objects.count() == 2


def test_update_rotate_delete(auth_client, user, endpoint_of):
    endpoint = endpoint_of(user)
    old_secret = endpoint.secret
    url = f"/api/v1/webhooks/{endpoint.pk}/"
    patched = auth_client.patch(url, {"is_active": False, "events": ["stream.offline"]}, format="json")
    assert patched.status_code == 200
    assert patched.json()["is_active"] is False
    assert_error(auth_client.patch(url, {"url": "gopher://x"}, format="json"), 400, field="url")
    rotated = auth_client.post(url + "rotate-secret/")
    assert rotated.status_code == 200
    endpoint.refresh_from_db()
    assert rotated.json()["secret"] == endpoint.secret != old_secret
    assert auth_client.delete(url).status_code == 204
    assert not Endpoint.objects.filter(pk=endpoint.pk).exists()


def test_other_users_endpoints_are_invisible(api_client, user, other_user, endpoint_of):
    theirs = endpoint_of(other_user)
    delivery = services.send_test_event(theirs)
    api_client.force_authenticate(user)
    assert api_client.get("/api/v1/webhooks/").json()["count"] == 0
    base = f"/api/v1/webhooks/{theirs.pk}/"
    assert_error(api_client.get(base), 404)
    assert_error(api_client.patch(base, {"is_active": False}, format="json"), 404)
    assert_error(api_client.delete(base), 404)
    assert_error(api_client.post(base + "rotate-secret/"), 404)
    assert_error(api_client.post(base + "test/"), 404)
    assert_error(api_client.get(base + "deliveries/"), 404)
    assert_error(api_client.get(f"{base}deliveries/{delivery.pk}/"), 404)
    theirs.refresh_from_db()
    assert theirs.is_active is True
    assert Delivery.objects.filter(endpoint=theirs).count() == 1


def test_anonymous_gets_401_everywhere(api_client, user, endpoint_of):
    endpoint = endpoint_of(user)
    assert_error(api_client.get("/api/v1/webhooks/"), 401)
    assert_error(api_client.post("/api/v1/webhooks/", {}, format="json"), 401)
    assert_error(api_client.get(f"/api/v1/webhooks/{endpoint.pk}/deliveries/"), 401)
    assert_error(api_client.post(f"/api/v1/webhooks/{endpoint.pk}/test/"), 401)


def test_staff_sees_everyones_endpoints(staff_client, user, endpoint_of):
    endpoint = endpoint_of(user)
    assert staff_client.get(f"/api/v1/webhooks/{endpoint.pk}/").status_code == 200
    assert staff_client.get("/api/v1/webhooks/").json()["count"] == 1


def test_test_event_is_queued_and_listed_in_the_log(auth_client, user, endpoint_of, django_capture_on_commit_callbacks):
    endpoint = endpoint_of(user)
    with django_capture_on_commit_callbacks() as callbacks:
        response = auth_client.post(f"/api/v1/webhooks/{endpoint.pk}/test/")
    assert response.status_code == 202
    assert len(callbacks) == 1  # the delivery task is enqueued only after commit
    body = response.json()
    assert body["event"] == "webhook.test"
    assert body["status"] == DeliveryStatus.PENDING
    assert body["payload"]["id"] == body["event_id"]
    log = auth_client.get(f"/api/v1/webhooks/{endpoint.pk}/deliveries/").json()
    assert [d["id"] for d in log["results"]] == [body["id"]]
    one = auth_client.get(f"/api/v1/webhooks/{endpoint.pk}/deliveries/{body['id']}/").json()
    assert one["attempt_log"] == []
    filtered = auth_client.get(f"/api/v1/webhooks/{endpoint.pk}/deliveries/?status=failed").json()
    assert filtered["count"] == 0
    assert_error(auth_client.get(f"/api/v1/webhooks/{endpoint.pk}/deliveries/?status=exploded"), 400)


def test_test_event_is_throttled_per_user(auth_client, user, endpoint_of, settings, monkeypatch):
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"anon": "100/min", "user": "100/min"})
    settings.WEBHOOK_TEST_RATE = "2/min"
    endpoint = endpoint_of(user)
    for _ in range(2):
        assert auth_client.post(f"/api/v1/webhooks/{endpoint.pk}/test/").status_code == 202
    assert_error(auth_client.post(f"/api/v1/webhooks/{endpoint.pk}/test/"), 429, "throttled")
    assert Delivery.objects.count() == 2
