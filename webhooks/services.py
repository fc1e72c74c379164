"""Every write to webhooks: endpoint CRUD, secret rotation, queuing and recording deliveries.

Flow: ``livestream.events.send_event_on_commit`` calls ``enqueue_deliveries`` after the
stream's transaction commits; it writes one ``Delivery`` per subscribed, active endpoint of the
stream's owner and enqueues ``webhooks.tasks.deliver_webhook`` for each after its own commit.
The task calls ``attempt_delivery`` once per try and raises to let Celery retry with backoff.
"""

import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import User
from webhooks import signing, transport
from webhooks.addresses import UnresolvableHostError, UnsafeURLError
from webhooks.models import TEST_EVENT, Attempt, Delivery, DeliveryStatus, Endpoint

logger = logging.getLogger(__name__)

USER_AGENT = "Livestream-Webhooks/1.0"
_EXCERPT_BYTES = 500


class EndpointLimitReachedError(Exception):
    """The owner already has ``WEBHOOK_MAX_ENDPOINTS_PER_USER`` endpoints."""


@dataclass(frozen=True)
class EndpointWithSecret:
    """A created or re-keyed endpoint and its secret (show it to the owner now, once)."""

    endpoint: Endpoint
    secret: str


def create_endpoint(
    owner: User, *, url: str, events: list[str], description: str = "", is_active: bool = True
) -> EndpointWithSecret:
    """Register ``url`` for ``events`` of every stream ``owner`` has. Callers validate the URL
    (``addresses.check_url_target``) and event names first; this enforces the per-user cap."""
    with transaction.atomic():
        # Lock the owner's row so two concurrent creates cannot both pass the cap.
        User.objects.select_for_update().filter(pk=owner.pk).first()
        if Endpoint.objects.filter(owner=owner).count() >= settings.WEBHOOK_MAX_ENDPOINTS_PER_USER:
            raise EndpointLimitReachedError
        secret = signing.new_secret()
        endpoint = Endpoint.objects.create(
            owner=owner,
            url=url,
            events=sorted(set(events)),
            description=description,
            is_active=is_active,
            secret=secret,
        )
    logger.info("webhook endpoint created", extra={"user": owner.pk, "ctx": {"endpoint": endpoint.pk}})
    return EndpointWithSecret(endpoint, secret)


def update_endpoint(endpoint: Endpoint, *, url: str, events: list[str], description: str, is_active: bool) -> Endpoint:
    endpoint.url = url
    endpoint.events = sorted(set(events))
    endpoint.description = description
    endpoint.is_active = is_active
    endpoint.save(update_fields=["url", "events", "description", "is_active", "updated_at"])
    return endpoint


def rotate_secret(endpoint: Endpoint) -> EndpointWithSecret:
    """New signing secret; deliveries signed from now on use it (also retries of old ones)."""
    endpoint.secret = signing.new_secret()
    endpoint.save(update_fields=["secret", "updated_at"])
    logger.info("webhook secret rotated", extra={"user": endpoint.owner_id, "ctx": {"endpoint": endpoint.pk}})
    return EndpointWithSecret(endpoint, endpoint.secret)


def delete_endpoint(endpoint: Endpoint) -> None:
    """Delete the endpoint and its delivery log; queued tries find no row and stop."""
    endpoint_id = endpoint.pk
    endpoint.delete()
    logger.info("webhook endpoint deleted", extra={"ctx": {"endpoint": endpoint_id}})


def _normalised(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` as plain JSON types (datetimes -> ISO strings), as the receiver will see it."""
    result: dict[str, Any] = json.loads(json.dumps(data, cls=DjangoJSONEncoder))
    return result


def _create_delivery(endpoint: Endpoint, event: str, stream_id: int | None, data: dict[str, Any]) -> Delivery:
    event_id = uuid.uuid4()
    payload = {
        "id": str(event_id),
        "type": event,
        "created_at": timezone.now().isoformat(),
        "data": _normalised(data),
    }
    return Delivery.objects.create(
        endpoint=endpoint, event_id=event_id, event=event, stream_id=stream_id, payload=payload
    )


def _enqueue(delivery_id: int) -> None:
    """Hand one delivery to Celery; if the broker refuses, the log says so (no silent pending)."""
    from webhooks.tasks import deliver_webhook

    try:
        deliver_webhook.delay(delivery_id)
    except Exception as exc:
        logger.exception("could not queue webhook delivery", extra={"ctx": {"delivery": delivery_id}})
        Delivery.objects.filter(pk=delivery_id, status=DeliveryStatus.PENDING).update(
            status=DeliveryStatus.FAILED,
            error=f"could not queue: {type(exc).__name__}"[:500],
            updated_at=timezone.now(),
        )


def _enqueue_on_commit(delivery_ids: list[int]) -> None:
    for delivery_id in delivery_ids:
        transaction.on_commit(lambda pk=delivery_id: _enqueue(pk))  # type: ignore[misc]


def enqueue_deliveries(stream_id: int, event: str, data: dict[str, Any]) -> None:
    """Queue ``event`` for every active endpoint of the stream's owner subscribed to it.

    Called by ``livestream.events`` after the stream's change committed. Never raises: a
    failure here (database or broker down) is logged, the caller's committed work stands.
    """
    from streams import playback
    from streams.models import Stream

    try:
        stream = Stream.objects.filter(pk=stream_id).first()
        if stream is None:
            logger.info("webhook event for a missing stream", extra={"stream": stream_id, "ctx": {"event": event}})
            return
        endpoints = list(Endpoint.objects.filter(owner_id=stream.owner_id, is_active=True, events__contains=[event]))
        if not endpoints:
            return
        # The event's own fields, with "stream" (the pipeline sends the bare id) expanded.
        body = {
            **data,
            "stream": {
                "id": stream.pk,
                "title": stream.title,
                "status": stream.status,
                "watch_url": playback.watch_url(stream),
                "playback_url": playback.playback_url(stream),
            },
        }
        with transaction.atomic():
            ids = [_create_delivery(endpoint, event, stream.pk, body).pk for endpoint in endpoints]
            _enqueue_on_commit(ids)
        logger.info("webhook deliveries queued", extra={"stream": stream_id, "ctx": {"event": event, "n": len(ids)}})
    except Exception:
        logger.exception("could not queue webhook deliveries", extra={"stream": stream_id, "ctx": {"event": event}})


def send_test_event(endpoint: Endpoint) -> Delivery:
    """Queue a ``webhook.test`` delivery to ``endpoint`` (also when it is paused)."""
    data = {"message": "Test event from Livestream.", "endpoint": {"id": endpoint.pk, "url": endpoint.url}}
    with transaction.atomic():
        delivery = _create_delivery(endpoint, TEST_EVENT, None, data)
        _enqueue_on_commit([delivery.pk])
    return delivery


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRY = "retry"
    # Nothing to do: finished already, or the delivery/endpoint was deleted.
    SKIPPED = "skipped"


@dataclass(frozen=True)
class _Result:
    code: int | None
    duration_ms: int
    error: str
    excerpt: str


def body_bytes(delivery: Delivery) -> bytes:
    """The exact request body of ``delivery`` (stable across tries)."""
    return json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode("utf-8")


def _post(endpoint: Endpoint, delivery: Delivery) -> _Result:
    body = body_bytes(delivery)
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        signing.EVENT_HEADER: delivery.event,
        signing.EVENT_ID_HEADER: str(delivery.event_id),
        signing.TIMESTAMP_HEADER: str(timestamp),
        signing.SIGNATURE_HEADER: signing.signature(endpoint.secret, timestamp, body),
    }
    started = time.monotonic()
    try:
        answer = transport.post(
            endpoint.url,
            body,
            headers,
            total_timeout=settings.WEBHOOK_TOTAL_TIMEOUT_S,
            idle_timeout=settings.WEBHOOK_TIMEOUT_S,
            max_body=_EXCERPT_BYTES,
        )
    except UnresolvableHostError as exc:  # DNS may come back: retried
        return _Result(None, _ms_since(started), f"dns error: {exc}", "")
    except UnsafeURLError as exc:
        return _Result(None, _ms_since(started), f"refused: {exc}", "")
    except transport.DeliveryTimeoutError as exc:
        return _Result(None, _ms_since(started), str(exc), "")
    except transport.ConnectionFailedError as exc:
        return _Result(None, _ms_since(started), f"connection error: {exc}", "")
    excerpt = answer.body.decode("utf-8", "replace")
    return _Result(answer.status, _ms_since(started), "", excerpt)


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _classify(result: _Result) -> Outcome:
    if result.code is None:
        return Outcome.FAILED if result.error.startswith("refused") else Outcome.RETRY
    if 200 <= result.code < 300:
        return Outcome.SUCCEEDED
    if result.code >= 500 or result.code == 429:
        return Outcome.RETRY
    return Outcome.FAILED  # other 4xx, and 3xx (redirects are not followed)


def attempt_delivery(delivery_id: int, *, final: bool) -> Outcome:
    """Make one HTTP try of a delivery and log it.

    ``final`` says no retry follows, so a retryable failure ends the delivery as ``failed``.
    Idempotent at the delivery level: a finished or deleted delivery is not sent again.
    Retryable: timeouts, connection errors, 5xx and 429; any other answer is final.
    """
    delivery = Delivery.objects.select_related("endpoint").filter(pk=delivery_id).first()
    if delivery is None or delivery.status in (DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED):
        return Outcome.SKIPPED
    endpoint = delivery.endpoint
    if not endpoint.is_active and delivery.event != TEST_EVENT:
        result = _Result(None, 0, "refused: the endpoint is paused", "")
    else:
        result = _post(endpoint, delivery)
    outcome = _classify(result)
    if outcome is Outcome.RETRY and final:
        outcome = Outcome.FAILED
    _record(delivery.pk, result, outcome)
    log_extra = {
        "stream": delivery.stream_id,
        "ctx": {"delivery": delivery.pk, "code": result.code, "outcome": outcome},
    }
    logger.info("webhook attempt", extra=log_extra)
    return outcome


def _record(delivery_id: int, result: _Result, outcome: Outcome) -> None:
    status = {
        Outcome.SUCCEEDED: DeliveryStatus.SUCCEEDED,
        Outcome.FAILED: DeliveryStatus.FAILED,
        Outcome.RETRY: DeliveryStatus.RETRYING,
    }[outcome]
    now = timezone.now()
    try:
        with transaction.atomic():
            delivery = Delivery.objects.select_for_update().filter(pk=delivery_id).first()
            if delivery is None:  # deleted with its endpoint while we were sending
                return
            delivery.attempts += 1
            Attempt.objects.create(
                delivery=delivery,
                number=delivery.attempts,
                started_at=now - timedelta(milliseconds=result.duration_ms),
                response_code=result.code,
                duration_ms=result.duration_ms,
                error=result.error[:500],
                response_excerpt=result.excerpt,
            )
            delivery.status = status
            delivery.response_code = result.code
            delivery.duration_ms = result.duration_ms
            delivery.error = result.error[:500]
            if status == DeliveryStatus.SUCCEEDED:
                delivery.delivered_at = now
            delivery.save(
                update_fields=[
                    "attempts",
                    "status",
                    "response_code",
                    "duration_ms",
                    "error",
                    "delivered_at",
                    "updated_at",
                ]
            )
    except IntegrityError:  # pragma: no cover - a duplicate run recorded the same attempt number
        logger.warning("duplicate webhook attempt record", extra={"ctx": {"delivery": delivery_id}})


def prune_delivery_log(*, older_than_days: int) -> int:
    """Delete finished deliveries (and their attempts) created more than ``older_than_days``
    ago; pending and retrying ones stay whatever their age. Returns how many deliveries went."""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    finished = Delivery.objects.filter(
        created_at__lt=cutoff, status__in=[DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED]
    )
    deleted = finished.count()
    finished.delete()
    if deleted:
        logger.info("webhook delivery log pruned", extra={"ctx": {"deliveries": deleted, "days": older_than_days}})
    return deleted
