"""Restream targets of a stream: where its source is pushed while it is live (ADR 0033).

The stream key is stored encrypted (``simulcast.crypto``); ``key_hint`` is what the API and the
dashboard show. The ``last_*`` fields keep the target's last relay status for when the stream
is offline; while it is live the working status (attempts, next retry) lives in Redis
(``simulcast.state``).
"""

from django.db import models

from streams.models import Stream


class RelayStatus(models.TextChoices):
    IDLE = "idle", "Idle"  # never pushed yet
    CONNECTING = "connecting", "Connecting"
    LIVE = "live", "Live"
    FAILED = "failed", "Failed"
    STOPPED = "stopped", "Stopped"


class Target(models.Model):
    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, related_name="simulcast_targets")
    name = models.CharField(max_length=80)
    url = models.CharField(max_length=500, help_text="rtmp:// or rtmps:// server URL, without the key.")
    key_encrypted = models.TextField(editable=False)
    key_hint = models.CharField(max_length=16, editable=False)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    last_status = models.CharField(max_length=16, choices=RelayStatus.choices, default=RelayStatus.IDLE)
    last_reason = models.CharField(max_length=300, blank=True)
    last_attempt = models.PositiveIntegerField(default=0)
    last_status_at = models.DateTimeField(null=True, blank=True)
    last_session_id = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ("created_at", "pk")
        indexes = [models.Index(fields=("stream", "enabled"))]

    def __str__(self) -> str:
        return f"{self.name} ({self.url})"
