"""Admin for chat: messages (search, see deletions), moderators, bans, the moderation log
(read-only: it is the record of what moderators did)."""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from chat.models import Ban, ChatSettings, Message, ModerationAction, Moderator


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin[Message]):
    list_display = ("id", "stream", "user", "text", "created_at", "deleted_at")
    list_filter = (("deleted_at", admin.EmptyFieldListFilter),)
    search_fields = ("text", "user__username", "stream__title")
    raw_id_fields = ("stream", "user", "deleted_by")
    date_hierarchy = "created_at"
    list_select_related = ("stream", "user")


@admin.register(Moderator)
class ModeratorAdmin(admin.ModelAdmin[Moderator]):
    list_display = ("stream", "user", "appointed_by", "created_at")
    search_fields = ("user__username", "stream__title")
    raw_id_fields = ("stream", "user", "appointed_by")


@admin.register(Ban)
class BanAdmin(admin.ModelAdmin[Ban]):
    list_display = ("stream", "user", "expires_at", "reason", "created_by", "created_at")
    search_fields = ("user__username", "stream__title", "reason")
    raw_id_fields = ("stream", "user", "created_by")


@admin.register(ChatSettings)
class ChatSettingsAdmin(admin.ModelAdmin[ChatSettings]):
    list_display = ("stream", "slow_mode_s", "updated_at")
    raw_id_fields = ("stream",)


@admin.register(ModerationAction)
class ModerationActionAdmin(admin.ModelAdmin[ModerationAction]):
    list_display = ("created_at", "stream", "kind", "actor", "target_user", "message")
    list_filter = ("kind",)
    search_fields = ("actor__username", "target_user__username", "stream__title")
    list_select_related = ("stream", "actor", "target_user")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
