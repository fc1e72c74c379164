"""Wire formats of the chat API. Messages use the socket's ``chat.message`` shape."""

from typing import Any

from django.conf import settings
from rest_framework import serializers

from chat.models import Ban, ModerationAction, Moderator
from chat.services import MAX_SLOW_MODE_S, MAX_TIMEOUT_S


class MessageSerializer(serializers.Serializer[Any]):
    """Read: the ``chat.message`` object (id, user, user_id, display_name, badges, text, sent_at)."""

    id = serializers.IntegerField(read_only=True)
    user = serializers.CharField(read_only=True)
    user_id = serializers.IntegerField(read_only=True)
    display_name = serializers.CharField(read_only=True)
    badges = serializers.ListField(child=serializers.CharField(), read_only=True)
    text = serializers.CharField(max_length=settings.CHAT_MAX_LENGTH, trim_whitespace=False)
    sent_at = serializers.DateTimeField(read_only=True)


class ChatSettingsSerializer(serializers.Serializer[Any]):
    slow_mode_s = serializers.IntegerField(min_value=0, max_value=MAX_SLOW_MODE_S)


class BanRequestSerializer(serializers.Serializer[Any]):
    user = serializers.CharField(help_text="Username to ban or time out.")
    duration_s = serializers.IntegerField(
        min_value=1, max_value=MAX_TIMEOUT_S, required=False, allow_null=True, help_text="Empty: a ban until lifted."
    )
    reason = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class BanSerializer(serializers.ModelSerializer[Ban]):
    user = serializers.CharField(source="user.username")
    created_by = serializers.CharField(source="created_by.username", default=None)

    class Meta:
        model = Ban
        fields = ("user", "expires_at", "reason", "created_by", "created_at")


class UserRefSerializer(serializers.Serializer[Any]):
    user = serializers.CharField(help_text="Username.")


class ModeratorSerializer(serializers.ModelSerializer[Moderator]):
    user = serializers.CharField(source="user.username")

    class Meta:
        model = Moderator
        fields = ("user", "created_at")


class ModerationActionSerializer(serializers.ModelSerializer[ModerationAction]):
    actor = serializers.CharField(source="actor.username", default=None)
    target_user = serializers.CharField(source="target_user.username", default=None)

    class Meta:
        model = ModerationAction
        fields = ("id", "kind", "actor", "target_user", "message", "details", "created_at")
