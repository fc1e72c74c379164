"""Celery application.

Queues (routes in ``CELERY_TASK_ROUTES``): ``transcode`` (one task per live chunk, CPU heavy),
``webhooks`` (deliveries to user-chosen URLs, which may be slow or hostile) and ``default``
(everything else: playlist finalisation, retention, thumbnails). Pipeline workers run
``celery -A livestream worker -Q transcode,default``; webhooks have their own pool,
``celery -A livestream worker -Q webhooks -n webhooks@%h``, so a receiver that makes every
delivery wait its full timeout delays only other webhooks.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "livestream.settings.local")

app = Celery("livestream")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
