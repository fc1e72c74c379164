"""One delivery try at a time (``services.attempt_delivery``), against real sockets: what is
retried, what is final, and what the SSRF guard refuses. No worker needed."""

import socket

import pytest

from tests.factories import UserFactory
from webhooks import services
from webhooks.addresses import UnsafeURLError, check_url_syntax, check_url_target
from webhooks.models import DeliveryStatus

pytestmark = pytest.mark.django_db


def _delivery(url: str):
    endpoint = services.create_endpoint(UserFactory.create(), url=url, events=["stream.live"]).endpoint
    return services.send_test_event(endpoint)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.usefixtures("allow_private")
def test_500_on_the_last_try_fails_the_delivery(receiver):
    receiver.statuses = [500]
    delivery = _delivery(receiver.url)
    assert services.attempt_delivery(delivery.pk, final=False) is services.Outcome.RETRY
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.RETRYING
    assert services.attempt_delivery(delivery.pk, final=True) is services.Outcome.FAILED
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_code) == (DeliveryStatus.FAILED, 2, 500)
    # Finished deliveries are never sent again (a duplicate task run is harmless).
    assert services.attempt_delivery(delivery.pk, final=False) is services.Outcome.SKIPPED
    assert len(receiver.requests) == 2


@pytest.mark.usefixtures("allow_private")
def test_connection_refused_and_timeout_are_retryable(receiver, settings):
    refused = _delivery(f"http://127.0.0.1:{_closed_port()}/hook")
    assert services.attempt_delivery(refused.pk, final=False) is services.Outcome.RETRY
    refused.refresh_from_db()
    assert refused.response_code is None
    assert refused.error.startswith("connection error")

    settings.WEBHOOK_TIMEOUT_S = 0.3
    receiver.delay_s = 1.0
    slow = _delivery(receiver.url)
    assert services.attempt_delivery(slow.pk, final=False) is services.Outcome.RETRY
    slow.refresh_from_db()
    assert slow.error.startswith("timeout")
    assert slow.attempt_log.get().duration_ms >= 250


@pytest.mark.usefixtures("allow_private")
def test_redirects_are_not_followed(receiver):
    receiver.statuses = [302]
    delivery = _delivery(receiver.url)
    assert services.attempt_delivery(delivery.pk, final=False) is services.Outcome.FAILED
    assert len(receiver.requests) == 1


def test_private_targets_are_refused_at_send_time_without_a_request(receiver, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    delivery = _delivery(receiver.url)  # saved while private targets were allowed
    settings.WEBHOOK_ALLOW_PRIVATE = False
    assert services.attempt_delivery(delivery.pk, final=False) is services.Outcome.FAILED
    delivery.refresh_from_db()
    assert delivery.error.startswith("refused")
    assert receiver.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hook",
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/",
        "http://user:pass@example.com/",
        "http:///no-host",
        "not a url",
        "http://example.com:99999/",
    ],
)
def test_url_syntax_refusals(url):
    with pytest.raises(UnsafeURLError):
        check_url_syntax(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://localhost:8000/",
        "http://10.1.2.3/",
        "http://192.168.0.10/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://0.0.0.0/",
    ],
)
def test_private_addresses_refused_unless_allowed(url, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    with pytest.raises(UnsafeURLError):
        check_url_target(url)
    settings.WEBHOOK_ALLOW_PRIVATE = True
    check_url_target(url)


def test_public_address_literal_is_allowed(settings):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    check_url_target("https://93.184.216.34/hook")  # a literal resolves without DNS


def test_prune_keeps_recent_and_unfinished_deliveries(settings):
    from datetime import timedelta

    from django.utils import timezone

    from webhooks.models import Delivery
    from webhooks.tasks import prune_delivery_log

    settings.WEBHOOK_ALLOW_PRIVATE = True
    settings.WEBHOOK_LOG_RETENTION_DAYS = 30
    old_done, old_pending, recent_done = (_delivery("http://127.0.0.1:9/") for _ in range(3))
    Delivery.objects.filter(pk__in=[old_done.pk, recent_done.pk]).update(status=DeliveryStatus.SUCCEEDED)
    Delivery.objects.filter(pk__in=[old_done.pk, old_pending.pk]).update(created_at=timezone.now() - timedelta(days=31))
    assert prune_delivery_log() == 1
    assert set(Delivery.objects.values_list("pk", flat=True)) == {old_pending.pk, recent_done.pk}


def test_broker_down_marks_the_delivery_failed_instead_of_a_500(
    auth_client, user, settings, monkeypatch, django_capture_on_commit_callbacks
):
    from kombu.exceptions import OperationalError

    from webhooks.models import Delivery
    from webhooks.tasks import deliver_webhook

    def broker_down(*args, **kwargs):  # failure injection: what kombu raises when Redis is gone
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    settings.WEBHOOK_ALLOW_PRIVATE = True
    endpoint = services.create_endpoint(user, url="http://127.0.0.1:9/", events=["stream.live"]).endpoint
    monkeypatch.setattr(deliver_webhook, "delay", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        response = auth_client.post(f"/api/v1/webhooks/{endpoint.pk}/test/")
    assert response.status_code == 202
    delivery = Delivery.objects.get(endpoint=endpoint)
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.error == "could not queue: OperationalError"
