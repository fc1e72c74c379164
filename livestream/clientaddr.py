"""The one notion of a client's address, for every throttle, cap and log line.

Behind a reverse proxy or load balancer ``REMOTE_ADDR`` (HTTP) and ``scope["client"]``
(ASGI/WebSocket) are the proxy's address. ``X-Forwarded-For`` is only believed when the peer
is a trusted proxy (``TRUSTED_PROXIES``, a list of CIDRs): the header is then read from the
right, skipping addresses that are themselves trusted proxies, and the first untrusted one is
the client. A client that sends its own ``X-Forwarded-For`` to a server with no trusted proxy
(or from outside the trusted networks) gets its real peer address, whatever the header says.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.http import HttpRequest

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=8)
def _networks(spec: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in spec if item.strip())


def trusted_networks() -> tuple[IPNetwork, ...]:
    return _networks(tuple(getattr(settings, "TRUSTED_PROXIES", ()) or ()))


def _parse(addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    addr = addr.strip()
    if addr.startswith("[") and "]" in addr:  # "[::1]:443"
        addr = addr[1 : addr.index("]")]
    elif addr.count(":") == 1:  # "1.2.3.4:5678"
        addr = addr.split(":", 1)[0]
    try:
        parsed = ipaddress.ip_address(addr)
    except ValueError:
        return None
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return parsed.ipv4_mapped
    return parsed


def _is_trusted(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, networks: Iterable[IPNetwork]) -> bool:
    return any(addr.version == net.version and addr in net for net in networks)


def resolve(peer: str | None, forwarded_for: str | None) -> str:
    """The client's address given the TCP peer and the ``X-Forwarded-For`` header value."""
    peer_ip = _parse(peer or "")
    if peer_ip is None:
        return "unknown"
    networks = trusted_networks()
    if not forwarded_for or not _is_trusted(peer_ip, networks):
        return str(peer_ip)
    client = peer_ip
    for hop in reversed(forwarded_for.split(",")):
        hop_ip = _parse(hop)
        if hop_ip is None:  # garbage in the header: stop at the last address we could trust
            break
        client = hop_ip
        if not _is_trusted(hop_ip, networks):
            break
    return str(client)


def client_ip(request: HttpRequest) -> str:
    """The client's address of an HTTP request (Django or DRF)."""
    meta = request.META
    return resolve(meta.get("REMOTE_ADDR"), meta.get("HTTP_X_FORWARDED_FOR"))


def client_ip_from_scope(scope: Mapping[str, Any]) -> str:
    """The client's address of an ASGI scope (WebSocket consumers, ASGI middleware)."""
    client = scope.get("client") or (None, None)
    peer = client[0] if client else None
    forwarded = None
    for name, value in scope.get("headers") or ():
        if name == b"x-forwarded-for":
            forwarded = value.decode("latin-1") if forwarded is None else f"{forwarded},{value.decode('latin-1')}"
    return resolve(peer, forwarded)


def peer_is_trusted_proxy(request: HttpRequest) -> bool:
    peer = _parse(request.META.get("REMOTE_ADDR") or "")
    return peer is not None and _is_trusted(peer, trusted_networks())


class ForwardedHeadersMiddleware:
    """Believe ``X-Forwarded-Proto`` (``SECURE_PROXY_SSL_HEADER``) only from a trusted proxy.

    Django applies ``SECURE_PROXY_SSL_HEADER`` whatever the peer: a client that reaches the web
    process directly could claim HTTPS (secure-only redirects skipped, ``request.is_secure()``
    true on plain HTTP). The header is dropped unless the TCP peer is in ``TRUSTED_PROXIES``.
    """

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> Any:
        if "HTTP_X_FORWARDED_PROTO" in request.META and not peer_is_trusted_proxy(request):
            del request.META["HTTP_X_FORWARDED_PROTO"]
        return self.get_response(request)
