"""SSRF guard: which webhook URLs we agree to call.

Only ``http``/``https`` URLs with a host are accepted. Unless ``settings.WEBHOOK_ALLOW_PRIVATE``
is true, a URL whose host resolves to a loopback, private, link-local, multicast, reserved or
unspecified address is refused, both when the endpoint is saved and again right before each
request (DNS may change in between). Local development and tests set WEBHOOK_ALLOW_PRIVATE=1
to reach receivers on 127.0.0.1. Redirects are never followed by the sender.
"""

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings

ALLOWED_SCHEMES = ("http", "https")


class UnsafeURLError(ValueError):
    """The URL may not be called; the message says why (safe to show to the owner)."""


def check_url_syntax(url: str) -> None:
    """Raise ``UnsafeURLError`` unless ``url`` is an http(s) URL with a host and no credentials."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeURLError("Enter a valid http(s) URL.") from None
    if parts.scheme not in ALLOWED_SCHEMES:
        raise UnsafeURLError("Only http:// and https:// URLs are allowed.")
    if not parts.hostname:
        raise UnsafeURLError("The URL needs a host name.")
    if parts.username or parts.password:
        raise UnsafeURLError("Credentials in the URL are not allowed; use the signature to authenticate us.")
    if port == 0:
        raise UnsafeURLError("Port 0 is not a valid port.")


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_url_target(url: str) -> None:
    """Syntax check, then (unless private targets are allowed) refuse non-public addresses.

    Resolves the host with the system resolver: a name that does not resolve is refused too.
    """
    check_url_syntax(url)
    if settings.WEBHOOK_ALLOW_PRIVATE:
        return
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        raise UnsafeURLError(f"The host {host!r} does not resolve.") from None
    if not infos or not all(_is_public(str(info[4][0])) for info in infos):
        raise UnsafeURLError("The URL points to a private or local address; only public addresses are allowed.")
