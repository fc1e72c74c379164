"""Celery task that delivers one webhook, retried with exponential backoff.

Enqueued by ``webhooks.services`` with ``transaction.on_commit``; takes the delivery id only.
Every task here runs on the ``webhooks`` queue (``CELERY_TASK_ROUTES``), served by its own
worker pool, never by the workers that transcode live chunks.
Retries (``WEBHOOK_MAX_RETRIES``, delays ``WEBHOOK_RETRY_BACKOFF_S`` * 2^n with full jitter, at
most ``WEBHOOK_RETRY_BACKOFF_MAX_S``) on timeouts, connection errors, 5xx and 429.
"""

from celery import shared_task
from django.conf import settings

from webhooks import services


class RetryableDeliveryError(Exception):
    """The receiver failed in a way worth another try later."""


@shared_task(
    bind=True,
    autoretry_for=(RetryableDeliveryError,),
    max_retries=settings.WEBHOOK_MAX_RETRIES,
    retry_backoff=settings.WEBHOOK_RETRY_BACKOFF_S,
    retry_backoff_max=settings.WEBHOOK_RETRY_BACKOFF_MAX_S,
    retry_jitter=True,
    acks_late=True,
    soft_time_limit=int(settings.WEBHOOK_TOTAL_TIMEOUT_S) + 30,
    time_limit=int(settings.WEBHOOK_TOTAL_TIMEOUT_S) + 60,
)
def deliver_webhook(self, delivery_id: int) -> str:  # type: ignore[no-untyped-def]
    """Try delivery ``delivery_id`` once; raise ``RetryableDeliveryError`` to be retried."""
    final = self.request.retries >= self.max_retries
    outcome = services.attempt_delivery(delivery_id, final=final)
    if outcome is services.Outcome.RETRY:
        raise RetryableDeliveryError(f"delivery {delivery_id} will be retried")
    return str(outcome)


@shared_task(acks_late=True, time_limit=600)
def prune_delivery_log() -> int:
    """Daily (beat): keep ``WEBHOOK_LOG_RETENTION_DAYS`` of finished deliveries."""
    return services.prune_delivery_log(older_than_days=settings.WEBHOOK_LOG_RETENTION_DAYS)
