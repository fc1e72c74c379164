from django.contrib import admin

from webhooks.models import Attempt, Delivery, Endpoint


@admin.register(Endpoint)
class EndpointAdmin(admin.ModelAdmin[Endpoint]):
    list_display = ("url", "owner", "is_active", "events", "created_at")
    list_filter = ("is_active", "created_at")
    search_fields = ("url", "description", "owner__username", "owner__email")
    list_select_related = ("owner",)
    raw_id_fields = ("owner",)
    # The secret is never shown, not even to staff; owners rotate it to get a new one.
    exclude = ("secret",)
    readonly_fields = ("created_at", "updated_at")


class AttemptInline(admin.TabularInline[Attempt, Delivery]):
    model = Attempt
    extra = 0
    fields = ("number", "started_at", "response_code", "duration_ms", "error", "response_excerpt")
    readonly_fields = fields
    can_delete = False


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin[Delivery]):
    list_display = ("event", "endpoint", "status", "attempts", "response_code", "duration_ms", "created_at")
    list_filter = ("status", "event", "created_at")
    search_fields = ("event_id", "endpoint__url", "endpoint__owner__username")
    list_select_related = ("endpoint",)
    raw_id_fields = ("endpoint",)
    readonly_fields = (
        "event_id",
        "event",
        "stream_id",
        "payload",
        "status",
        "attempts",
        "response_code",
        "duration_ms",
        "error",
        "delivered_at",
        "created_at",
        "updated_at",
    )
    inlines = (AttemptInline,)
