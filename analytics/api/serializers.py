"""Validation of player QoE reports and of analytics query parameters.

Strict on purpose (the endpoint is public): numbers must be JSON numbers (no strings, no
booleans), unknown keys are refused, sizes are bounded, every kind has its own rules.
"""

from typing import Any

from rest_framework import serializers

from analytics.services import KINDS, PlaybackReport

MAX_EVENTS = 50
MAX_AGE_MS = 10 * 60 * 1000
_LIMITS = {"startup": 120.0, "heartbeat": 120.0, "rebuffer": 600.0, "latency": 3600.0}


class StrictFloatField(serializers.FloatField):
    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictCharField(serializers.CharField):
    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


def check_object(serializer: serializers.Serializer[Any], data: Any, strings: tuple[str, ...]) -> None:
    """Raise unless ``data`` is an object with only declared keys and string values where
    ``strings`` says so (CharField would otherwise turn numbers into strings)."""
    if not isinstance(data, dict):
        raise serializers.ValidationError({"non_field_errors": ["Expected a JSON object."]})
    unknown = sorted(str(key) for key in set(data) - set(serializer.fields))
    if unknown:
        raise serializers.ValidationError({key[:40]: ["Unknown field."] for key in unknown[:10]})
    wrong = [name for name in strings if name in data and data[name] is not None and not isinstance(data[name], str)]
    if wrong:
        raise serializers.ValidationError({name: ["Must be a string."] for name in wrong})


class PlaybackEventSerializer(serializers.Serializer[PlaybackReport]):
    kind = serializers.ChoiceField(choices=sorted(KINDS))
    age_ms = StrictIntegerField(min_value=0, max_value=MAX_AGE_MS, required=False, default=0)
    value = StrictFloatField(min_value=0, max_value=3600, required=False, allow_null=True, default=None)
    rendition = serializers.RegexField(r"^[A-Za-z0-9_.-]{1,32}$", required=False, allow_blank=True, default="")
    detail = StrictCharField(max_length=500, required=False, allow_blank=True, default="")

    def to_internal_value(self, data: Any) -> Any:
        check_object(self, data, ("kind", "rendition", "detail"))
        return super().to_internal_value(data)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        kind, value = attrs["kind"], attrs.get("value")
        if kind in _LIMITS:
            if value is None:
                raise serializers.ValidationError({"value": [f"Required for {kind} events (seconds)."]})
            if value > _LIMITS[kind]:
                raise serializers.ValidationError({"value": [f"At most {_LIMITS[kind]:g} s for {kind} events."]})
        if kind == "switch" and not attrs.get("rendition"):
            raise serializers.ValidationError({"rendition": ["Required for switch events."]})
        if kind == "error" and not attrs.get("detail"):
            raise serializers.ValidationError({"detail": ["Required for error events."]})
        return attrs

    def to_report(self, attrs: dict[str, Any]) -> PlaybackReport:
        return PlaybackReport(
            kind=attrs["kind"],
            age_s=attrs["age_ms"] / 1000,
            value=attrs.get("value"),
            rendition=attrs.get("rendition") or "",
            detail=attrs.get("detail") or "",
        )


class PlaybackBatchSerializer(serializers.Serializer[dict[str, Any]]):
    """``{"stream": 12, "session": 34?, "viewer": "<8-64 chars>", "events": [...]}``."""

    stream = StrictIntegerField(min_value=1, max_value=2**53)
    session = StrictIntegerField(min_value=1, max_value=2**53, required=False, allow_null=True, default=None)
    viewer = serializers.RegexField(
        r"^[A-Za-z0-9_-]{8,64}$", help_text="Random id the page makes per load (not a user id)."
    )
    events = PlaybackEventSerializer(many=True, allow_empty=False, max_length=MAX_EVENTS)  # type: ignore[call-arg]

    def to_internal_value(self, data: Any) -> Any:
        check_object(self, data, ("viewer",))
        if not isinstance(data.get("events", []), list):
            raise serializers.ValidationError({"events": ["Expected a list of events."]})
        return super().to_internal_value(data)

    def reports(self) -> list[PlaybackReport]:
        child = PlaybackEventSerializer()
        return [child.to_report(attrs) for attrs in self.validated_data["events"]]


class PlaybackAcceptedSerializer(serializers.Serializer[dict[str, Any]]):
    recorded = serializers.IntegerField()


class DaysQuerySerializer(serializers.Serializer[dict[str, Any]]):
    days = serializers.IntegerField(min_value=1, max_value=366, required=False, default=30)


class BucketQuerySerializer(serializers.Serializer[dict[str, Any]]):
    bucket = serializers.ChoiceField(choices=[10, 30, 60, 300, 900, 3600], required=False, default=60)
