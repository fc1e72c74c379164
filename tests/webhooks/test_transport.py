"""Where a delivery connects and how long it may take, against real sockets.

- The connection goes to the address that was checked: the resolver (``addresses._getaddrinfo``,
  the one place the name is looked up) answers differently on its next call, as a rebinding DNS
  server would, and a second real receiver on that other address must get nothing.
- Special ranges are refused, embedded-IPv4 ones included (NAT64, 6to4, Teredo, mapped).
- https: the TLS server name and the certificate check are for the URL's host, not the address.
- One bound on the whole try: receivers that trickle their answer, a resolver that hangs.
"""

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest

from tests.factories import UserFactory
from tests.webhooks.servers import Receiver, ThrowawayCA, http_receiver, trickling_receiver
from webhooks import addresses, services, transport
from webhooks.addresses import UnsafeURLError, check_url_target, refusal_reason
from webhooks.models import Delivery, DeliveryStatus

pytestmark = pytest.mark.django_db
HOST = "hooks.example.test"


class FakeDNS:
    """Stands in for the system resolver: ``answers[host]`` lists one answer per lookup (the last
    one repeats), each a list of addresses; ``delay_s`` makes every lookup hang that long."""

    def __init__(self) -> None:
        self.answers: dict[str, list[list[str]]] = {}
        self.calls: list[str] = []
        self.delay_s = 0.0

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        if self.delay_s:
            time.sleep(self.delay_s)
        answers = self.answers.get(host)
        if not answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return answers[min(len(self.calls), len(answers)) - 1]


@pytest.fixture
def dns(monkeypatch) -> FakeDNS:
    fake = FakeDNS()
    monkeypatch.setattr(addresses, "_getaddrinfo", fake)
    real_getaddrinfo = socket.getaddrinfo

    def no_other_lookup(host, *args, **kwargs):  # nothing may resolve the name another way
        assert host != HOST, "the webhook host was resolved outside addresses._getaddrinfo"
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", no_other_lookup)
    return fake


def _count_as_public(monkeypatch, *ips: str) -> None:
    """Let the policy treat these loopback addresses as public receivers (the checked address of
    a rebinding attack); every other address keeps its real verdict, loopback ones refused."""
    real = addresses.refusal_reason
    monkeypatch.setattr(addresses, "refusal_reason", lambda ip: None if str(ip) in ips else real(ip))


@contextmanager
def _receivers(*hosts: str) -> Iterator[list[Receiver]]:
    """One recording receiver per loopback address, all on the same port."""
    for _ in range(20):
        with ExitStack() as stack:
            first = stack.enter_context(http_receiver(hosts[0]))
            try:
                others = [stack.enter_context(http_receiver(host, first.port)) for host in hosts[1:]]
            except OSError:  # that port is taken on another address: pick a new one
                continue
            yield [first, *others]
            return
    raise RuntimeError("no common free port")


def _delivery(url: str) -> Delivery:
    endpoint = services.create_endpoint(UserFactory.create(), url=url, events=["stream.live"]).endpoint
    return services.send_test_event(endpoint)


def _attempt(url: str) -> tuple[services.Outcome, Delivery, float]:
    delivery = _delivery(url)
    started = time.monotonic()
    outcome = services.attempt_delivery(delivery.pk, final=False)
    elapsed = time.monotonic() - started
    delivery.refresh_from_db()
    return outcome, delivery, elapsed


# --- The address that was checked ---------------------------------------------------------


def test_a_dns_answer_that_changes_after_the_check_does_not_move_the_connection(dns, monkeypatch, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = False  # the production rule, loopback addresses refused...
    _count_as_public(monkeypatch, "127.77.0.2")  # ...but for the receiver standing in for a public host
    with _receivers("127.77.0.2", "127.77.0.3") as (checked, rebound):
        # A rebinding DNS server: the checked (public) address first, a private one afterwards.
        dns.answers[HOST] = [["127.77.0.2"], ["127.77.0.3"]]
        outcome, delivery, _ = _attempt(f"http://{HOST}:{checked.port}/hook?tenant=7")

        assert outcome is services.Outcome.SUCCEEDED, delivery.error
        assert dns.calls == [HOST]  # resolved once, connected to what was checked
        (request,) = checked.requests
        assert request.headers["Host"] == f"{HOST}:{checked.port}"
        assert request.path == "/hook?tenant=7"
        assert request.json()["type"] == "webhook.test"
        assert rebound.requests == []

        # The next try resolves again and gets the private address: refused, nothing sent.
        outcome, delivery, _ = _attempt(f"http://{HOST}:{checked.port}/hook")
        assert outcome is services.Outcome.FAILED
        assert delivery.error.startswith("refused: The URL points to a private")
        assert len(checked.requests) == 1
        assert rebound.requests == []


def test_every_address_of_the_answer_must_be_allowed(dns, monkeypatch, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    _count_as_public(monkeypatch, "127.77.0.2")
    with _receivers("127.77.0.2", "127.77.0.3") as (public, private):
        dns.answers[HOST] = [["127.77.0.2", "127.77.0.3"]]
        with pytest.raises(UnsafeURLError):
            check_url_target(f"http://{HOST}:{public.port}/")
        outcome, delivery, _ = _attempt(f"http://{HOST}:{public.port}/hook")
        assert outcome is services.Outcome.FAILED
        assert delivery.error.startswith("refused")
        assert public.requests == private.requests == []


def test_addresses_of_the_answer_are_tried_in_order_and_nothing_else(dns, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True  # local development: loopback allowed, still pinned
    with _receivers("127.77.0.2", "127.77.0.3") as (second, elsewhere):
        dns.answers[HOST] = [["127.77.0.4", "127.77.0.2"], ["127.77.0.3"]]  # nothing listens on .4
        outcome, delivery, _ = _attempt(f"http://{HOST}:{second.port}/hook")
        assert outcome is services.Outcome.SUCCEEDED, delivery.error
        assert len(second.requests) == 1
        assert elsewhere.requests == []
        assert dns.calls == [HOST]


def test_a_name_that_does_not_resolve_is_retried_later(dns, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    outcome, delivery, _ = _attempt(f"http://{HOST}/hook")
    assert outcome is services.Outcome.RETRY
    assert delivery.error.startswith("dns error")


# --- Refused ranges -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("64:ff9b::a00:1", "NAT64"),  # -> 10.0.0.1
        ("64:ff9b::808:808", "NAT64"),  # -> 8.8.8.8: the check cannot see what the gateway reaches
        ("64:ff9b:1::a9fe:a9fe", "NAT64"),  # local-use NAT64 prefix -> 169.254.169.254
        ("2002:a00:1::1", "6to4"),  # -> 10.0.0.1
        ("2002:808:808::1", "6to4"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
        ("2001:2::1", "special-purpose"),  # benchmarking, inside 2001::/23
        ("::ffff:10.0.0.1", "private"),  # IPv4-mapped: judged by the IPv4 address
        ("::ffff:169.254.169.254", "private"),
        ("::ffff:127.0.0.1", "private"),
        ("::10.0.0.1", "IPv4-compatible"),
        ("::ffff:0:a00:1", "IPv4-translated"),
        ("::1", "private"),
        ("::", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("fe80::1", "private"),
        ("fec0::1", "private"),
        ("ff02::1", "private"),
        ("100::1", "private"),
        ("2001:db8::1", "documentation"),
        ("3fff::1", "documentation"),
        ("0.1.2.3", "private"),
        ("10.1.2.3", "private"),
        ("100.64.0.1", "private"),
        ("127.77.0.2", "private"),
        ("169.254.169.254", "private"),
        ("172.16.5.4", "private"),
        ("192.0.0.170", "private"),
        ("192.0.2.1", "private"),
        ("192.88.99.1", "private"),
        ("192.168.1.1", "private"),
        ("198.18.0.1", "private"),
        ("198.51.100.1", "private"),
        ("203.0.113.1", "private"),
        ("224.0.0.251", "private"),
        ("240.0.0.1", "private"),
        ("255.255.255.255", "private"),
    ],
)
def test_special_addresses_are_refused(address, why, settings):
    import ipaddress

    reason = refusal_reason(ipaddress.ip_address(address))
    assert reason is not None
    assert why in reason
    settings.WEBHOOK_ALLOW_PRIVATE = False
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(UnsafeURLError, match="only public addresses"):
        check_url_target(f"https://{host}/hook")


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "::ffff:93.184.216.34"])
def test_public_addresses_are_allowed(address):
    import ipaddress

    assert refusal_reason(ipaddress.ip_address(address)) is None


def test_a_name_resolving_to_nat64_is_refused_when_saved_and_when_sent(dns, settings, user):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    dns.answers[HOST] = [["64:ff9b::7f00:1"]]  # NAT64 for 127.0.0.1
    with pytest.raises(UnsafeURLError, match="NAT64"):
        check_url_target(f"https://{HOST}/hook")
    outcome, delivery, _ = _attempt(f"https://{HOST}/hook")
    assert outcome is services.Outcome.FAILED
    assert "NAT64" in delivery.error


# --- TLS --------------------------------------------------------------------------------------


def test_https_uses_the_host_name_for_sni_and_the_certificate(dns, monkeypatch, settings, tmp_path):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    ca = ThrowawayCA.create(tmp_path)
    monkeypatch.setattr(transport, "tls_context", ca.client_context)
    with http_receiver("127.77.0.2", tls=ca.server_context([HOST])) as tls_receiver:
        dns.answers[HOST] = [["127.77.0.2"]]
        outcome, delivery, _ = _attempt(f"https://{HOST}:{tls_receiver.port}/hook")
        assert outcome is services.Outcome.SUCCEEDED, delivery.error
        assert tls_receiver.server_names == [HOST]
        assert tls_receiver.requests[0].headers["Host"] == f"{HOST}:{tls_receiver.port}"

    # A certificate for another name is refused before anything is sent (retried: it may be fixed).
    with http_receiver("127.77.0.2", tls=ca.server_context(["other.example.test"])) as wrong_name:
        outcome, delivery, _ = _attempt(f"https://{HOST}:{wrong_name.port}/hook")
        assert outcome is services.Outcome.RETRY
        assert delivery.error == "connection error: SSLCertVerificationError"
        assert wrong_name.requests == []


# --- One bound on the whole try ------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["headers", "continue"])
def test_a_receiver_that_trickles_its_answer_is_cut_off_at_the_total_bound(mode, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    settings.WEBHOOK_TOTAL_TIMEOUT_S = 1.0
    settings.WEBHOOK_TIMEOUT_S = 5.0  # every byte comes well within the idle timeout
    with trickling_receiver(mode) as trickler:
        outcome, delivery, elapsed = _attempt(trickler.url)
        assert trickler.connections == 1
        assert trickler.sent > 5  # it really was sending all along
    assert outcome is services.Outcome.RETRY
    assert delivery.error == "timeout after 1 s (whole try)"
    assert delivery.response_code is None
    assert 0.9 <= elapsed < 2.5  # the idle timeout (5 s) never fired: the total bound did


def test_a_trickled_body_does_not_hold_the_try_and_is_read_only_in_part(settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    settings.WEBHOOK_TOTAL_TIMEOUT_S = 1.0
    with trickling_receiver("body") as trickler:
        outcome, delivery, elapsed = _attempt(trickler.url)
    # The status arrived in time and decides; the excerpt is what came before the bound.
    assert outcome is services.Outcome.SUCCEEDED
    assert delivery.response_code == 200
    excerpt = delivery.attempt_log.get().response_excerpt
    assert 0 < len(excerpt) < 500
    assert set(excerpt) == {"y"}
    assert elapsed < 2.5


def test_only_the_start_of_a_big_answer_is_read(settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    with trickling_receiver("big") as big:
        outcome, delivery, elapsed = _attempt(big.url)
    assert outcome is services.Outcome.SUCCEEDED
    assert delivery.attempt_log.get().response_excerpt == "z" * 500
    assert elapsed < 2.5


def test_dns_time_counts_against_the_total_bound(dns, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    settings.WEBHOOK_TOTAL_TIMEOUT_S = 0.5
    dns.answers[HOST] = [["127.77.0.2"]]
    dns.delay_s = 3.0
    outcome, delivery, elapsed = _attempt(f"http://{HOST}/hook")
    assert outcome is services.Outcome.RETRY
    assert delivery.error == "timeout after 0.5 s (resolving the host)"
    assert elapsed < 2.0  # the lookup itself hangs for 3 s
    assert delivery.status == DeliveryStatus.RETRYING
