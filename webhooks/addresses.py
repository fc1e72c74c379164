"""SSRF guard: which webhook URLs we agree to call, and the addresses a delivery may connect to.

Only ``http``/``https`` URLs with a host and no credentials are accepted. The host is resolved
once per check (``resolve_target``); unless ``settings.WEBHOOK_ALLOW_PRIVATE`` is true, every
address of the answer must be public (``refusal_reason``), or the URL is refused. A delivery
then connects to one of exactly those addresses (``webhooks.transport``): nothing resolves the
name a second time, so a DNS answer that changes between the check and the connection (DNS
rebinding) cannot steer the request to another address.

Public means: IPv4 outside every special-purpose range (private, loopback, link-local, CGNAT,
benchmarking, documentation, multicast, reserved); IPv6 inside global unicast ``2000::/3`` and
outside the ranges that embed or tunnel to an IPv4 address the check cannot see through (NAT64
``64:ff9b::/96`` and ``64:ff9b:1::/48``, 6to4 ``2002::/16``, Teredo and the rest of
``2001::/23``) and documentation prefixes. An IPv4-mapped IPv6 address (``::ffff:a.b.c.d``) is
judged by the IPv4 address it maps to. Local development and tests set WEBHOOK_ALLOW_PRIVATE=1
to reach receivers on 127.0.0.1; the name is still resolved once and the connection pinned.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from django.conf import settings

ALLOWED_SCHEMES = ("http", "https")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeURLError(ValueError):
    """The URL may not be called; the message says why (safe to show to the owner)."""


class UnresolvableHostError(UnsafeURLError):
    """The host name has no address (or the resolver did not answer in time)."""


class ResolutionTimeoutError(UnresolvableHostError):
    """The resolver did not answer within the time allowed."""


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


# --- Which addresses are public --------------------------------------------------------------

_V4_SPECIAL = tuple(
    ipaddress.IPv4Network(net)
    for net in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",  # private
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local (cloud metadata at 169.254.169.254)
        "172.16.0.0/12",  # private
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",  # private
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation
        "203.0.113.0/24",  # documentation
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and broadcast
    )
)
_V6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
# Checked before the global-unicast rule so the refusal names the real reason.
_V6_SPECIAL = tuple(
    (ipaddress.IPv6Network(net), why)
    for net, why in (
        ("64:ff9b::/96", "a NAT64 address (embeds an IPv4 address)"),
        ("64:ff9b:1::/48", "a local NAT64 address (embeds an IPv4 address)"),
        ("::/96", "an IPv4-compatible IPv6 address"),
        ("::ffff:0:0:0/96", "an IPv4-translated IPv6 address"),
        ("2002::/16", "a 6to4 address (embeds an IPv4 address)"),
        ("2001::/32", "a Teredo address (embeds an IPv4 address)"),
        ("2001::/23", "an IETF special-purpose IPv6 address"),
        ("2001:db8::/32", "a documentation address"),
        ("3fff::/20", "a documentation address"),
    )
)
_PRIVATE = "a private, local or special-purpose address"


def refusal_reason(ip: IPAddress) -> str | None:
    """Why a webhook may not connect to ``ip`` (``None``: it is a public address)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:a.b.c.d reaches a.b.c.d
    if isinstance(ip, ipaddress.IPv6Address):
        return _ipv6_refusal(ip)
    if any(ip in net for net in _V4_SPECIAL) or not ip.is_global:
        return _PRIVATE
    return None


def _ipv6_refusal(ip: ipaddress.IPv6Address) -> str | None:
    if ip.is_loopback or ip.is_unspecified:  # also inside ::/96, which would name it wrongly
        return _PRIVATE
    why = next((why for net, why in _V6_SPECIAL if ip in net), None)
    if why is None and (ip not in _V6_GLOBAL_UNICAST or not ip.is_global):
        why = _PRIVATE
    return why


# --- Resolution --------------------------------------------------------------------------------


def _getaddrinfo(host: str, port: int) -> list[str]:
    """The system resolver's TCP addresses for ``host`` (tests patch this function)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


def _parse_ip(text: str) -> IPAddress:
    ip = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone ("fe80::1%eth0")
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # ::ffff:a.b.c.d is a.b.c.d: checked and connected to as such
    return ip


def resolve_host(host: str, port: int, *, timeout: float) -> list[IPAddress]:
    """Addresses of ``host`` (an IP literal is its own answer), in the resolver's order,
    without duplicates. Raises ``ResolutionTimeoutError`` when the resolver takes longer than
    ``timeout`` seconds (the lookup is left to finish in a daemon thread) and
    ``UnresolvableHostError`` when there is no address."""
    try:
        return [_parse_ip(host)]
    except ValueError:
        pass
    outcome: dict[str, list[str] | BaseException] = {}

    def lookup() -> None:
        try:
            outcome["addresses"] = _getaddrinfo(host, port)
        except BaseException as exc:  # handed to the waiting thread
            outcome["error"] = exc

    worker = threading.Thread(target=lookup, name="webhook-dns", daemon=True)
    worker.start()
    worker.join(max(timeout, 0.0))
    if worker.is_alive():
        raise ResolutionTimeoutError(f"The host {host!r} did not resolve within {timeout:g} s.")
    answer = outcome.get("addresses")
    if not isinstance(answer, list) or not answer:
        raise UnresolvableHostError(f"The host {host!r} does not resolve.")
    addresses: list[IPAddress] = []
    for text in answer:
        try:
            ip = _parse_ip(text)
        except ValueError:
            continue
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise UnresolvableHostError(f"The host {host!r} does not resolve.")
    return addresses


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (``addresses``, all allowed) and what to ask for."""

    scheme: str
    host: str  # ASCII (IDNA) host name or IP literal: Host header and TLS server name
    port: int
    path: str  # request target: path and query, percent-encoded
    addresses: tuple[IPAddress, ...]


def _ascii_host(host: str) -> str:
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        raise UnsafeURLError("The host name is not valid.") from None


def resolve_target(url: str, *, timeout: float) -> Target:
    """Check ``url``, resolve its host once and, unless private targets are allowed, refuse it
    when any resolved address is not public (``UnsafeURLError``; ``UnresolvableHostError`` or
    ``ResolutionTimeoutError`` when the name has no answer within ``timeout`` seconds)."""
    check_url_syntax(url)
    parts = urlsplit(url)
    host = _ascii_host(parts.hostname or "")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = resolve_host(host, port, timeout=timeout)
    if not settings.WEBHOOK_ALLOW_PRIVATE:
        for ip in addresses:
            reason = refusal_reason(ip)
            if reason is not None:
                raise UnsafeURLError(f"The URL points to {reason}; only public addresses are allowed.")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    # Percent-encode what HTTP cannot carry raw (spaces, non-ASCII); keep existing escapes.
    path = quote(path, safe="!#$%&'()*+,/:;=?@[]~")
    return Target(parts.scheme, host, port, path, tuple(addresses))


def check_url_target(url: str) -> None:
    """Save-time check of an endpoint URL (forms and API): syntax, then, unless private targets
    are allowed, resolution and the public-address rule. A name that does not resolve is
    refused too. Deliveries check again, and connect to what they checked (``resolve_target``)."""
    check_url_syntax(url)
    if settings.WEBHOOK_ALLOW_PRIVATE:
        return
    resolve_target(url, timeout=settings.WEBHOOK_TIMEOUT_S)
