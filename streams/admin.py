from django.contrib import admin

from analytics.history_admin import HistoryAdminMixin
from streams.models import QuotaOverride, Stream, StreamSession


class SessionInline(admin.TabularInline[StreamSession, Stream]):
    model = StreamSession
    extra = 0
    fields = ("status", "started_at", "ended_at", "duration_s", "connections", "is_replay")
    readonly_fields = fields
    can_delete = False
    show_change_link = True


@admin.register(Stream)
class StreamAdmin(HistoryAdminMixin, admin.ModelAdmin[Stream]):
    list_display = ("title", "owner", "status", "keep_recordings", "latency_mode", "last_live_at", "created_at")
    list_filter = ("status", "keep_recordings", "latency_mode", "created_at", "last_live_at")
    search_fields = ("title", "slug", "description", "owner__username", "owner__email")
    readonly_fields = (
        "key_hint",
        "key_rotated_at",
        "created_at",
        "updated_at",
        "last_live_at",
        "publish_problem",
        "publish_problem_at",
    )
    list_select_related = ("owner",)
    raw_id_fields = ("owner",)
    inlines = (SessionInline,)


@admin.register(StreamSession)
class StreamSessionAdmin(HistoryAdminMixin, admin.ModelAdmin[StreamSession]):
    list_display = ("stream", "status", "started_at", "ended_at", "duration_s", "connections", "is_replay")
    list_filter = ("status", "is_replay", "started_at")
    search_fields = ("stream__title", "stream__slug")
    list_select_related = ("stream",)
    raw_id_fields = ("stream",)


@admin.register(QuotaOverride)
class QuotaOverrideAdmin(HistoryAdminMixin, admin.ModelAdmin[QuotaOverride]):
    """Per-user exceptions to MAX_STREAMS_PER_USER / MAX_LIVE_PER_USER (empty: site default,
    0: no limit)."""

    list_display = ("user", "max_streams", "max_live", "note", "updated_at")
    search_fields = ("user__username", "user__email", "note")
    list_select_related = ("user",)
    raw_id_fields = ("user",)
