from django.contrib import admin

from simulcast.models import Target


@admin.register(Target)
class TargetAdmin(admin.ModelAdmin[Target]):
    list_display = ("name", "stream", "url", "key_hint", "enabled", "last_status", "last_status_at")
    list_filter = ("enabled", "last_status")
    search_fields = ("name", "url", "stream__title", "stream__owner__username")
    raw_id_fields = ("stream",)
    # The encrypted key is never shown; the owner re-enters a key to change it.
    readonly_fields = ("key_hint", "last_status", "last_reason", "last_attempt", "last_status_at", "last_session_id")
    exclude = ("key_encrypted",)
