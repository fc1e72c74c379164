from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from accounts.models import User
from analytics.history_admin import HistoryAdminMixin


@admin.register(User)
class UserAdmin(HistoryAdminMixin, BaseUserAdmin):
    list_display = ("username", "email", "display_name", "is_staff", "is_active", "created_at")
    list_filter = ("is_staff", "is_superuser", "is_active", "created_at")
    search_fields = ("username", "email", "display_name")
    ordering = ("-created_at",)
    readonly_fields = ("created_at", "updated_at", "last_login", "date_joined")
    fieldsets = (
        *(BaseUserAdmin.fieldsets or ()),
        ("Profile", {"fields": ("display_name", "avatar_url", "bio", "created_at", "updated_at")}),
    )
