"""/api/v1/auth/token/, /auth/register/, /me/ and API throttling."""

import pytest
from rest_framework.throttling import SimpleRateThrottle

from accounts.models import User
from tests.api.conftest import assert_error
from tests.factories import DEFAULT_PASSWORD

pytestmark = pytest.mark.django_db


def test_register_then_token_then_me(api_client):
    created = api_client.post(
        "/api/v1/auth/register/",
        {"username": "newbie", "email": "New@Example.com", "password": "long-enough-pass-42"},
        format="json",
    )
    assert created.status_code == 201
    assert created.json()["email"] == "new@example.com"
    assert "password" not in created.json()
    token = api_client.post(
        "/api/v1/auth/token/", {"username": "newbie", "password": "long-enough-pass-42"}, format="json"
    )
    assert token.status_code == 200
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token.json()['token']}")
    me = api_client.get("/api/v1/me/").json()
    assert me["username"] == "newbie"
    assert me["avatar_url"] == ""


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"username": "a b", "email": "x@example.com", "password": "long-enough-pass-42"}, "username"),
        ({"username": 5, "email": "x@example.com", "password": "long-enough-pass-42"}, "username"),
        ({"username": "ok", "email": "not-an-email", "password": "long-enough-pass-42"}, "email"),
        ({"username": "ok", "email": "x@example.com", "password": "123"}, "password"),
        ({"username": "u" * 151, "email": "x@example.com", "password": "long-enough-pass-42"}, "username"),
        ({"email": "x@example.com", "password": "long-enough-pass-42"}, "username"),
    ],
)
def test_register_rejects_bad_input(api_client, payload, field):
    assert_error(api_client.post("/api/v1/auth/register/", payload, format="json"), 400, field=field)
    assert not User.objects.filter(email="x@example.com").exists()


def test_register_refuses_taken_username_and_email(api_client, user):
    dup_name = {"username": user.username.upper(), "email": "other@example.com", "password": "long-enough-pass-42"}
    assert_error(api_client.post("/api/v1/auth/register/", dup_name, format="json"), 400, field="username")
    dup_mail = {"username": "fresh", "email": user.email.upper(), "password": "long-enough-pass-42"}
    assert_error(api_client.post("/api/v1/auth/register/", dup_mail, format="json"), 400, field="email")


def test_wrong_password_gets_no_token(api_client, user):
    response = api_client.post("/api/v1/auth/token/", {"username": user.username, "password": "nope"}, format="json")
    error = assert_error(response, 401, "authentication_failed")
    assert response["WWW-Authenticate"].startswith("Token")
    assert "token" not in response.json()
    assert error["message"] == "Wrong username or password."


def test_me_needs_auth_and_updates_profile(api_client, auth_client, user, other_user):
    assert_error(api_client.get("/api/v1/me/"), 401)
    response = auth_client.patch(
        "/api/v1/me/", {"display_name": "Neo", "avatar_url": "https://img.example/neo.png", "bio": "hi"}, format="json"
    )
    assert response.status_code == 200
    user.refresh_from_db()
    assert (user.display_name, user.avatar_url, user.bio) == ("Neo", "https://img.example/neo.png", "hi")
    taken = auth_client.patch("/api/v1/me/", {"email": other_user.email}, format="json")
    assert_error(taken, 400, field="email")
    for bad in ({"avatar_url": "javascript:alert(1)"}, {"bio": "b" * 2001}, {"display_name": 7}, {"email": ""}):
        assert_error(auth_client.patch("/api/v1/me/", bad, format="json"), 400, field=next(iter(bad)))
    user.refresh_from_db()
    assert user.display_name == "Neo"
    # Read-only fields are ignored, never written.
    auth_client.patch("/api/v1/me/", {"username": "root", "id": 1}, format="json")
    user.refresh_from_db()
    assert user.username != "root"


@pytest.fixture
def tight_rates(monkeypatch):
    rates = {"anon": "3/min", "user": "4/min", "auth": "2/min"}
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", rates)
    return rates


@pytest.mark.usefixtures("tight_rates")
def test_anonymous_requests_are_throttled_per_ip(api_client):
    for _ in range(3):
        assert api_client.get("/api/v1/streams/", REMOTE_ADDR="10.0.0.1").status_code == 200
    limited = api_client.get("/api/v1/streams/", REMOTE_ADDR="10.0.0.1")
    assert_error(limited, 429, "throttled")
    assert int(limited["Retry-After"]) > 0
    # Another address has its own budget.
    assert api_client.get("/api/v1/streams/", REMOTE_ADDR="10.0.0.2").status_code == 200


@pytest.mark.usefixtures("tight_rates")
def test_users_are_throttled_per_user_not_per_ip(api_client, user, other_user):
    api_client.force_authenticate(user)
    for i in range(4):
        assert api_client.get("/api/v1/streams/", REMOTE_ADDR=f"10.0.1.{i}").status_code == 200
    assert_error(api_client.get("/api/v1/streams/", REMOTE_ADDR="10.0.1.99"), 429, "throttled")
    api_client.force_authenticate(other_user)
    assert api_client.get("/api/v1/streams/", REMOTE_ADDR="10.0.1.99").status_code == 200


@pytest.mark.usefixtures("tight_rates")
def test_token_endpoint_has_its_own_tight_limit(api_client, user):
    body = {"username": user.username, "password": DEFAULT_PASSWORD}
    for _ in range(2):
        assert api_client.post("/api/v1/auth/token/", body, format="json").status_code == 200
    assert_error(api_client.post("/api/v1/auth/token/", body, format="json"), 429, "throttled")
