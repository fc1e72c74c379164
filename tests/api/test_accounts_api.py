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


@pytest.mark.usefixtures("tight_rates")
def test_a_spoofed_forwarded_for_does_not_change_the_throttle_identity(api_client):
    for i in range(3):
        response = api_client.get("/api/v1/streams/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=f"203.0.113.{i}")
        assert response.status_code == 200
    # DRF's own get_ident would have believed the header and given each value a new budget.
    limited = api_client.get("/api/v1/streams/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.77")
    assert_error(limited, 429, "throttled")


@pytest.mark.usefixtures("tight_rates")
def test_behind_a_trusted_proxy_each_client_has_its_own_budget(api_client, settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    for _ in range(3):
        response = api_client.get("/api/v1/streams/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.1")
        assert response.status_code == 200
    client_one = api_client.get("/api/v1/streams/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.1")
    assert_error(client_one, 429, "throttled")
    # Another client through the same proxy, and the same client through another proxy hop.
    other = api_client.get("/api/v1/streams/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.2")
    assert other.status_code == 200
    relayed = api_client.get("/api/v1/streams/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="203.0.113.1, 10.9.9.9")
    assert_error(relayed, 429, "throttled")


@pytest.mark.usefixtures("tight_rates")
def test_scoped_auth_throttle_ignores_a_spoofed_forwarded_for(api_client, user):
    body = {"username": user.username, "password": DEFAULT_PASSWORD}
    for i in range(2):
        response = api_client.post(
            "/api/v1/auth/token/", body, format="json", REMOTE_ADDR="10.0.0.3", HTTP_X_FORWARDED_FOR=f"192.0.2.{i}"
        )
        assert response.status_code == 200
    response = api_client.post(
        "/api/v1/auth/token/", body, format="json", REMOTE_ADDR="10.0.0.3", HTTP_X_FORWARDED_FOR="192.0.2.9"
    )
    assert_error(response, 429, "throttled")


def test_token_login_failures_count_per_real_address(api_client, user, settings):
    settings.LOGIN_RATE_LIMIT = 1  # 4 failures per address
    for i in range(4):
        response = api_client.post(
            "/api/v1/auth/token/",
            {"username": f"nobody{i}", "password": "x"},
            format="json",
            REMOTE_ADDR="10.0.0.4",
            HTTP_X_FORWARDED_FOR=f"192.0.2.{i}",
        )
        assert_error(response, 401)
    good = {"username": user.username, "password": DEFAULT_PASSWORD}
    refused = api_client.post(
        "/api/v1/auth/token/", good, format="json", REMOTE_ADDR="10.0.0.4", HTTP_X_FORWARDED_FOR="192.0.2.99"
    )
    assert_error(refused, 429, "throttled")
    assert api_client.post("/api/v1/auth/token/", good, format="json", REMOTE_ADDR="10.0.0.5").status_code == 200


def test_registration_is_throttled_per_address_with_the_signup_page(api_client, settings):
    from django.test import Client

    settings.SIGNUP_RATE_LIMIT = 2
    settings.SIGNUP_RATE_WINDOW_S = 900

    def register(name: str, **extra):
        body = {"username": name, "email": f"{name}@example.com", "password": "long-enough-pass-42"}
        return api_client.post("/api/v1/auth/register/", body, format="json", **extra)

    assert register("apione", REMOTE_ADDR="10.0.0.6").status_code == 201
    form = {"username": "pageone", "email": "p@example.com", "password1": "s3cret-pass-xyz"}
    page = Client().post("/accounts/signup/", {**form, "password2": form["password1"]}, REMOTE_ADDR="10.0.0.6")
    assert page.status_code == 302
    refused = register("apitwo", REMOTE_ADDR="10.0.0.6", HTTP_X_FORWARDED_FOR="192.0.2.1")
    error = assert_error(refused, 429, "throttled")
    assert "sign-ups" in error["message"]
    assert refused["Retry-After"] == "900"
    assert not User.objects.filter(username="apitwo").exists()
    assert register("apitwo", REMOTE_ADDR="10.0.0.7").status_code == 201
