"""Login (site and admin) and sign-up limits, counted per client address as livestream.clientaddr
gives it: a spoofed X-Forwarded-For from an untrusted peer changes nothing, a trusted proxy's
does; the admin's login is refused before any password check once the limit is spent."""

import json
import re
import shlex
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.backends import ModelBackend
from django.test import Client
from django.urls import reverse

from accounts.models import User
from tests.browser import harness
from tests.factories import DEFAULT_PASSWORD, UserFactory

pytestmark = pytest.mark.django_db
ADMIN_LOGIN = "/admin/login/"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def password_checks(monkeypatch) -> list[str]:
    """Usernames whose password the authentication backend checked."""
    checked: list[str] = []
    real = ModelBackend.authenticate

    def spy(self, request, username=None, password=None, **kwargs):
        checked.append(username)
        return real(self, request, username=username, password=password, **kwargs)

    monkeypatch.setattr(ModelBackend, "authenticate", spy)
    return checked


def _login(path: str, username: str, password: str, peer: str = "198.51.100.10", forwarded_for: str | None = None):
    extra: dict[str, Any] = {"REMOTE_ADDR": peer}
    if forwarded_for is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded_for
    return Client().post(path, {"username": username, "password": password}, **extra)


def test_admin_login_brute_force_is_refused_before_the_password_is_checked(settings, password_checks):
    settings.LOGIN_RATE_LIMIT = 3
    staff = UserFactory.create(is_staff=True, is_superuser=True)
    for i in range(3):
        response = _login(ADMIN_LOGIN, staff.username, f"guess-{i}")
        assert response.status_code == 200
        assert "correct username and password" in response.content.decode()
    assert password_checks == [staff.username] * 3

    # Even the right password is now refused, and no password is checked at all.
    refused = _login(ADMIN_LOGIN, staff.username, DEFAULT_PASSWORD)
    assert refused.status_code == 429
    assert "Too many failed attempts" in refused.content.decode()
    assert "_auth_user_id" not in refused.client.session
    assert password_checks == [staff.username] * 3
    # The site's login form shares the counters: no second budget there.
    assert _login(reverse("accounts:login"), staff.username, DEFAULT_PASSWORD).status_code == 429
    assert password_checks == [staff.username] * 3


def test_admin_login_per_address_limit_and_normal_login(settings, password_checks):
    settings.LOGIN_RATE_LIMIT = 1  # 1 per username, 4 per address
    staff = UserFactory.create(is_staff=True, is_superuser=True)
    ok = _login(ADMIN_LOGIN, staff.username, DEFAULT_PASSWORD)
    assert ok.status_code == 302
    assert ok.client.session["_auth_user_id"] == str(staff.pk)
    # One address trying many usernames, with a made-up X-Forwarded-For each time.
    for i in range(4):
        assert _login(ADMIN_LOGIN, f"admin{i}", "x", forwarded_for=f"203.0.113.{i}").status_code == 200
    checks = len(password_checks)
    assert _login(ADMIN_LOGIN, staff.username, DEFAULT_PASSWORD, forwarded_for="203.0.113.99").status_code == 429
    assert len(password_checks) == checks
    # Another address is not locked out.
    assert _login(ADMIN_LOGIN, staff.username, DEFAULT_PASSWORD, peer="198.51.100.11").status_code == 302


def test_site_login_ignores_a_spoofed_forwarded_for(settings, user):
    settings.LOGIN_RATE_LIMIT = 1  # 4 failures per address
    login = reverse("accounts:login")
    for i in range(4):
        assert _login(login, f"nobody{i}", "x", forwarded_for=f"203.0.113.{i}").status_code == 400
    assert _login(login, user.username, DEFAULT_PASSWORD, forwarded_for="203.0.113.200").status_code == 429
    assert _login(login, user.username, DEFAULT_PASSWORD, peer="198.51.100.11").status_code == 302


def test_site_login_behind_a_trusted_proxy_counts_each_client(settings, user):
    settings.LOGIN_RATE_LIMIT = 1
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    login = reverse("accounts:login")
    for i in range(4):
        assert _login(login, f"nobody{i}", "x", peer="10.1.1.1", forwarded_for="203.0.113.5").status_code == 400
    # That client is locked out; another client behind the same proxy is not.
    assert _login(login, user.username, DEFAULT_PASSWORD, peer="10.1.1.1", forwarded_for="203.0.113.5").status_code == (
        429
    )
    assert _login(login, user.username, DEFAULT_PASSWORD, peer="10.1.1.1", forwarded_for="203.0.113.6").status_code == (
        302
    )


def _signup(username: str, peer: str = "198.51.100.20", forwarded_for: str | None = None):
    extra: dict[str, Any] = {"REMOTE_ADDR": peer}
    if forwarded_for is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded_for
    data = {
        "username": username,
        "email": f"{username}@example.com",
        "password1": "s3cret-pass-xyz",
        "password2": "s3cret-pass-xyz",
    }
    return Client().post(reverse("accounts:signup"), data, **extra)


def test_signup_page_is_throttled_per_address(settings):
    settings.SIGNUP_RATE_LIMIT = 2
    settings.SIGNUP_RATE_WINDOW_S = 600
    assert _signup("first").status_code == 302
    assert _signup("second", forwarded_for="203.0.113.1").status_code == 302
    refused = _signup("third", forwarded_for="203.0.113.2")
    assert refused.status_code == 429
    assert refused["Retry-After"] == "600"
    page = refused.content.decode()
    assert "Too many sign-ups" in page
    assert 'value="third"' in page  # what was typed is kept (passwords are not)
    assert not User.objects.filter(username="third").exists()
    assert _signup("third", peer="198.51.100.21").status_code == 302


def _procfile_web_flags() -> list[str]:
    """The uvicorn flags of the Procfile's ``web:`` line (as ``make run`` starts it), without
    where it listens and how many workers it runs."""
    line = next(ln for ln in (ROOT / "Procfile").read_text().splitlines() if ln.startswith("web:"))
    argv = shlex.split(re.sub(r"\$\{\w+:-[^}]*\}", "0", line.removeprefix("web:")))
    flags = argv[argv.index("livestream.asgi:application") + 1 :]
    placed = {"--host", "--port", "--workers"}
    return [flag for i, flag in enumerate(flags) if flag not in placed and (i == 0 or flags[i - 1] not in placed)]


def _token_attempt(base: str, username: str, forwarded_for: str) -> int:
    body = json.dumps({"username": username, "password": "wrong"}).encode()
    request = urllib.request.Request(  # noqa: S310 - a local test server
        f"{base}/api/v1/auth/token/",
        data=body,
        headers={"Content-Type": "application/json", "X-Forwarded-For": forwarded_for},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.mark.parametrize(("trusted", "expected"), [("", 429), ("127.0.0.1/32", 401)])
def test_the_web_process_takes_the_client_address_from_trusted_proxies_only(
    transactional_db, tmp_path, trusted, expected
):
    """Through the real uvicorn of the Procfile, from 127.0.0.1 (which uvicorn's own proxy-header
    handling trusts by default): a client varying X-Forwarded-For keeps one login budget unless
    TRUSTED_PROXIES names the peer; then each forwarded address is a client of its own."""
    flags = _procfile_web_flags()
    assert "--ws-per-message-deflate" in flags  # the line was read
    env = {"LOGIN_RATE_LIMIT": "1", "TRUSTED_PROXIES": trusted}
    with harness.asgi_server(env, tmp_path / "web.log", uvicorn_args=flags) as base:
        codes = [_token_attempt(base, f"nobody{i}", f"203.0.113.{i}") for i in range(4)]
        assert codes == [401] * 4
        assert _token_attempt(base, "nobody9", "203.0.113.9") == expected
