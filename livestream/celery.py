"""Celery application.

Queues: ``transcode`` (one task per live chunk, CPU heavy) and ``default`` (everything else:
webhooks, playlist finalisation, retention). Workers on any machine run
``celery -A livestream worker -Q transcode,default``.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "livestream.settings.local")

app = Celery("livestream")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
