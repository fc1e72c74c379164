"""Project package: settings, URLs, ASGI entry point and the Celery app."""

from livestream.celery import app as celery_app

__all__ = ("celery_app",)
