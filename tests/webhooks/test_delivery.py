"""Webhook delivery end to end: a stream event, a real Celery worker, a real HTTP receiver."""

import json
import time

import pytest
from django.db import transaction

from livestream import events
from tests.factories import UserFactory, make_stream
from webhooks import services, signing
from webhooks.models import Delivery, DeliveryStatus, Endpoint


def _wait_for_status(delivery: Delivery, statuses: set[str], timeout: float = 30.0) -> Delivery:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        delivery.refresh_from_db()
        if delivery.status in statuses:
            return delivery
        time.sleep(0.1)
    raise AssertionError(f"delivery stayed {delivery.status} (wanted {statuses})")


def _endpoint(user, url: str, events_: list[str] | None = None) -> tuple[Endpoint, str]:
    created = services.create_endpoint(user, url=url, events=events_ or ["stream.live", "stream.offline"])
    return created.endpoint, created.secret


@pytest.mark.usefixtures("allow_private", "celery_worker")
def test_signed_delivery_retries_on_500_then_succeeds(receiver):
    receiver.statuses = [500, 500, 200]
    user = UserFactory.create()
    stream, _ = make_stream(user, title="Launch party")
    endpoint, secret = _endpoint(user, receiver.url)
    other_user_endpoint, _ = _endpoint(UserFactory.create(), receiver.url + "?other")

    with transaction.atomic():  # as a pipeline service would: the event leaves after commit
        # The pipeline's payload shape (streams/sessions.py): the bare stream id, the session.
        events.send_event_on_commit(stream.pk, "stream.live", {"stream": stream.pk, "session": 7})

    delivery = Delivery.objects.get(endpoint=endpoint)
    delivery = _wait_for_status(delivery, {DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED})
    received = receiver.wait_for(3)

    assert delivery.status == DeliveryStatus.SUCCEEDED
    assert delivery.attempts == 3
    assert delivery.response_code == 200
    assert delivery.delivered_at is not None
    assert [(a.number, a.response_code) for a in delivery.attempt_log.all()] == [(1, 500), (2, 500), (3, 200)]
    assert all(a.duration_ms >= 0 for a in delivery.attempt_log.all())
    # Only the stream owner's endpoint was called, three times, same event id each time.
    assert len(received) == 3
    assert not Delivery.objects.filter(endpoint=other_user_endpoint).exists()
    assert {r.headers["X-Livestream-Event-Id"] for r in received} == {str(delivery.event_id)}
    for request in received:
        assert signing.verify(
            secret, request.body, request.headers["X-Livestream-Timestamp"], request.headers["X-Livestream-Signature"]
        )
        assert not signing.verify(
            "whsec_wrong",
            request.body,
            request.headers["X-Livestream-Timestamp"],
            request.headers["X-Livestream-Signature"],
        )
        assert request.headers["X-Livestream-Event"] == "stream.live"
        assert request.headers["Content-Type"] == "application/json"
    body = received[0].json()
    assert body["id"] == str(delivery.event_id)
    assert body["type"] == "stream.live"
    assert body["data"]["session"] == 7
    assert body["data"]["stream"]["id"] == stream.pk
    assert body["data"]["stream"]["title"] == "Launch party"
    # A tampered body (or a replayed one with a new timestamp) does not verify.
    forged = json.dumps({**body, "type": "stream.offline"}).encode()
    assert not signing.verify(
        secret, forged, received[0].headers["X-Livestream-Timestamp"], received[0].headers["X-Livestream-Signature"]
    )
    assert not signing.verify(
        secret,
        received[0].body,
        str(int(received[0].headers["X-Livestream-Timestamp"]) + 1),
        received[0].headers["X-Livestream-Signature"],
    )


@pytest.mark.usefixtures("allow_private", "celery_worker")
def test_client_error_is_not_retried_but_429_is(receiver):
    user = UserFactory.create()
    stream, _ = make_stream(user)
    endpoint, _ = _endpoint(user, receiver.url)

    receiver.statuses = [404]
    with transaction.atomic():
        events.send_event_on_commit(stream.pk, "stream.offline", {})
    gone = _wait_for_status(Delivery.objects.get(endpoint=endpoint), {DeliveryStatus.FAILED, DeliveryStatus.SUCCEEDED})
    assert gone.status == DeliveryStatus.FAILED
    assert gone.attempts == 1
    assert gone.response_code == 404

    receiver.requests.clear()
    receiver.statuses = [429, 200]
    with transaction.atomic():
        events.send_event_on_commit(stream.pk, "stream.live", {})
    limited = Delivery.objects.filter(endpoint=endpoint, event="stream.live").get()
    limited = _wait_for_status(limited, {DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED})
    assert limited.status == DeliveryStatus.SUCCEEDED
    assert [a.response_code for a in limited.attempt_log.all()] == [429, 200]


@pytest.mark.usefixtures("allow_private", "celery_worker")
def test_unsubscribed_and_paused_endpoints_get_nothing_but_test_events_go_out(receiver):
    user = UserFactory.create()
    stream, _ = make_stream(user)
    only_replays, _ = _endpoint(user, receiver.url + "?replays", ["replay.ready"])
    paused, secret = _endpoint(user, receiver.url + "?paused", ["stream.live"])
    services.update_endpoint(paused, url=paused.url, events=paused.events, description="", is_active=False)

    with transaction.atomic():
        events.send_event_on_commit(stream.pk, "stream.live", {})
        events.send_event_on_commit(stream.pk, "viewers.count", {"count": 3})  # not a webhook event
    assert not Delivery.objects.exists()

    test_delivery = services.send_test_event(paused)
    test_delivery = _wait_for_status(test_delivery, {DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED})
    assert test_delivery.status == DeliveryStatus.SUCCEEDED
    (request,) = receiver.wait_for(1)
    assert request.path == "/hook?paused"
    assert request.json()["type"] == "webhook.test"
    assert signing.verify(
        secret, request.body, request.headers["X-Livestream-Timestamp"], request.headers["X-Livestream-Signature"]
    )
    assert not Delivery.objects.filter(endpoint=only_replays).exists()
