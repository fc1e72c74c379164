"""Clips: a shareable cut of a broadcast (the last seconds of a live stream, or a range of a
replay), one MP4 per clip in the object store (``clips/services.py``, ``docs/clips.md``)."""

import secrets

from django.conf import settings
from django.db import models
from django.urls import reverse

from livestream.models import TimestampedModel

SLUG_BYTES = 9  # 12 URL-safe characters: not guessable, short enough to share


def new_slug() -> str:
    return secrets.token_urlsafe(SLUG_BYTES)


class ClipStatus(models.TextChoices):
    PENDING = "pending", "Being cut"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"


class Clip(TimestampedModel):
    slug = models.SlugField(max_length=32, unique=True, default=new_slug, editable=False)
    stream = models.ForeignKey("streams.Stream", on_delete=models.CASCADE, related_name="clips")
    session = models.ForeignKey("streams.StreamSession", on_delete=models.CASCADE, related_name="clips")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="clips")
    title = models.CharField(max_length=140)
    # What was asked for: program date-times (EXT-X-PROGRAM-DATE-TIME, the ingest wall clock).
    requested_start = models.DateTimeField()
    requested_end = models.DateTimeField()
    trim = models.BooleanField(default=False, help_text="Cut exactly at the requested instants (edges re-encoded).")
    # What the clip holds (program date-times of its first frame and its end), once ready.
    start = models.DateTimeField(null=True, blank=True)
    end = models.DateTimeField(null=True, blank=True)
    duration_s = models.FloatField(default=0)
    frames = models.PositiveIntegerField(default=0)
    width = models.PositiveIntegerField(default=0)
    height = models.PositiveIntegerField(default=0)
    size_bytes = models.PositiveBigIntegerField(default=0)
    status = models.CharField(max_length=16, choices=ClipStatus.choices, default=ClipStatus.PENDING, db_index=True)
    progress = models.PositiveSmallIntegerField(default=0, help_text="Percent done while pending.")
    failure_reason = models.CharField(max_length=300, blank=True)
    # Object keys in the bucket (unique per clip: never overwritten with other bytes).
    video_key = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ("-created_at",)
        indexes = [
            models.Index(fields=["stream", "-created_at"]),
            models.Index(fields=["owner", "-created_at"]),
        ]

    def __str__(self) -> str:
        return self.title

    def get_absolute_url(self) -> str:
        return reverse("clips:page", kwargs={"slug": self.slug})
