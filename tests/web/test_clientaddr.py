"""The client's address: X-Forwarded-For is believed only from trusted proxies."""

import pytest
from django.test import RequestFactory, override_settings

from livestream import clientaddr


@pytest.mark.parametrize(
    ("trusted", "peer", "xff", "expected"),
    [
        ([], "203.0.113.9", "1.2.3.4", "203.0.113.9"),  # no trusted proxy: header ignored
        (["10.0.0.0/8"], "203.0.113.9", "1.2.3.4", "203.0.113.9"),  # peer not a proxy: spoof ignored
        (["10.0.0.0/8"], "10.0.0.5", "198.51.100.7", "198.51.100.7"),
        # the client prepended a fake hop: the proxy appended the real one, read from the right
        (["10.0.0.0/8"], "10.0.0.5", "1.1.1.1, 198.51.100.7", "198.51.100.7"),
        (["10.0.0.0/8"], "10.0.0.5", "198.51.100.7, 10.0.0.9", "198.51.100.7"),  # two proxies
        (["10.0.0.0/8"], "10.0.0.5", "garbage", "10.0.0.5"),
        (["10.0.0.0/8"], "10.0.0.5", "", "10.0.0.5"),
        ([], "::ffff:192.0.2.1", None, "192.0.2.1"),
        ([], None, "1.2.3.4", "unknown"),
    ],
)
def test_resolve(trusted: list[str], peer: str | None, xff: str | None, expected: str) -> None:
    with override_settings(TRUSTED_PROXIES=trusted):
        assert clientaddr.resolve(peer, xff) == expected


def test_scope() -> None:
    scope = {"client": ("10.1.1.1", 5555), "headers": [(b"x-forwarded-for", b"192.0.2.44")]}
    with override_settings(TRUSTED_PROXIES=["10.0.0.0/8"]):
        assert clientaddr.client_ip_from_scope(scope) == "192.0.2.44"
    with override_settings(TRUSTED_PROXIES=[]):
        assert clientaddr.client_ip_from_scope(scope) == "10.1.1.1"


@pytest.mark.parametrize(("trusted", "believed"), [([], False), (["127.0.0.0/8"], True)])
def test_forwarded_proto_only_from_a_trusted_proxy(trusted: list[str], believed: bool) -> None:
    # Production trusts X-Forwarded-Proto (SECURE_PROXY_SSL_HEADER): a client that reaches the web
    # process directly must not make a plain-HTTP request count as HTTPS.
    seen: list[bool] = []
    middleware = clientaddr.ForwardedHeadersMiddleware(lambda request: seen.append(request.is_secure()))
    request = RequestFactory().get("/", HTTP_X_FORWARDED_PROTO="https", REMOTE_ADDR="127.0.0.1")
    with override_settings(TRUSTED_PROXIES=trusted, SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https")):
        middleware(request)
    assert seen == [believed]
