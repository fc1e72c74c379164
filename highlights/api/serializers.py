from rest_framework import serializers

from highlights.models import Suggestion


class ReasonsSerializer(serializers.Serializer):
    chat = serializers.CharField(help_text="The chat in the peak segment against the usual rate, in plain words.")
    loudness = serializers.CharField(help_text="The peak's EBU R128 momentary loudness against the usual.")
    joins = serializers.CharField(help_text="Viewers who joined in the peak segment against the usual.")


class SuggestionSerializer(serializers.ModelSerializer):
    reasons = ReasonsSerializer()
    start = serializers.DateTimeField(help_text="Program date-time where the moment starts (a clip's `start`).")
    end = serializers.DateTimeField(help_text="Program date-time where it ends (a clip's `end`).")
    session = serializers.IntegerField(source="session_id", help_text="The broadcast (a clip's `session`).")
    stream = serializers.IntegerField(source="stream_id")

    class Meta:
        model = Suggestion
        fields = ("id", "stream", "session", "start", "end", "peak_at", "score", "reasons", "status", "final")
        read_only_fields = fields


class StatusQuerySerializer(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=["offered", "clipped", "dismissed", "all"], required=False, default="offered"
    )
