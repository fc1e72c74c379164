from typing import Any

from rest_framework import serializers

from clips import services
from clips.models import Clip
from livestream.api import StrictBooleanField, StrictCharField


class ClipSerializer(serializers.ModelSerializer[Clip]):
    """A clip as everyone sees it. ``start``/``end``: program date-times of what the clip holds
    (null until ready); ``requested_*``: what was asked for."""

    stream = serializers.IntegerField(source="stream_id", read_only=True)
    session = serializers.IntegerField(source="session_id", read_only=True)
    owner = serializers.CharField(source="owner.public_name", read_only=True)
    url = serializers.SerializerMethodField(help_text="The clip's share page.")
    video_url = serializers.SerializerMethodField(help_text="The MP4 through the edge (empty until ready).")

    class Meta:
        model = Clip
        fields = (
            "id", "slug", "url", "video_url", "stream", "session", "owner", "title", "status", "progress",
            "failure_reason", "trim", "requested_start", "requested_end", "start", "end", "duration_s",
            "frames", "width", "height", "size_bytes", "created_at",
        )  # fmt: skip
        read_only_fields = fields

    def get_url(self, clip: Clip) -> str:
        return services.page_url(clip)

    def get_video_url(self, clip: Clip) -> str:
        from clips.models import ClipStatus

        return services.video_url(clip) if clip.status == ClipStatus.READY else ""


class ClipCreateSerializer(serializers.Serializer[dict[str, Any]]):
    """Either ``last_seconds`` (the last N seconds of the live broadcast) or ``session`` with
    ``start`` and ``end`` (ISO-8601 date-times with a zone, on the program date-time clock of
    the broadcast's segments) and optionally ``trim``."""

    title = StrictCharField(max_length=140)
    last_seconds = serializers.IntegerField(required=False, min_value=1, help_text="Live: clip the last N seconds.")
    session = serializers.IntegerField(required=False, help_text="Id of the broadcast session (replay or live).")
    start = serializers.DateTimeField(required=False)
    end = serializers.DateTimeField(required=False)
    trim = StrictBooleanField(required=False, default=False, help_text="Cut exactly (edges re-encoded).")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        live = "last_seconds" in attrs
        ranged = any(name in attrs for name in ("session", "start", "end"))
        if live == ranged:
            raise serializers.ValidationError("Give either last_seconds, or session with start and end.")
        if ranged:
            missing = [name for name in ("session", "start", "end") if name not in attrs]
            if missing:
                raise serializers.ValidationError(dict.fromkeys(missing, "This field is required with a range."))
        return attrs
