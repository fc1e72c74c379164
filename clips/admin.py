from django.contrib import admin

from clips.models import Clip


@admin.register(Clip)
class ClipAdmin(admin.ModelAdmin[Clip]):
    list_display = ("title", "slug", "stream", "owner", "status", "duration_s", "created_at")
    list_filter = ("status", "trim")
    search_fields = ("title", "slug", "stream__title", "owner__username")
    raw_id_fields = ("stream", "session", "owner")
    readonly_fields = ("slug", "video_key", "start", "end", "duration_s", "frames", "size_bytes", "status", "progress")
