"""Chat rows: messages, per-stream chat settings, moderators, bans/timeouts, moderation log.

Messages are plain text, never HTML: clients render them with ``textContent``. Deleting or
clearing only marks rows (``deleted_at``) so the moderation log keeps pointing at them.
PostgreSQL triggers (pghistory) record every change of these rows; ``ModerationAction`` is
the append-only log of who did what.
"""

import pghistory
from django.conf import settings
from django.db import models
from django.utils import timezone

from streams.models import Stream


@pghistory.track(pghistory.InsertEvent(), pghistory.UpdateEvent(), pghistory.DeleteEvent())
class ChatSettings(models.Model):
    """Per-stream chat options; a missing row means the defaults (slow mode off)."""

    stream = models.OneToOneField(Stream, on_delete=models.CASCADE, related_name="chat_settings", primary_key=True)
    # Seconds a non-moderator must wait between two messages; 0 turns slow mode off.
    slow_mode_s = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "chat settings"

    def __str__(self) -> str:
        return f"chat settings of stream {self.stream_id}"


# Inserts are the rows themselves; triggers record edits (deletion marks) and removals.
@pghistory.track(pghistory.UpdateEvent(), pghistory.DeleteEvent())
class Message(models.Model):
    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, related_name="chat_messages")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_messages")
    text = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    # The stream's program date-time when the message was sent: the ingest wall clock of the
    # moment (what EXT-X-PROGRAM-DATE-TIME carries for the frames ingested then). Watch pages
    # show the message when the viewer's playback reaches it; replays place it by it (ADR 0035).
    # Messages older than the field got their ``created_at`` (migration 0003).
    pdt = models.DateTimeField(default=timezone.now)
    deleted_at = models.DateTimeField(null=True, blank=True)
    deleted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ("-id",)
        indexes = [
            models.Index(
                fields=["stream", "-id"], name="chat_msg_live_idx", condition=models.Q(deleted_at__isnull=True)
            ),
            # A replay's chat: the stream's visible messages between two program date-times.
            models.Index(
                fields=["stream", "pdt"], name="chat_msg_pdt_idx", condition=models.Q(deleted_at__isnull=True)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user_id}: {self.text[:40]}"


@pghistory.track(pghistory.InsertEvent(), pghistory.DeleteEvent())
class Moderator(models.Model):
    """A user the streamer appointed to moderate their stream's chat."""

    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, related_name="chat_moderators")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="moderates")
    appointed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["stream", "user"], name="one_moderator_row_per_user")]

    def __str__(self) -> str:
        return f"moderator {self.user_id} of stream {self.stream_id}"


@pghistory.track(pghistory.InsertEvent(), pghistory.UpdateEvent(), pghistory.DeleteEvent())
class Ban(models.Model):
    """A ban (``expires_at`` empty) or a timeout (until ``expires_at``) from one stream's chat."""

    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, related_name="chat_bans")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_bans")
    expires_at = models.DateTimeField(null=True, blank=True)
    reason = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["stream", "user"], name="one_ban_row_per_user")]

    def __str__(self) -> str:
        kind = "ban" if self.expires_at is None else f"timeout until {self.expires_at:%Y-%m-%d %H:%M}"
        return f"{kind}: user {self.user_id} in stream {self.stream_id}"

    @property
    def is_active(self) -> bool:
        return self.expires_at is None or self.expires_at > timezone.now()


class ModerationKind(models.TextChoices):
    DELETE = "delete", "Deleted a message"
    CLEAR = "clear", "Cleared the chat"
    BAN = "ban", "Banned a user"
    TIMEOUT = "timeout", "Timed out a user"
    UNBAN = "unban", "Lifted a ban or timeout"
    SLOW_MODE = "slow_mode", "Changed slow mode"
    ADD_MODERATOR = "add_moderator", "Appointed a moderator"
    REMOVE_MODERATOR = "remove_moderator", "Removed a moderator"


class ModerationAction(models.Model):
    """The log of every moderation action (append-only)."""

    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, related_name="chat_moderation_actions")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    kind = models.CharField(max_length=32, choices=ModerationKind.choices)
    target_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    message = models.ForeignKey(Message, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ("-created_at", "-id")
        indexes = [models.Index(fields=["stream", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.kind} by {self.actor_id} in stream {self.stream_id}"
