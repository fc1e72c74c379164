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

from celery import Celery

from livestream import metrics

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "livestream.settings.local")

app = Celery("livestream")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
metrics.connect_celery()  # per-worker and per-task metrics, each role's METRICS_PORT (ADR 0020)
