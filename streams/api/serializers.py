from datetime import datetime
from typing import Any

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.api.serializers import UserPublicSerializer
from livestream.api import StrictModelSerializer
from streams import playback, selectors
from streams.models import Stream, StreamSession, StreamStatus


class StreamSerializer(StrictModelSerializer[Stream]):
    """The stream resource of the contract. ``viewer_count`` comes from the view's context
    (one Redis round trip per page, not per row)."""

    owner = UserPublicSerializer(read_only=True)
    rtmp_url = serializers.SerializerMethodField()
    playback_url = serializers.SerializerMethodField()
    watch_url = serializers.SerializerMethodField()
    embed_url = serializers.SerializerMethodField()
    viewer_count = serializers.SerializerMethodField()

    class Meta:
        model = Stream
        fields = (
            "id",
            "title",
            "description",
            "slug",
            "status",
            "keep_recordings",
            "latency_mode",
            "owner",
            "rtmp_url",
            "playback_url",
            "watch_url",
            "embed_url",
            "viewer_count",
            "last_live_at",
            "next_broadcast_at",
            "created_at",
            "updated_at",
        )
        read_only_fields = ("id", "slug", "status", "owner", "last_live_at", "created_at", "updated_at")
        extra_kwargs = {"title": {"max_length": 140}, "description": {"max_length": 5000}}

    def validate_next_broadcast_at(self, value: datetime | None) -> datetime | None:
        unchanged = self.instance is not None and value == self.instance.next_broadcast_at
        if value is not None and value <= timezone.now() and not unchanged:
            raise serializers.ValidationError("Announce a time in the future.")
        return value

    def validate_title(self, value: str) -> str:
        value = value.strip()
        if not value:
            raise serializers.ValidationError("Title may not be blank.")
        return value

    def get_rtmp_url(self, obj: Stream) -> str:
        return playback.rtmp_url()

    def get_playback_url(self, obj: Stream) -> str:
        # A private preview's own master: only its owner (and staff) get such a stream here.
        return selectors.player_url(obj)

    def get_watch_url(self, obj: Stream) -> str:
        return playback.watch_url(obj)

    def get_embed_url(self, obj: Stream) -> str:
        return playback.embed_url(obj)

    @extend_schema_field(serializers.IntegerField())
    def get_viewer_count(self, obj: Stream) -> int:
        counts: dict[int, int] = self.context.get("viewer_counts", {})
        return counts.get(obj.pk, 0)


class IngestUrlsSerializer(serializers.Serializer[dict[str, Any]]):
    """Where the owner publishes (OBS: Settings -> Stream -> Custom), ADR 0032."""

    rtmp_url = serializers.CharField(help_text="RTMP server URL; the stream key is OBS's Stream Key.")
    rtmps_url = serializers.CharField(help_text="RTMPS (TLS) server URL; the same stream key.")
    srt_url = serializers.CharField(
        help_text="Full SRT URL for OBS's Server field (stream key as streamid, latency in microseconds); "
        "'<stream key>' stands for the key except in the create and regenerate-key responses."
    )
    srt_latency_ms = serializers.IntegerField()
    srt_passphrase_required = serializers.BooleanField(
        help_text="The SRT listener is encrypted: add &passphrase=... (ask the operator)."
    )


class OwnerStreamSerializer(StreamSerializer):
    """What the owner sees: also the key hint (never the key, which is not stored) and the
    private preview settings (ADR 0034) and the ingest URLs (RTMP, RTMPS, SRT, ADR 0032)."""

    ingest = serializers.SerializerMethodField()

    class Meta(StreamSerializer.Meta):
        fields = (  # type: ignore[assignment]
            *StreamSerializer.Meta.fields,
            "key_hint",
            "key_rotated_at",
            "start_in_preview",
            "in_preview",
            "ingest",
        )
        read_only_fields = (  # type: ignore[assignment]
            *StreamSerializer.Meta.read_only_fields,
            "key_hint",
            "key_rotated_at",
            "in_preview",
        )

    @extend_schema_field(IngestUrlsSerializer)
    def get_ingest(self, obj: Stream) -> dict[str, object]:
        return playback.ingest_urls(self.context.get("stream_key"))


class StreamWithKeySerializer(OwnerStreamSerializer):
    """Response to create and regenerate-key: the only time the plaintext key is sent."""

    stream_key = serializers.SerializerMethodField()

    class Meta(OwnerStreamSerializer.Meta):
        fields = (*OwnerStreamSerializer.Meta.fields, "stream_key")  # type: ignore[assignment]

    def get_stream_key(self, obj: Stream) -> str:
        key: str = self.context["stream_key"]
        return key


class StreamLiveStatusSerializer(serializers.Serializer[dict[str, Any]]):
    """Cheap poll target: is the stream live, since when, how many watch it right now."""

    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=StreamStatus.choices)
    is_live = serializers.BooleanField()
    viewer_count = serializers.IntegerField()
    last_live_at = serializers.DateTimeField(allow_null=True)
    session = serializers.IntegerField(allow_null=True, help_text="Id of the open session, if any.")


class RenditionMetadataSerializer(serializers.Serializer[dict[str, Any]]):
    name = serializers.CharField()
    width = serializers.IntegerField(allow_null=True)
    height = serializers.IntegerField(allow_null=True)
    video_bitrate = serializers.IntegerField(allow_null=True)
    audio_bitrate = serializers.IntegerField(allow_null=True)
    codecs = serializers.CharField(allow_null=True)


class SessionMetadataSerializer(serializers.Serializer[dict[str, Any]]):
    """Technical facts the pipeline recorded for a session (MongoDB)."""

    video_codec = serializers.CharField(allow_null=True)
    video_profile = serializers.CharField(allow_null=True)
    width = serializers.IntegerField(allow_null=True)
    height = serializers.IntegerField(allow_null=True)
    fps = serializers.FloatField(allow_null=True)
    video_bitrate = serializers.IntegerField(allow_null=True)
    audio_codec = serializers.CharField(allow_null=True)
    audio_channels = serializers.IntegerField(allow_null=True)
    audio_sample_rate = serializers.IntegerField(allow_null=True)
    audio_bitrate = serializers.IntegerField(allow_null=True)
    chunks = serializers.IntegerField(allow_null=True)
    gaps = serializers.IntegerField(allow_null=True)
    reconnects = serializers.IntegerField(allow_null=True)
    renditions = RenditionMetadataSerializer(many=True)


class StreamSessionSerializer(serializers.ModelSerializer[StreamSession]):
    """A broadcast of a stream. ``playback_url`` is the VOD master while it is a replay;
    ``metadata`` comes from the view's context (one MongoDB query per page)."""

    stream = serializers.IntegerField(source="stream_id", read_only=True)
    playback_url = serializers.SerializerMethodField()
    metadata = serializers.SerializerMethodField()

    class Meta:
        model = StreamSession
        fields = (
            "id",
            "stream",
            "status",
            "started_at",
            "ended_at",
            "duration_s",
            "connections",
            "is_replay",
            "playback_url",
            "metadata",
        )
        read_only_fields = fields

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_playback_url(self, obj: StreamSession) -> Any:
        return playback.replay_url(obj) if obj.is_replay else None

    @extend_schema_field(SessionMetadataSerializer(allow_null=True))
    def get_metadata(self, obj: StreamSession) -> Any:
        found: dict[int, dict[str, Any]] = self.context.get("session_metadata", {})
        return found.get(obj.pk)


class IngestFindingSerializer(serializers.Serializer[dict[str, Any]]):
    """One piece of the ingest doctor's advice (transcoding/doctor.py, ADR 0034)."""

    code = serializers.ChoiceField(
        choices=[
            "keyframe_interval",
            "b_frames",
            "variable_frame_rate",
            "av_offset",
            "av_drift",
            "loudness_low",
            "loudness_high",
            "bitrate_spikes",
            "resolution_above_ladder",
            "audio_codec",
        ]
    )
    severity = serializers.ChoiceField(choices=["info", "warning", "error"])
    title = serializers.CharField()
    detail = serializers.CharField(help_text="What was measured, with the numbers.")
    obs = serializers.CharField(help_text="What to change in OBS.")
    ffmpeg = serializers.CharField(help_text="What to change in an ffmpeg command line.")
    measured = serializers.DictField(help_text="The measured values behind the finding.")


class IngestReportSerializer(serializers.Serializer[dict[str, Any]]):
    """The ingest doctor's report: the broadcast on air (from Redis, updated every few chunks)
    or, when offline, the last broadcast's (kept with its session)."""

    stream = serializers.IntegerField()
    session = serializers.IntegerField(allow_null=True, help_text="The analysed broadcast (null: never analysed).")
    live = serializers.BooleanField(help_text="The session is on air (the report is still being updated).")
    updated_at = serializers.DateTimeField(allow_null=True)
    findings = IngestFindingSerializer(many=True)
