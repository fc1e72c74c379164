import pghistory.models
import pytest
from django.test import Client
from django.urls import reverse

from accounts.models import User
from tests.factories import DEFAULT_PASSWORD

pytestmark = pytest.mark.django_db


def test_signup_logs_in_and_lands_on_dashboard():
    client = Client()
    response = client.post(
        reverse("accounts:signup"),
        {
            "username": "alice",
            "email": "Alice@Example.com",
            "display_name": "Alice",
            "password1": "s3cret-pass-xyz",
            "password2": "s3cret-pass-xyz",
        },
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("streams:dashboard")
    user = User.objects.get(username="alice")
    assert user.email == "alice@example.com"
    assert client.get(reverse("streams:dashboard")).status_code == 200


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (
            {
                "username": "bob",
                "email": "not-an-email",
                "password1": "s3cret-pass-xyz",
                "password2": "s3cret-pass-xyz",
            },
            "email",
        ),
        (
            {
                "username": "bob",
                "email": "b@example.com",
                "password1": "s3cret-pass-xyz",
                "password2": "other-pass-xyz",
            },
            "password2",
        ),
        ({"username": "bob", "email": "b@example.com", "password1": "123", "password2": "123"}, "password2"),
        (
            {
                "username": "bad name!",
                "email": "b@example.com",
                "password1": "s3cret-pass-xyz",
                "password2": "s3cret-pass-xyz",
            },
            "username",
        ),
    ],
)
def test_signup_bad_input_gets_clear_errors(data, field):
    response = Client().post(reverse("accounts:signup"), data)
    assert response.status_code == 400
    assert field in response.context["form"].errors
    assert not User.objects.filter(username=data["username"]).exists()


def test_email_is_unique_case_insensitively(user):
    response = Client().post(
        reverse("accounts:signup"),
        {
            "username": "other",
            "email": user.email.upper(),
            "password1": "s3cret-pass-xyz",
            "password2": "s3cret-pass-xyz",
        },
    )
    assert response.status_code == 400
    assert "already exists" in str(response.context["form"].errors["email"])


def test_login_is_rate_limited(user, settings):
    settings.LOGIN_RATE_LIMIT = 3
    client = Client()
    for _ in range(3):
        assert (
            client.post(reverse("accounts:login"), {"username": user.username, "password": "wrong"}).status_code == 400
        )
    # Even the right password is refused while throttled.
    blocked = client.post(reverse("accounts:login"), {"username": user.username, "password": DEFAULT_PASSWORD})
    assert blocked.status_code == 429
    assert "Too many failed attempts" in blocked.content.decode()


def test_login_logout_and_open_redirect_guard(user):
    client = Client()
    response = client.post(
        reverse("accounts:login") + "?next=https://evil.example/",
        {"username": user.username, "password": DEFAULT_PASSWORD},
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("streams:dashboard")
    assert client.post(reverse("accounts:logout")).status_code == 302
    assert client.get(reverse("streams:dashboard")).status_code == 302


def test_logout_requires_post_with_csrf(user):
    client = Client(enforce_csrf_checks=True)
    client.login(username=user.username, password=DEFAULT_PASSWORD)
    assert client.get(reverse("accounts:logout")).status_code == 405
    assert client.post(reverse("accounts:logout")).status_code == 403  # no CSRF token


def test_profile_update_and_history(user):
    client = Client()
    client.login(username=user.username, password=DEFAULT_PASSWORD)
    response = client.post(
        reverse("accounts:profile"),
        {"display_name": "New Name", "email": user.email, "avatar_url": "https://img.example/a.png", "bio": "hi"},
    )
    assert response.status_code == 302
    user.refresh_from_db()
    assert user.display_name == "New Name"
    events = list(pghistory.models.Events.objects.tracks(user))
    assert [e.pgh_label for e in events].count("insert") == 1
    last = next(e for e in events if e.pgh_label == "update" and e.pgh_data["display_name"] == "New Name")
    assert last.pgh_context["user"] == user.pk
    assert "password" not in last.pgh_data


def test_profile_rejects_bad_avatar_url(user):
    client = Client()
    client.login(username=user.username, password=DEFAULT_PASSWORD)
    response = client.post(
        reverse("accounts:profile"),
        {"display_name": "x", "email": user.email, "avatar_url": "javascript:alert(1)", "bio": ""},
    )
    assert response.status_code == 400
    assert "avatar_url" in response.context["form"].errors


def test_password_change(user):
    client = Client()
    client.login(username=user.username, password=DEFAULT_PASSWORD)
    response = client.post(
        reverse("accounts:password_change"),
        {"old_password": DEFAULT_PASSWORD, "new_password1": "another-s3cret-42", "new_password2": "another-s3cret-42"},
    )
    assert response.status_code == 302
    user.refresh_from_db()
    assert user.check_password("another-s3cret-42")
