from typing import Any

from rest_framework import serializers

from livestream.api import StrictCharField, StrictModelSerializer
from webhooks.addresses import UnsafeURLError, check_url_target
from webhooks.models import Attempt, Delivery, DeliveryStatus, Endpoint, Event


class EndpointSerializer(StrictModelSerializer[Endpoint]):
    """An endpoint as listed and shown; never carries the secret."""

    owner = serializers.CharField(source="owner.username", read_only=True)
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=Event.choices),
        allow_empty=False,
        max_length=len(Event.choices),
        help_text="Events to receive.",
    )
    url = StrictCharField(max_length=500, help_text="http(s) URL that receives signed POSTs.")

    class Meta:
        model = Endpoint
        fields = ("id", "url", "description", "events", "is_active", "owner", "created_at", "updated_at")
        read_only_fields = ("id", "owner", "created_at", "updated_at")
        extra_kwargs = {"description": {"max_length": 200}}

    def validate_url(self, value: str) -> str:
        value = value.strip()
        try:
            check_url_target(value)
        except UnsafeURLError as exc:
            raise serializers.ValidationError(str(exc)) from None
        return value


class EndpointWithSecretSerializer(EndpointSerializer):
    """Response to create and rotate-secret: the only time the signing secret is sent."""

    secret = serializers.SerializerMethodField()

    class Meta(EndpointSerializer.Meta):
        fields = (*EndpointSerializer.Meta.fields, "secret")  # type: ignore[assignment]

    def get_secret(self, obj: Endpoint) -> str:
        secret: str = self.context["secret"]
        return secret


class AttemptSerializer(serializers.ModelSerializer[Attempt]):
    class Meta:
        model = Attempt
        fields = ("number", "started_at", "response_code", "duration_ms", "error", "response_excerpt")
        read_only_fields = fields


class DeliverySerializer(serializers.ModelSerializer[Delivery]):
    """One event sent (or being sent) to one endpoint, with every HTTP try."""

    endpoint = serializers.IntegerField(source="endpoint_id", read_only=True)
    status = serializers.ChoiceField(choices=DeliveryStatus.choices, read_only=True)
    attempt_log = AttemptSerializer(many=True, read_only=True)
    payload = serializers.JSONField(read_only=True, help_text="The exact JSON body that is POSTed.")

    class Meta:
        model = Delivery
        fields = (
            "id",
            "endpoint",
            "event_id",
            "event",
            "stream_id",
            "status",
            "attempts",
            "response_code",
            "duration_ms",
            "error",
            "delivered_at",
            "created_at",
            "payload",
            "attempt_log",
        )
        read_only_fields = fields


def secret_context(base: dict[str, Any], secret: str) -> dict[str, Any]:
    return {**base, "secret": secret}
