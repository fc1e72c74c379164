from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from livestream.api import StrictBooleanField, StrictCharField
from simulcast import services
from simulcast.models import RelayStatus, Target


class TargetStatusSerializer(serializers.Serializer[Any]):
    """The relay's status: live from the pushing ingest node while the stream is live, else the
    last one kept."""

    status = serializers.ChoiceField(choices=RelayStatus.choices, read_only=True)
    reason = serializers.CharField(read_only=True, help_text="Why it failed (or stopped), in plain words.")
    attempt = serializers.IntegerField(read_only=True, help_text="Relay attempts in this broadcast.")
    next_retry_at = serializers.DateTimeField(read_only=True, allow_null=True)
    session = serializers.IntegerField(read_only=True, allow_null=True, help_text="The broadcast (session) id.")
    since = serializers.DateTimeField(read_only=True, allow_null=True, help_text="Last status change.")


class TargetSerializer(serializers.ModelSerializer[Target]):
    """A restream target. ``key`` is write-only: responses carry ``key_hint`` only."""

    name = StrictCharField(max_length=80)
    url = StrictCharField(max_length=500, help_text="rtmp:// or rtmps:// server URL, without the stream key.")
    key = StrictCharField(
        max_length=services.MAX_KEY_LENGTH, write_only=True, help_text="The service's stream key (never returned)."
    )
    enabled = StrictBooleanField(required=False, default=True)
    status = serializers.SerializerMethodField()

    class Meta:
        model = Target
        fields = ("id", "name", "url", "key", "key_hint", "enabled", "status", "created_at", "updated_at")
        read_only_fields = ("id", "key_hint", "status", "created_at", "updated_at")

    def validate_url(self, value: str) -> str:
        try:
            return services.check_target_url(value)
        except services.InvalidTargetError as exc:
            raise serializers.ValidationError(str(exc)) from None

    def validate_key(self, value: str) -> str:
        try:
            return services.check_key(value)
        except services.InvalidTargetError as exc:
            raise serializers.ValidationError(str(exc)) from None

    def validate_name(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("Give the target a name.")
        return value.strip()

    @extend_schema_field(TargetStatusSerializer)
    def get_status(self, obj: Target) -> dict[str, Any]:
        statuses: dict[int, services.TargetStatus] = self.context.get("statuses", {})
        found = statuses.get(obj.pk) or services.statuses([obj])[obj.pk]
        return dict(TargetStatusSerializer(found).data)


class TargetUpdateSerializer(TargetSerializer):
    """A change: every field optional; a new ``key`` replaces the stored one."""

    name = StrictCharField(max_length=80, required=False)
    url = StrictCharField(max_length=500, required=False)
    key = StrictCharField(max_length=services.MAX_KEY_LENGTH, write_only=True, required=False)
    enabled = StrictBooleanField(required=False)
