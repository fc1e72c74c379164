"""Periodic analytics tasks (Celery beat; see CELERY_BEAT_SCHEDULE in settings).

Both take no model instances, re-read state and are idempotent: a retried or doubled run
changes nothing (samples are upserted per period, retention deletes by age).
"""

from typing import Any

from celery import shared_task
from pymongo.errors import PyMongoError

from analytics import services


@shared_task(
    name="analytics.tasks.sample_viewers",
    autoretry_for=(ConnectionError, TimeoutError, PyMongoError),
    retry_backoff=True,
    max_retries=2,
    soft_time_limit=20,
    time_limit=30,
    # A sample is only worth taking in its own period: never let them pile up in a queue.
    expires=30,
)
def sample_viewers() -> int:
    """Record viewer (and chat) samples of every live stream; returns streams sampled."""
    return services.sample_live_streams()


@shared_task(
    name="analytics.tasks.enforce_retention",
    autoretry_for=(ConnectionError, TimeoutError, PyMongoError),
    retry_backoff=True,
    max_retries=3,
    soft_time_limit=300,
    time_limit=360,
)
def enforce_retention() -> dict[str, Any]:
    """Delete analytics documents older than the retention settings."""
    return services.enforce_retention()
