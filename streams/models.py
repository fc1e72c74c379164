"""Streams and their broadcast sessions.

A ``Stream`` is a channel a user owns (title, key, settings). Each time it goes live a
``StreamSession`` records that broadcast; with ``keep_recordings`` a finished session is a
replay. Live pipeline state (chunks, playlists) is in Redis and S3, not here.
"""

import pghistory
from django.conf import settings
from django.db import models
from django.urls import reverse

from livestream.models import TimestampedModel


class StreamStatus(models.TextChoices):
    OFFLINE = "offline", "Offline"
    LIVE = "live", "Live"


class LatencyMode(models.TextChoices):
    """How far behind the publisher viewers play. ``low``: LL-HLS (CMAF partial segments of
    ``LL_PART_SECONDS``, ADR 0031; chunks of ``LOW_LATENCY_CHUNK_SECONDS``); ``normal``: standard
    HLS, MPEG-TS segments of ``CHUNK_SECONDS``."""

    LOW = "low", "Low latency (LL-HLS, about 1.5 s)"
    NORMAL = "normal", "Normal (standard HLS, 2 s segments)"


def chunk_seconds(mode: str) -> float:
    """The chunk duration of a latency mode (settings bound both to 0.5-6 s)."""
    return settings.LOW_LATENCY_CHUNK_SECONDS if mode == LatencyMode.LOW else settings.CHUNK_SECONDS


@pghistory.track(pghistory.InsertEvent(), pghistory.UpdateEvent(), pghistory.DeleteEvent())
class Stream(TimestampedModel):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="streams")
    title = models.CharField(max_length=140)
    description = models.TextField(max_length=5000, blank=True)
    slug = models.SlugField(max_length=80, unique=True)
    status = models.CharField(max_length=16, choices=StreamStatus.choices, default=StreamStatus.OFFLINE, db_index=True)
    keep_recordings = models.BooleanField(default=True, help_text="Keep each broadcast as a replay (VOD).")
    latency_mode = models.CharField(
        max_length=8,
        choices=LatencyMode.choices,
        default=LatencyMode.LOW,
        help_text="Low: LL-HLS, viewers about 1.5 s behind you (players without LL support still play, "
        "a little later). Normal: standard HLS with 2 s segments, about 3.5 s, fewer requests. "
        "Applies from the next broadcast.",
    )
    # SHA-256 of the secret key; the key itself is never stored.
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    key_hint = models.CharField(max_length=16, editable=False, help_text="First characters of the key.")
    key_rotated_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_live_at = models.DateTimeField(null=True, blank=True)
    # Announced start of the next broadcast; the offline card shows it while it is ahead.
    next_broadcast_at = models.DateTimeField(null=True, blank=True)
    # Why the last publish attempt was refused or ended by the platform (quota, source the
    # pipeline cannot handle, no keyframes...), shown on the dashboard; cleared on a good publish.
    publish_problem = models.CharField(max_length=300, blank=True, editable=False)
    publish_problem_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Private preview (ADR 0034): broadcasts start visible to the owner only, until "Go public".
    start_in_preview = models.BooleanField(
        default=False,
        help_text="Start each broadcast as a private preview: only you can watch it (check your picture, sound "
        "and the ingest doctor's advice), followers and webhooks hear nothing until you press Go public.",
    )
    # The current broadcast is a private preview (set when a publish starts, cleared by go_public).
    in_preview = models.BooleanField(default=False, editable=False, db_index=True)

    class Meta:
        ordering = ("-created_at",)
        indexes = [models.Index(fields=["owner", "-created_at"])]

    def __str__(self) -> str:
        return self.title

    def get_absolute_url(self) -> str:
        return reverse("streams:watch", kwargs={"slug": self.slug})

    @property
    def is_live(self) -> bool:
        return self.status == StreamStatus.LIVE


class SessionStatus(models.TextChoices):
    LIVE = "live", "Live"
    # The publisher left; the session waits out the reconnect grace period.
    RECONNECTING = "reconnecting", "Waiting for reconnect"
    # Grace period over; remaining chunks are being finished.
    ENDING = "ending", "Finishing"
    ENDED = "ended", "Ended"


@pghistory.track(pghistory.InsertEvent(), pghistory.UpdateEvent())
class StreamSession(TimestampedModel):
    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, related_name="sessions")
    status = models.CharField(max_length=16, choices=SessionStatus.choices, default=SessionStatus.LIVE, db_index=True)
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    disconnected_at = models.DateTimeField(null=True, blank=True)
    # Number of publisher connections (1 + reconnects within the grace period).
    connections = models.PositiveIntegerField(default=1)
    duration_s = models.FloatField(default=0)
    # True once the session's playlists are finalised with EXT-X-ENDLIST and kept as a replay.
    is_replay = models.BooleanField(default=False, db_index=True)
    # Object-store prefix holding this session's HLS output, e.g. "live/<stream>/<session>".
    storage_prefix = models.CharField(max_length=200, blank=True)
    # Started as a private preview (ADR 0034); ``went_public_at`` when the owner made it public.
    is_preview = models.BooleanField(default=False)
    went_public_at = models.DateTimeField(null=True, blank=True)
    # The ingest doctor's last report (transcoding/doctor.py): {"updated_at", "findings": [...]}.
    ingest_findings = models.JSONField(default=dict, blank=True, editable=False)

    class Meta:
        ordering = ("-started_at",)
        indexes = [models.Index(fields=["stream", "-started_at"])]
        constraints = [
            # At most one session per stream that a publisher is on or may come back to. A
            # session that is "ending" (finishing its last chunks) may overlap the next one.
            models.UniqueConstraint(
                fields=["stream"],
                condition=models.Q(status__in=["live", "reconnecting"]),
                name="one_open_session_per_stream",
            )
        ]

    def __str__(self) -> str:
        return f"{self.stream} @ {self.started_at:%Y-%m-%d %H:%M}"


@pghistory.track(pghistory.InsertEvent(), pghistory.UpdateEvent(), pghistory.DeleteEvent())
class QuotaOverride(TimestampedModel):
    """An operator's exception to the site-wide quotas for one user (``streams/quotas.py``).
    Empty fields keep the site default; 0 lifts the limit."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="stream_quota")
    max_streams = models.PositiveIntegerField(
        null=True, blank=True, help_text="Streams this user may own. Empty: MAX_STREAMS_PER_USER; 0: no limit."
    )
    max_live = models.PositiveIntegerField(
        null=True, blank=True, help_text="Streams of this user live at once. Empty: MAX_LIVE_PER_USER; 0: no limit."
    )
    note = models.CharField(max_length=200, blank=True, help_text="Why (for other operators).")

    class Meta:
        verbose_name = "quota override"

    def __str__(self) -> str:
        return f"quota of {self.user}"
