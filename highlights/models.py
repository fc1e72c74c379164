"""Highlight suggestions: moments of a broadcast offered to the streamer as clip candidates."""

from django.db import models

from streams.models import Stream, StreamSession


class SuggestionStatus(models.TextChoices):
    OFFERED = "offered", "Offered"
    CLIPPED = "clipped", "Clipped"
    DISMISSED = "dismissed", "Dismissed"


class Suggestion(models.Model):
    """A window of a broadcast that stood out against its own baseline (``highlights.scoring``).

    ``start``/``end`` are program date-times (the ingest wall clock of the segments' first
    frames, EXT-X-PROGRAM-DATE-TIME), the range a clip request takes. ``reasons`` says in plain
    words what stood out (``chat``, ``loudness``, ``joins``); ``signals`` holds the z-scores."""

    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, related_name="highlight_suggestions")
    session = models.ForeignKey(StreamSession, on_delete=models.CASCADE, related_name="highlight_suggestions")
    start = models.DateTimeField()
    end = models.DateTimeField()
    peak_at = models.DateTimeField()  # start of the segment that scored highest
    score = models.FloatField()
    reasons = models.JSONField(default=dict)
    signals = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=SuggestionStatus.choices, default=SuggestionStatus.OFFERED)
    final = models.BooleanField(default=False)  # scored again once the broadcast ended
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("-score", "start")
        indexes = [models.Index(fields=["stream", "status", "-score"])]
        constraints = [
            models.UniqueConstraint(fields=["session", "start"], name="one_suggestion_per_session_start"),
            models.CheckConstraint(condition=models.Q(end__gt=models.F("start")), name="suggestion_end_after_start"),
        ]

    def __str__(self) -> str:
        return f"highlight {self.start:%H:%M:%S}-{self.end:%H:%M:%S} of session {self.session_id} ({self.score:.1f})"
