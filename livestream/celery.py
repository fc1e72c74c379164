"""Celery application.

Queues (routes in ``CELERY_TASK_ROUTES``): ``transcode`` (one task per live chunk, CPU heavy),
``webhooks`` (deliveries to user-chosen URLs, which may be slow or hostile) and ``default``
(everything else: playlist finalisation, thumbnails, analytics, retention, the pipeline
reconciler). Each has its own worker pool (Procfile, docker-compose.yml), so nothing else ever
delays a live chunk, and a receiver that makes every delivery wait its full timeout delays only
other webhooks::

    celery -A livestream worker -n transcode@%h -Q transcode --pool prefork --without-gossip --without-mingle
    celery -A livestream worker -n default@%h -Q default --pool prefork --without-gossip --without-mingle
    celery -A livestream worker -n webhooks@%h -Q webhooks --pool prefork --without-gossip --without-mingle

Gossip and mingle are off: unused here, and gossip's restart after a broker loss is where kombu
builds a Redis client from a connection it already closed (ADR 0013). Broker settings (never
give up reconnecting, visibility timeout, tasks per child): ``livestream/settings/base.py``.
"""

import os
from typing import Any

from celery import Celery

from livestream import metrics

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "livestream.settings.local")

app = Celery("livestream")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _closing_a_lost_broker_channel_is_a_connection_error() -> None:
    """Work around a kombu Redis-transport bug that ends a worker on a broker restart.

    When the broker connection is lost while the worker holds unacknowledged messages (tasks
    running with ``acks_late``, or reserved with an ETA/countdown), Celery closes the
    connection; closing its channel tries to restore those messages and builds a new Redis
    client from a transport whose connection is already gone. kombu 5.7 then raises
    ``AttributeError: 'NoneType' object has no attribute 'hostname'`` (in
    ``Channel._connparams``), which Celery does not ignore: "Unrecoverable error", the worker
    exits. Here that case raises the transport's own connection error instead, which the close
    path ignores; the consumer then reconnects as after any broker loss. Nothing is lost: the
    messages stay in the broker's unacked set and are redelivered after the visibility timeout
    (live chunks sooner, through their transcode lease: docs/adr/0013).
    Reproduced and checked by tests/pipeline/test_broker_restart.py.
    """
    from kombu.transport import redis as kombu_redis
    from redis.exceptions import ConnectionError as RedisConnectionError

    original = getattr(kombu_redis.Channel, "_connparams")  # noqa: B009 - private, not in the stubs
    if getattr(original, "_lost_broker_guard", False):
        return

    def _connparams(self: Any, asynchronous: bool = False) -> Any:  # noqa: FBT001, FBT002 - kombu's signature
        transport = getattr(self, "connection", None)
        if transport is None or getattr(transport, "client", None) is None:
            raise RedisConnectionError("the broker connection is already closed")
        return original(self, asynchronous=asynchronous)

    _connparams._lost_broker_guard = True  # type: ignore[attr-defined]
    setattr(kombu_redis.Channel, "_connparams", _connparams)  # noqa: B010 - private, not in the stubs


_closing_a_lost_broker_channel_is_a_connection_error()


metrics.connect_celery()  # per-worker and per-task metrics, each role's METRICS_PORT (ADR 0020)
