"""Abstract bases shared by every app's models."""

from django.db import models


class TimestampedModel(models.Model):
    """Adds ``created_at``/``updated_at``; every model of the project inherits it."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True
