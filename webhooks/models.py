"""Webhook endpoints a streamer registers, and the log of what was delivered to them.

An ``Endpoint`` belongs to one user and receives the events it subscribes to for every stream
that user owns. Each event produces one ``Delivery`` per subscribed endpoint (with a unique
``event_id`` the receiver can use to drop duplicates); each HTTP try of a delivery is an
``Attempt`` row. The secret signs every request and is shown to the owner only when it is
created or rotated; it must be stored readable because HMAC needs it at send time.
"""

import uuid

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models

from livestream.models import TimestampedModel


class Event(models.TextChoices):
    STREAM_LIVE = "stream.live", "Stream went live"
    STREAM_OFFLINE = "stream.offline", "Stream went offline"
    REPLAY_READY = "replay.ready", "Replay is ready"
    CLIP_CREATED = "clip.created", "Clip is ready"
    CLIP_DELETED = "clip.deleted", "Clip was deleted"
    CLIP_SUGGESTED = "clip.suggested", "Highlight suggested as a clip"
    SIMULCAST_STATUS = "simulcast.status", "Simulcast target changed status"
    INGEST_FINDINGS = "ingest.findings", "Ingest doctor found a problem"


# Sent only by the "send test event" action, whatever the endpoint subscribes to.
TEST_EVENT = "webhook.test"


class Endpoint(TimestampedModel):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.URLField(max_length=500)
    description = models.CharField(max_length=200, blank=True)
    events = ArrayField(models.CharField(max_length=32, choices=Event.choices), default=list)
    # HMAC-SHA256 key; shown once (create / rotate), never in list or detail responses.
    secret = models.CharField(max_length=64, editable=False)
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ("-created_at",)
        indexes = [models.Index(fields=["owner", "-created_at"])]

    def __str__(self) -> str:
        return self.url


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    # At least one try failed with a retryable error; another is scheduled.
    RETRYING = "retrying", "Retrying"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class Delivery(TimestampedModel):
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="deliveries")
    # Same for every try of this delivery: receivers deduplicate on it.
    event_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    event = models.CharField(max_length=32)
    # Stream the event is about (kept as a plain id: the log outlives a deleted stream).
    stream_id = models.BigIntegerField(null=True, blank=True)
    payload = models.JSONField()
    status = models.CharField(
        max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING, db_index=True
    )
    attempts = models.PositiveIntegerField(default=0)
    response_code = models.PositiveIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at",)
        indexes = [models.Index(fields=["endpoint", "-created_at"])]
        verbose_name_plural = "deliveries"

    def __str__(self) -> str:
        return f"{self.event} -> {self.endpoint_id} ({self.status})"


class Attempt(models.Model):
    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    # None when no HTTP response arrived (timeout, refused connection, blocked address).
    response_code = models.PositiveIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField()
    error = models.CharField(max_length=500, blank=True)
    # First bytes of the receiver's answer, for debugging from the dashboard.
    response_excerpt = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ("number",)
        constraints = [models.UniqueConstraint(fields=["delivery", "number"], name="one_attempt_number_per_delivery")]

    def __str__(self) -> str:
        return f"#{self.number} {self.response_code or self.error}"
